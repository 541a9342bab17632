"""fp32 ONNX export: the wrapped model (normalisation + decoding in-graph), dynamic batch.

Two graphs of the same function (`GRAPHS`): ``folded`` (the default) is `toolkit.folded`'s
rewrite, whose decoder tail upsamples after the layers that commute with upsampling (a little
over half the arithmetic); ``literal`` follows the network layer by layer, as PyTorch runs it.
Either way the file is only written after `onnx.checker` passes and ONNX Runtime agrees with the
literal PyTorch model on a few inputs; a model that disagrees is refused, never left on disk.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import CheckFailed, UserError
from toolkit.fsutil import atomic_path
from toolkit.spec import INPUT_NAMES, METADATA_PREFIX, OUTPUT_NAMES

from .metadata import export_metadata

OPSET = 18
MAX_BATCH = 256
FP32_TOLERANCE = 1e-4
GRAPHS = ("folded", "literal")


@dataclass
class OnnxCheck:
    max_abs_diff: float
    mean_abs_diff: float
    inputs: int


def probe_inputs(height: int, width: int, count: int = 3, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Inputs for the ORT-vs-torch check: smooth patterns, noise, and a batch of 2 (dynamic N)."""
    rng = np.random.default_rng(seed)
    h = np.arange(height, dtype=np.float32)[:, None]
    w = np.arange(width, dtype=np.float32)[None, :]
    smooth_bg = np.stack([(np.sin(0.1 * h + 0.2 * w + c) + 1) / 2 for c in range(3)])[None]
    smooth_fg = np.stack([(np.cos(0.05 * h * w / height + c) + 1) / 2 for c in range(3)])[None]
    feeds = [{"bg": smooth_bg.astype(np.float32), "fgbg": smooth_fg.astype(np.float32)}]
    for n in range(1, count):
        shape = (1 + n % 2, 3, height, width)
        feeds.append({k: rng.random(shape, dtype=np.float32) for k in INPUT_NAMES})
    return feeds


def check_graph(graph: str) -> str:
    if graph not in GRAPHS:
        raise UserError(f"--graph must be one of {', '.join(GRAPHS)}, got {graph!r}")
    return graph


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = OPSET, graph: str = "folded") -> tuple[Path, OnnxCheck]:
    """Export `checkpoint` to `out` (a `.onnx` path) as the `graph` of `GRAPHS`; returns the path
    and the check of ONNX Runtime against the literal PyTorch model."""

    from toolkit.checkpoint import build_model, load_checkpoint, spec_of
    from toolkit.folded import fold, gflop_per_pair

    check_graph(graph)
    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = load_checkpoint(checkpoint)
    spec = spec_of(ckpt)
    model = build_model(ckpt)  # in eval mode
    exported = fold(model) if graph == "folded" else model
    props = export_metadata(spec, checkpoint, ckpt, "fp32", out)
    props[f"{METADATA_PREFIX}graph"] = graph
    props[f"{METADATA_PREFIX}gflop_per_pair"] = f"{gflop_per_pair(exported.net, spec.height, spec.width):.4f}"
    with tempfile.TemporaryDirectory(prefix="toolkit-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        _torch_export(exported, raw, spec.height, spec.width, opset)
        proto = _finish(raw, props)
        final = Path(tmp) / "final.onnx"
        final.write_bytes(proto.SerializeToString())
        check = compare_with_torch(final, model)
        if not check.max_abs_diff <= FP32_TOLERANCE:
            raise CheckFailed(
                f"{out}: not written: ONNX Runtime disagrees with PyTorch "
                f"(max abs diff {check.max_abs_diff:.2e} > {FP32_TOLERANCE:.0e})"
            )
        with atomic_path(out) as dst:
            dst.write_bytes(final.read_bytes())
    return out, check


def _torch_export(model: Any, path: Path, height: int, width: int, opset: int) -> None:
    import torch

    # The exporter logs a warning per missing optional library (torchvision): not ours to show.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = (torch.rand(2, 3, height, width), torch.rand(2, 3, height, width))
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.eval(),
                example,
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes={"bg": {0: batch}, "fgbg": {0: batch}},
                verbose=False,
            )
        except Exception as e:  # the exporter raises many types; report one line
            raise UserError(f"ONNX export failed: {str(e).strip().splitlines()[0][:300]}") from e


def _finish(path: Path, props: dict[str, str]) -> Any:
    """Attach metadata (merging, since set_model_props replaces), infer shapes, run the checker."""
    import onnx

    proto = onnx.load(str(path))
    merged = {p.key: p.value for p in proto.metadata_props} | props
    onnx.helper.set_model_props(proto, merged)
    proto.doc_string = "EVA4 mask + depth network; inputs bg/fgbg RGB in [0,1]; outputs mask/depth in [0,1]"
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def compare_with_torch(onnx_path: Path, model: Any) -> OnnxCheck:
    """Max/mean |ORT - torch| over the probe inputs (both outputs)."""
    import torch

    from toolkit.runtime.onnx_runner import OnnxRunner

    spec = model.spec
    diffs: list[np.ndarray] = []
    with OnnxRunner(onnx_path) as runner:
        feeds = probe_inputs(spec.height, spec.width)
        for feed in feeds:
            got = runner.infer(feed)
            with torch.inference_mode():
                ref = model(*(torch.from_numpy(feed[n]) for n in INPUT_NAMES))
            for name, r in zip(OUTPUT_NAMES, ref):
                diffs.append(np.abs(got[name] - r.numpy()).ravel())
    d = np.concatenate(diffs)
    return OnnxCheck(float(d.max()), float(d.mean()), len(feeds))


# -- graph regions, found by structure (no node names): used by the fp16 and int8 converters ---
def _walk(starts: list[str], next_nodes: Any, next_names: Any, stop_ops: set[str]) -> tuple[list[str], list[str]]:
    """A walk over tensor names: `next_nodes(name)` gives the nodes a tensor leads to,
    `next_names(node)` the tensors the walk goes on from. (nodes passed, `stop_ops` nodes met)."""
    inside: list[str] = []
    stops: list[str] = []
    seen: set[str] = set()
    frontier = list(starts)
    while frontier:
        for node in next_nodes(frontier.pop()):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in stop_ops:
                stops.append(node.name)
            else:
                inside.append(node.name)
                frontier.extend(next_names(node))
    return inside, stops


def nodes_from_inputs(graph: Any, stop_ops: set[str]) -> tuple[list[str], list[str]]:
    """Walk forward from the graph inputs: (names of the nodes reached before any `stop_ops` node,
    names of the `stop_ops` nodes where the walk stopped). E.g. stop at Conv: (the input
    normalisation, the first convolutions)."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name for i in graph.initializer}
    starts = [i.name for i in graph.input if i.name not in inits]
    return _walk(starts, lambda name: consumers.get(name, []), lambda node: node.output, stop_ops)


def nodes_to_outputs(graph: Any, stop_ops: set[str]) -> tuple[list[str], list[str]]:
    """Walk backward from the graph outputs: (names of the nodes reached before any `stop_ops`
    node, names of the `stop_ops` nodes where the walk stopped). E.g. stop at Conv: (the output
    decoding, the final convolutions); stop at Resize: (each output's full-resolution head)."""
    producer = {out: node for node in graph.node for out in node.output}
    starts = [o.name for o in graph.output]
    return _walk(starts, lambda name: [producer[name]] if name in producer else [], lambda node: node.input, stop_ops)


def ensure_node_names(graph: Any) -> None:
    """Give every unnamed (or duplicate-named) node a unique name: converters pick nodes by name."""
    used: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in used:
            base = f"{node.op_type}_{i}"
            name, k = base, 0
            while name in used:
                k += 1
                name = f"{base}_{k}"
            node.name = name
        used.add(node.name)


def batches(pairs: dict[str, np.ndarray], size: int = 8) -> list[dict[str, np.ndarray]]:
    """`{"bg", "fgbg"}` arrays `[N, 3, H, W]` cut into feeds of at most `size` pairs."""
    n = int(pairs[INPUT_NAMES[0]].shape[0])
    return [{k: np.ascontiguousarray(pairs[k][i : i + size], dtype=np.float32) for k in INPUT_NAMES} for i in range(0, n, size)]


def compare_with_onnx(reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]], thresholds: Any = None) -> Any:
    """Parity of `candidate` against the ONNX `reference` in ONNX Runtime (no torch): a
    `toolkit.compare.ParityResult`, judged by the thresholds of the candidate's recorded precision
    unless `thresholds` (a `Thresholds`) overrides them."""
    from dataclasses import replace

    from toolkit.compare import DEFAULT_THRESHOLDS, compare_runners
    from toolkit.runtime.onnx_runner import OnnxRunner

    candidate_runner = OnnxRunner(candidate)
    result = compare_runners(OnnxRunner(reference), [candidate_runner], feeds).results[0]
    if thresholds is not None:
        result = replace(result, thresholds=thresholds).judge()
    elif result.precision not in DEFAULT_THRESHOLDS:
        raise UserError(f"{candidate}: unknown precision {result.precision!r} in its metadata")
    return result


def parity_figures(result: Any) -> str:
    """'mask IoU 0.9970, depth RMSE 0.0002, max abs 2.5e-03 on 16 pairs' (+ NaN/inf when any)."""
    bad = sum(result.nonfinite.values())
    text = (
        f"mask IoU {result.mask_iou:.4f}, depth RMSE {result.depth_rmse:.4f}, "
        f"max abs {max(result.max_abs.values()):.1e} on {result.pairs} pairs"
    )
    return text + (f", {bad} NaN/inf values" if bad else "")
