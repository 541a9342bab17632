"""fp32 ONNX export: the wrapped model (normalisation + decoding in-graph), dynamic batch.

Two graphs of the same function (`GRAPHS`): ``folded`` (the default) is `toolkit.net.folded`'s
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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from toolkit.core.errors import CheckFailed, UserError
from toolkit.core.fsutil import atomic_path
from toolkit.core.sizes import DYNAMIC_SIZE_KEY, MAX_SIZE
from toolkit.core.spec import INPUT_NAMES, MAX_BATCH, METADATA_PREFIX, OUTPUT_NAMES
from toolkit.verify.compare import DEFAULT_THRESHOLDS, ParityResult, check_model

from .metadata import export_metadata

if TYPE_CHECKING:
    import torch

OPSET = 18
FP32_TOLERANCE = DEFAULT_THRESHOLDS["fp32"].max_abs
GRAPHS = ("folded", "literal")


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


def export_onnx(
    checkpoint: str | Path, out: str | Path, *, opset: int = OPSET, graph: str = "folded", size: tuple[int, int] | None = None,
    dynamic: bool = False,
) -> tuple[Path, ParityResult]:
    """Export `checkpoint` to `out` (a `.onnx` path) as the `graph` of `GRAPHS`, taking `size`
    (H, W; default the training size); returns the path and the check of ONNX Runtime against
    the literal PyTorch model at that size (a `ParityResult`). `dynamic`: H and W symbolic
    (any multiples of 4; `size` is the nominal one), checked at a second size too."""

    import torch

    from toolkit.net.checkpoint import build_model, load_checkpoint, spec_of
    from toolkit.net.folded import fold, gflop_per_pair

    check_graph(graph)
    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = load_checkpoint(checkpoint)
    trained = spec_of(ckpt)
    spec = trained.with_size(*size) if size is not None else trained
    model = build_model(ckpt)  # in eval mode; fully convolutional, so it runs at `spec.size`
    exported = fold(model) if graph == "folded" else model
    props = export_metadata(spec, checkpoint, ckpt, "fp32", out)
    props[f"{METADATA_PREFIX}graph"] = graph
    props[f"{METADATA_PREFIX}training_size"] = f"{trained.height}x{trained.width}"
    props[f"{METADATA_PREFIX}gflop_per_pair"] = f"{gflop_per_pair(exported.net, spec.height, spec.width):.4f}"
    if dynamic:
        props[DYNAMIC_SIZE_KEY] = "1"
    with tempfile.TemporaryDirectory(prefix="toolkit-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        example = {"bg": torch.rand(2, 3, *spec.size), "fgbg": torch.rand(2, 3, *spec.size)}
        torch_export(exported, raw, example, list(OUTPUT_NAMES), opset, spatial=dict.fromkeys(INPUT_NAMES, 4) if dynamic else None)
        proto = _finish(raw, props)
        final = Path(tmp) / "final.onnx"
        final.write_bytes(proto.SerializeToString())
        checks = [compare_with_torch(final, checkpoint, at) for at in check_sizes(spec.size, dynamic)]
        for at, result in zip(check_sizes(spec.size, dynamic), checks):
            if not result:
                raise CheckFailed(f"{out}: not written: ONNX Runtime disagrees with PyTorch at {at[0]}x{at[1]}: "
                                  f"{'; '.join(result.failures)} ({result.figures()})")
        check = checks[0]  # at the nominal size: the one reported
        from toolkit.runtime import open_runner
        from toolkit.verify.compare import open_at
        from toolkit.verify.selftest import GOLDEN_KEY, make_golden, with_self_test

        golden = make_golden(open_at(checkpoint, spec.size), spec.size)  # PyTorch's outputs: the self-test's reference
        onnx.helper.set_model_props(proto, {p.key: p.value for p in proto.metadata_props} | {GOLDEN_KEY: golden})
        final.write_bytes(proto.SerializeToString())
        if not with_self_test(check, open_runner(final)):  # what serve, stream and doctor will run on it
            raise CheckFailed(f"{out}: not written: {'; '.join(check.failures)}")
        with atomic_path(out) as dst:
            dst.write_bytes(proto.SerializeToString())
    return out, check


def check_sizes(size: tuple[int, int], dynamic: bool) -> list[tuple[int, int]]:
    """The sizes an export is checked at: its own, and for a dynamic model a second, wider one
    (another aspect: a graph that baked in a size would fail there)."""
    return [size, (size[0] + 8, size[1] + 24)] if dynamic else [size]


def torch_export(model: torch.nn.Module, path: Path, example: dict[str, torch.Tensor], outputs: list[str], opset: int = OPSET,
                 *, spatial: dict[str, int] | None = None) -> None:
    """`model` to ONNX at `path` with the inputs named (and ordered) as `example`'s keys, every
    one with a dynamic batch axis; one line when the exporter fails. `spatial`: inputs whose H
    and W are symbolic too, each with its scale (4: an image, any multiple of 4; 2: features at
    half the image's size, the same symbols)."""
    import torch

    # The exporter logs a warning per missing optional library (torchvision): not ours to show.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    h4, w4 = torch.export.Dim("h4", min=1, max=MAX_SIZE // 4), torch.export.Dim("w4", min=1, max=MAX_SIZE // 4)  # H = 4 h4
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.eval(),
                tuple(example.values()),
                str(path),
                input_names=list(example),
                output_names=outputs,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                dynamic_shapes={name: {0: batch} | ({2: spatial[name] * h4, 3: spatial[name] * w4} if name in (spatial or {}) else {})
                                for name in example},
                verbose=False,
            )
        except Exception as e:  # the exporter raises many types; report one line
            raise UserError(f"ONNX export failed: {str(e).strip().splitlines()[0][:300]}") from e


# Node metadata torch's exporter writes that names the exporting machine's files (stack traces
# with source paths) or dumps its FX graph: not for a file shipped to a device. The module
# scopes (`pkg.torch.onnx.name_scopes`) stay: `parity --layers` names tensors by them.
BUILD_METADATA_KEYS = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def strip_build_paths(proto: onnx.ModelProto) -> None:
    """Remove `BUILD_METADATA_KEYS` from every node's metadata."""
    for node in proto.graph.node:
        kept = [p for p in node.metadata_props if p.key not in BUILD_METADATA_KEYS]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)


def _finish(path: Path, props: dict[str, str], doc: str = "") -> onnx.ModelProto:
    """Attach metadata (merging, since set_model_props replaces), infer shapes, run the checker."""
    proto = onnx.load(str(path))
    strip_build_paths(proto)
    merged = {p.key: p.value for p in proto.metadata_props} | props
    onnx.helper.set_model_props(proto, merged)
    proto.doc_string = doc or "EVA4 mask + depth network; inputs bg/fgbg RGB in [0,1]; outputs mask/depth in [0,1]"
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def compare_with_torch(onnx_path: Path, checkpoint: Path, size: tuple[int, int] | None = None) -> ParityResult:
    """ONNX Runtime on `onnx_path` beside the literal PyTorch model of `checkpoint` on the probe
    inputs at `size` (default the training size), judged at the fp32 thresholds (`toolkit.verify.compare`,
    as `toolkit parity` judges it)."""
    from toolkit.net.checkpoint import read_checkpoint_header

    h, w = size or read_checkpoint_header(checkpoint).spec.size
    return check_model(checkpoint, onnx_path, probe_inputs(h, w), size=(h, w))
