"""The fixed-camera pair beside an export: `X.bg.onnx` (`bg` -> `bg_features`) and `X.frame.onnx`
(`bg_features`, `fgbg` -> `mask`, `depth`), cut as `toolkit.split` says.

Both files record what links them: the source checkpoint's SHA-256, the graph, the input size,
the feature shape, and a pair id (a hash of those) that a runner compares before it uses them
together. They are written only after ONNX Runtime, running the background half once and the
frame half on each probe pair, agrees with the literal PyTorch model at the fp32 tolerance.
Not yet wired into the formats table: `export_split` is the step the fixed-camera runner and
`toolkit export` build on.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolkit.errors import CheckFailed
from toolkit.fsutil import atomic_path
from toolkit.spec import INPUT_NAMES, METADATA_PREFIX, OUTPUT_NAMES

from .metadata import export_metadata
from .onnx import FP32_TOLERANCE, OPSET, _finish, check_graph, probe_inputs, torch_export

if TYPE_CHECKING:
    import torch

FEATURES = "bg_features"


def split_paths(model: str | Path) -> tuple[Path, Path]:
    """`X.onnx` -> (`X.bg.onnx`, `X.frame.onnx`)."""
    model = Path(model)
    stem = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{stem}.bg.onnx"), model.with_name(f"{stem}.frame.onnx")


def export_split(checkpoint: str | Path, model: str | Path, *, graph: str = "folded", size: tuple[int, int] | None = None,
                 opset: int = OPSET) -> tuple[Path, Path, float]:
    """Write the pair for the export `model` of `checkpoint`; returns their paths and the max
    |ONNX Runtime - PyTorch| of the check."""
    import torch

    from toolkit.checkpoint import build_model, load_checkpoint, spec_of
    from toolkit.folded import fold
    from toolkit.split import FEATURE_CHANNELS, split

    check_graph(graph)
    checkpoint, model = Path(checkpoint), Path(model)
    ckpt = load_checkpoint(checkpoint)
    spec = spec_of(ckpt).with_size(*size) if size else spec_of(ckpt)
    whole = build_model(ckpt)
    bg_half, frame_half = split(fold(whole) if graph == "folded" else whole)
    h, w = spec.size
    props = export_metadata(spec, checkpoint, ckpt, "fp32", model) | {f"{METADATA_PREFIX}graph": graph}
    shape = f"{FEATURE_CHANNELS}x{h // 2}x{w // 2}"
    pair_id = hashlib.sha256(f"{props[f'{METADATA_PREFIX}checkpoint_sha256']}|{graph}|{h}x{w}|{shape}".encode()).hexdigest()[:16]
    link = {f"{METADATA_PREFIX}bg_features": shape, f"{METADATA_PREFIX}split_pair": pair_id, f"{METADATA_PREFIX}split_of": model.name}
    bg_out, frame_out = split_paths(model)
    with tempfile.TemporaryDirectory(prefix="toolkit-split-") as tmp:
        raw_bg, raw_frame = Path(tmp) / "bg.onnx", Path(tmp) / "frame.onnx"
        example_bg = torch.rand(2, 3, h, w)
        torch_export(bg_half, raw_bg, {"bg": example_bg}, [FEATURES], opset)
        with torch.inference_mode():
            features = bg_half(example_bg)
        torch_export(frame_half, raw_frame, {FEATURES: features, "fgbg": torch.rand(2, 3, h, w)}, list(OUTPUT_NAMES), opset)
        protos = {
            "bg": _finish(raw_bg, props | link | {f"{METADATA_PREFIX}split": "bg"}, "EVA4 background half: bg -> bg_features"),
            "frame": _finish(raw_frame, props | link | {f"{METADATA_PREFIX}split": "frame"},
                             "EVA4 frame half: bg_features, fgbg -> mask, depth"),
        }
        worst = _check(protos["bg"].SerializeToString(), protos["frame"].SerializeToString(), whole, h, w)
        if not worst <= FP32_TOLERANCE:
            raise CheckFailed(f"{bg_out.name}, {frame_out.name}: not written: the split pair disagrees with PyTorch "
                              f"(max abs diff {worst:.2e} > {FP32_TOLERANCE:.0e})")
        for out, proto in ((bg_out, protos["bg"]), (frame_out, protos["frame"])):
            with atomic_path(out) as dst:
                dst.write_bytes(proto.SerializeToString())
    return bg_out, frame_out, worst


def _check(bg_bytes: bytes, frame_bytes: bytes, whole: torch.nn.Module, h: int, w: int) -> float:
    """Max |ORT pair - literal PyTorch model| over the probe pairs, the background half run once per pair."""
    import onnxruntime as ort
    import torch

    bg_session = ort.InferenceSession(bg_bytes, providers=["CPUExecutionProvider"])
    frame_session = ort.InferenceSession(frame_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    for feed in probe_inputs(h, w):
        features = bg_session.run([FEATURES], {"bg": feed["bg"]})[0]
        got = frame_session.run(list(OUTPUT_NAMES), {FEATURES: features, "fgbg": feed["fgbg"]})
        with torch.inference_mode():
            want = whole(*(torch.from_numpy(feed[n]) for n in INPUT_NAMES))
        worst = max(worst, *(float(np.abs(g - t.numpy()).max()) for g, t in zip(got, want)))
    return worst
