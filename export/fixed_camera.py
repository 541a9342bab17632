"""The fixed-camera pair beside every ONNX export: `X.bg.onnx` (`bg` -> `bg_features`) and
`X.frame.onnx` (`bg_features`, `fgbg` -> `mask`, `depth`), cut as `toolkit.net.cut` says.

The fp32 pair is exported from the checkpoint beside the fp32 model (`export_split`); the fp16
and int8 pairs are converted from the fp32 pair as their whole models are from the fp32 model
(`derive_pair`: the same fp16 converter; int8 calibrated on the same pairs, the frame half on the
fp32 background half's features of them). Each half records the whole model's metadata (the
source checkpoint's SHA-256, precision, graph, size: what `toolkit.runtime.fixed` compares),
its part and tensors, the feature shape, and a pair id shared by the two halves. A pair is
written only after it passes the check its whole model passed, run as one model
(`SplitPairRunner`): the fp32 pair against the literal PyTorch model at the fp32 thresholds, the
fp16/int8 pairs against the fp32 model at theirs.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from toolkit.core.errors import CheckFailed
from toolkit.core.fsutil import atomic_path, sha256_file
from toolkit.core.sizes import is_dynamic
from toolkit.core.spec import FEATURES_NAME, INTERFACES, METADATA_PREFIX, OUTPUT_NAMES
from toolkit.runtime.fixed import PARTS, WHOLE_KEY, SplitPairRunner, has_pair, split_paths
from toolkit.runtime.onnx_info import read_onnx_info
from toolkit.verify.compare import ParityResult, Thresholds, check_model

from .metadata import set_metadata
from .onnx import OPSET, _finish, check_sizes, probe_inputs, torch_export

if TYPE_CHECKING:
    from .int8 import CalibrationPairs
    from .int8_search import SearchResult

# Metadata of the whole model a half does not share (it describes the whole graph).
WHOLE_ONLY_KEYS = tuple(f"{METADATA_PREFIX}{k}" for k in ("gflop_per_pair", "fp16_check", "fp16_kept_fp32", "int8_gate", "int8_float_nodes",
                                                       "golden"))

# (a half's proto, its part) -> the converted proto
Converter = Callable[[onnx.ModelProto, str], onnx.ModelProto]


def half_metadata(whole: dict[str, str], part: str, pair_id: str, layout: str = "NCHW") -> dict[str, str]:
    """A half's metadata: the whole model's (what links them), its part and tensors, the
    features' shape and layout, the pair id."""
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
    """The whole model's metadata with the SHA-256 of its file (what its halves record), and the pair id."""
    digest = sha256_file(model)
    return whole | {WHOLE_KEY: digest}, hashlib.sha256(f"{digest}|{model.name}".encode()).hexdigest()[:16]


def remove_stale_pair(model: Path) -> list[str]:
    """Remove halves left beside `model` by an earlier run when this run wrote `model` without a
    pair (they would not match it); a note per file removed."""
    notes = []
    for half in split_paths(model):
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
    `more_sizes`: a dynamic-size pair is checked on probe pairs at these sizes too."""
    bg_out, frame_out = split_paths(model)
    with tempfile.TemporaryDirectory(prefix="toolkit-split-") as tmp:
        temps = (Path(tmp) / bg_out.name, Path(tmp) / frame_out.name)
        for path, part in zip(temps, PARTS):
            path.write_bytes(protos[part].SerializeToString())
        result = check_model(reference, SplitPairRunner(model, halves=temps), feeds, thresholds, size=size)
        for at in more_sizes:
            extra = check_model(reference, SplitPairRunner(model, halves=temps), probe_inputs(*at), thresholds, size=at)
            result = result if extra else extra
        if not result and not force:
            raise CheckFailed(f"{bg_out.name}, {frame_out.name}: not written: the split pair fails its check against "
                              f"{reference.name}: {'; '.join(result.failures)} ({result.figures()})")
        for src, out in zip(temps, (bg_out, frame_out)):
            with atomic_path(out) as dst:
                dst.write_bytes(src.read_bytes())
    return bg_out, frame_out, result


def export_split(checkpoint: str | Path, model: str | Path, *, opset: int = OPSET) -> tuple[Path, Path, ParityResult]:
    """Write the fp32 pair beside `model`, the fp32 export of `checkpoint` (already written: its
    graph, size and metadata are the pair's); returns the two paths and the check against PyTorch."""
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
            doc = f"EVA4 {part} half of the fixed-camera pair: {', '.join(example)} -> {', '.join(outputs)}"
            protos[part] = _finish(raw, half_metadata(whole_meta, part, pair_id), doc)
    return _write_checked(model, protos, checkpoint, probe_inputs(h, w), None, size=(h, w),
                          more_sizes=check_sizes((h, w), dynamic)[1:])


def derive_pair(source: Path, out: Path, convert: Converter, feeds: Iterable[dict[str, np.ndarray]],
                thresholds: Thresholds | None = None, *, force: bool = False,
                layout: str = "NCHW") -> tuple[Path, Path, ParityResult] | None:
    """The pair of `out` (an fp16/int8 model converted from the fp32 `source`, already written)
    converted from `source`'s pair with `convert`, checked against `source` on `feeds` as `out`
    was; None when `source` has no pair beside it."""
    if not has_pair(source):
        return None
    halves = split_paths(source)
    info = read_onnx_info(out)
    whole_meta, pair_id = _linked(out, info.metadata)
    protos = {}
    for path, part in zip(halves, PARTS):
        protos[part] = set_metadata(convert(onnx.load(str(path)), part), half_metadata(whole_meta, part, pair_id, layout))
    more = check_sizes(info.spec.size, is_dynamic(info.metadata))[1:]  # a dynamic pair: at a second size too
    return _write_checked(out, protos, source, feeds, thresholds, force=force, more_sizes=more)


def fp16_pair(source: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[Path, Path, ParityResult] | None:
    """The fp16 pair of the fp16 model `out`, from the fp32 `source`'s pair (see `derive_pair`)."""
    from .fp16 import convert_fp16_model

    return derive_pair(source, out, lambda proto, part: convert_fp16_model(proto)[0], feeds)


# With a searched whole model, the pair first keeps the same layers in float; when it misses its
# gate (the features crossing the cut are quantised too), the next layers of the whole model's
# harm ranking go back to float, this many more at each try, until it passes or these run out.
PAIR_EXTRA_LAYERS = (0, 1, 2, 4, 6, 9, 12)


def int8_pair(source: Path, out: Path, pairs: CalibrationPairs, *, target: str, method: str,
              force: bool = False, searched: SearchResult | None = None) -> tuple[Path, Path, ParityResult] | None:
    """The int8 pair of the int8 model `out`: each half quantised as the whole was, calibrated
    on the same pairs (the frame half on the fp32 background half's features of their
    backgrounds), gated on the same held-out pairs (see `derive_pair`). The features cross
    channels-last (`features_channels_last`), where ONNX Runtime's int8 kernels want them.
    `searched`: the whole model's passing `export.int8_search.SearchResult`: the same layers of
    each half stay in float (`export.graph.same_layers`), then more by its ranking
    (`PAIR_EXTRA_LAYERS`), instead of the fixed rule's."""
    from toolkit.verify.compare import batches

    from .graph import drop_identity_pools, features_channels_last
    from .quantise import quantise_graph

    if not has_pair(source):
        return None
    features = np.ascontiguousarray(pair_features(source, pairs.calib["bg"]).transpose(0, 2, 3, 1))
    calib = {"bg": {"bg": pairs.calib["bg"]}, "frame": {FEATURES_NAME: features, "fgbg": pairs.calib["fgbg"]}}

    def prepared(proto: onnx.ModelProto, part: str, tmp: str) -> Path:
        drop_identity_pools(proto.graph)
        features_channels_last(proto.graph, FEATURES_NAME, part)
        onnx.checker.check_model(proto)
        half = Path(tmp) / f"{part}.onnx"
        half.write_bytes(proto.SerializeToString())
        return half

    if searched is not None:
        return _searched_pair(source, out, searched, calib, prepared, batches(pairs.gate), target=target, method=method)

    def convert(proto: onnx.ModelProto, part: str) -> onnx.ModelProto:
        with tempfile.TemporaryDirectory(prefix="toolkit-int8-") as tmp:
            return quantise_graph(prepared(proto, part, tmp), calib[part], target=target, method=method, out=out)[0]

    return derive_pair(source, out, convert, batches(pairs.gate), force=force, layout="NHWC")


def _searched_pair(source: Path, out: Path, searched: SearchResult, calib: dict, prepared: Callable, feeds: list, *,
                   target: str, method: str) -> tuple[Path, Path, ParityResult] | None:
    """`int8_pair` after a search: each half quantised once (every layer, explicit ReLUs, as the
    search quantised the whole model), then the whole model's float layers, and more of its
    ranking at each try, put back in float by the same surgery."""
    from .graph import same_layers
    from .int8_search import keep_in_float, name_all
    from .quantise import quantise_with

    quantised: dict[str, tuple[onnx.ModelProto, onnx.ModelProto]] = {}
    failure: CheckFailed | None = None
    for extra in PAIR_EXTRA_LAYERS:
        weights, keys = searched.refs(extra)

        def convert(proto: onnx.ModelProto, part: str) -> onnx.ModelProto:
            if part not in quantised:
                with tempfile.TemporaryDirectory(prefix="toolkit-int8-") as tmp:
                    qdq, pre, _, _ = quantise_with(prepared(proto, part, tmp), calib[part], target=target, method=method,
                                                   out=out, exclude=name_all, keep_activations=True)
                quantised[part] = (qdq, pre)
            qdq, pre = quantised[part]
            return keep_in_float(qdq, pre, same_layers(pre.graph, weights, keys))  # noqa: B023 (called at once)

        try:
            return derive_pair(source, out, convert, feeds, layout="NHWC")
        except CheckFailed as e:
            failure = e
    assert failure is not None
    raise failure


def pair_features(source: Path, bg: np.ndarray, batch: int = 8) -> np.ndarray:
    """The fp32 background half's `bg_features` of backgrounds `[N, 3, H, W]` (what the int8
    frame half is calibrated on)."""
    runner = SplitPairRunner(source)
    with runner:
        return np.concatenate([runner.features(bg[i : i + batch]) for i in range(0, len(bg), batch)])
