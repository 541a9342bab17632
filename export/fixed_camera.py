"""The fixed camera's halves beside every ONNX export: `X.bg.onnx` (`bg` -> `bg_features`) and
`X.frame.onnx` (`bg_features`, `fgbg` -> `mask`, `depth`), cut as `toolkit.net.cut` says.

The fp32 halves are exported from the checkpoint beside the fp32 model (`export_halves`); the
fp16 and int8 halves are converted from the fp32 halves as their whole models are from the fp32
model (`derive_halves`, with `fp16_halves` here and `export.int8.halves` for int8). Each half
records the whole model's metadata (the source checkpoint's SHA-256, precision, graph, size:
what `toolkit.runtime.fixed` compares), its part and tensors, the feature shape, and an id shared
by the two halves (`toolkit.split_pair`, a file-format key). Halves are written only after they
pass the check their whole model passed, run as one model (`HalvesRunner`): the fp32 halves
against the literal PyTorch model at the fp32 thresholds, the fp16/int8 halves against the fp32
model at theirs.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from toolkit.core.errors import CheckFailed
from toolkit.core.fsutil import atomic_path, sha256_file
from toolkit.core.sizes import is_dynamic
from toolkit.core.spec import FEATURES_NAME, INTERFACES, METADATA_PREFIX, OUTPUT_NAMES
from toolkit.runtime.fixed import PARTS, WHOLE_KEY, HalvesRunner, half_paths, has_halves
from toolkit.runtime.onnx_info import read_onnx_info
from toolkit.verify.compare import ParityResult, Thresholds, check_model
from toolkit.verify.selftest import with_self_test

from .metadata import set_metadata
from .onnx import OPSET, _finish, check_sizes, probe_inputs, torch_export

# Metadata of the whole model a half does not share (it describes the whole graph).
WHOLE_ONLY_KEYS = tuple(f"{METADATA_PREFIX}{k}" for k in ("gflop_per_pair", "fp16_check", "fp16_kept_fp32", "int8_gate", "int8_float_nodes",
                                                       "golden"))

# (a half's proto, its part) -> the converted proto
Converter = Callable[[onnx.ModelProto, str], onnx.ModelProto]


def half_metadata(whole: dict[str, str], part: str, pair_id: str, layout: str = "NCHW") -> dict[str, str]:
    """A half's metadata: the whole model's (what links them), its part and tensors, the
    features' shape and layout, the id the two halves share."""
    size = tuple(int(v) for v in whole[f"{METADATA_PREFIX}input_size"].split("x"))
    io = INTERFACES[part]
    props = {k: v for k, v in whole.items() if k not in WHOLE_ONLY_KEYS}
    shape = replace(io, features_layout=layout).shape(FEATURES_NAME, size)  # type: ignore[arg-type]
    return props | {
        f"{METADATA_PREFIX}split": part,
        f"{METADATA_PREFIX}inputs": ",".join(io.inputs),
        f"{METADATA_PREFIX}outputs": ",".join(io.outputs),
        f"{METADATA_PREFIX}bg_features": "x".join(map(str, shape)),
        f"{METADATA_PREFIX}bg_features_layout": layout,
        f"{METADATA_PREFIX}split_pair": pair_id,
    }


def _linked(model: Path, whole: dict[str, str]) -> tuple[dict[str, str], str]:
    """The whole model's metadata with the SHA-256 of its file (what its halves record), and the id the two halves share."""
    digest = sha256_file(model)
    return whole | {WHOLE_KEY: digest}, hashlib.sha256(f"{digest}|{model.name}".encode()).hexdigest()[:16]


def remove_stale_halves(model: Path) -> list[str]:
    """Remove halves left beside `model` by an earlier run when this run wrote `model` without
    halves (they would not match it); a note per file removed."""
    notes = []
    for half in half_paths(model):
        for path in (half, half.with_name(half.name + ".json")):
            if path.is_file():
                path.unlink()
                notes.append(f"removed {path.name}, left by an earlier export (it does not belong to this {model.name})")
    return notes


def _write_checked(model: Path, protos: dict[str, onnx.ModelProto], reference: Path,
                   feeds: Iterable[dict[str, np.ndarray]], thresholds: Thresholds | None, *, force: bool = False,
                   size: tuple[int, int] | None = None, more_sizes: Iterable[tuple[int, int]] = ()) -> tuple[Path, Path, ParityResult]:
    """Run the candidate halves as one model beside `reference`; write them beside `model` when
    the check passes (or `force`), else CheckFailed with the figures and nothing written.
    `more_sizes`: dynamic-size halves are checked on probe pairs at these sizes too."""
    bg_out, frame_out = half_paths(model)
    with tempfile.TemporaryDirectory(prefix="toolkit-split-") as tmp:
        temps = (Path(tmp) / bg_out.name, Path(tmp) / frame_out.name)
        for path, part in zip(temps, PARTS):
            path.write_bytes(protos[part].SerializeToString())
        result = check_model(reference, HalvesRunner(model, halves=temps), feeds, thresholds, size=size)
        for at in more_sizes:
            extra = check_model(reference, HalvesRunner(model, halves=temps), probe_inputs(*at), thresholds, size=at)
            result = result if extra else extra
        result = with_self_test(result, HalvesRunner(model, halves=temps))  # as doctor and stream will run them
        if not result and not force:
            raise CheckFailed(f"{bg_out.name}, {frame_out.name}: not written: the halves fail their check: "
                              f"{'; '.join(result.failures)} (vs {reference.name}: {result.figures()})")
        for src, out in zip(temps, (bg_out, frame_out)):
            with atomic_path(out) as dst:
                dst.write_bytes(src.read_bytes())
    return bg_out, frame_out, result


def export_halves(checkpoint: str | Path, model: str | Path, *, opset: int = OPSET) -> tuple[Path, Path, ParityResult]:
    """Write the fp32 halves beside `model`, the fp32 export of `checkpoint` (already written: its
    graph, size and metadata are the halves'); returns the two paths and the check against PyTorch."""
    import torch

    from toolkit.net.checkpoint import build_model, load_checkpoint
    from toolkit.net.cut import split
    from toolkit.net.folded import fold

    checkpoint, model = Path(checkpoint), Path(model)
    info = read_onnx_info(model, require_spec=True)
    whole_meta, pair_id = _linked(model, info.metadata)
    h, w = info.spec.size
    net = build_model(load_checkpoint(checkpoint))
    bg_half, frame_half = split(fold(net) if whole_meta.get(f"{METADATA_PREFIX}graph") == "folded" else net)
    protos = {}
    with tempfile.TemporaryDirectory(prefix="toolkit-split-") as tmp:
        example_bg = torch.rand(2, 3, h, w)
        with torch.inference_mode():
            features = bg_half(example_bg)
        dynamic = is_dynamic(whole_meta)
        examples = {"bg": (bg_half, {"bg": example_bg}, [FEATURES_NAME], {"bg": 4}),
                    "frame": (frame_half, {FEATURES_NAME: features, "fgbg": torch.rand(2, 3, h, w)}, list(OUTPUT_NAMES),
                              {FEATURES_NAME: 2, "fgbg": 4})}
        for part, (module, example, outputs, scales) in examples.items():
            raw = Path(tmp) / f"{part}.onnx"
            torch_export(module, raw, example, outputs, opset, spatial=scales if dynamic else None)
            doc = f"EVA4 {part} half of a fixed-camera model: {', '.join(example)} -> {', '.join(outputs)}"
            protos[part] = _finish(raw, half_metadata(whole_meta, part, pair_id), doc)
    return _write_checked(model, protos, checkpoint, probe_inputs(h, w), None, size=(h, w),
                          more_sizes=check_sizes((h, w), dynamic)[1:])


def derive_halves(source: Path, out: Path, convert: Converter, feeds: Iterable[dict[str, np.ndarray]],
                thresholds: Thresholds | None = None, *, force: bool = False,
                layout: str = "NCHW") -> tuple[Path, Path, ParityResult] | None:
    """The halves of `out` (an fp16/int8 model converted from the fp32 `source`, already written)
    converted from `source`'s halves with `convert`, checked against `source` on `feeds` as `out`
    was; None when `source` has no halves beside it."""
    if not has_halves(source):
        return None
    halves = half_paths(source)
    info = read_onnx_info(out)
    whole_meta, pair_id = _linked(out, info.metadata)
    protos = {}
    for path, part in zip(halves, PARTS):
        protos[part] = set_metadata(convert(onnx.load(str(path)), part), half_metadata(whole_meta, part, pair_id, layout))
    more = check_sizes(info.spec.size, is_dynamic(info.metadata))[1:]  # dynamic halves: at a second size too
    return _write_checked(out, protos, source, feeds, thresholds, force=force, more_sizes=more)


def fp16_halves(source: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[Path, Path, ParityResult] | None:
    """The fp16 halves of the fp16 model `out`, from the fp32 `source`'s halves (see `derive_halves`)."""
    from .fp16 import convert_fp16_model

    return derive_halves(source, out, lambda proto, part: convert_fp16_model(proto)[0], feeds)
