"""The fixed camera's int8 halves: `X.int8.bg.onnx` and `X.int8.frame.onnx`, quantised as the
whole int8 model was, from the fp32 model's halves.

Each half is calibrated on the same pairs as the whole model (the frame half on the fp32
background half's features of their backgrounds) and gated on the same held-out pairs
(`export.fixed_camera.derive_halves`). The features cross channels-last, where ONNX Runtime's
int8 kernels want them. After a search (the whole model's `Int8Report.searched`) the halves keep
the same layers in float (`export.graph.same_layers`, matched by weights and structure), and
when they miss their gate (the features crossing the cut are quantised too) more layers of the
search's harm ranking go back to float, `HALVES_EXTRA_LAYERS` more at each try.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from toolkit.core.errors import CheckFailed
from toolkit.core.spec import FEATURES_NAME
from toolkit.runtime.fixed import HalvesRunner, has_halves
from toolkit.verify.compare import ParityResult, batches

from ..fixed_camera import derive_halves
from ..graph import drop_identity_pools, features_channels_last, same_layers
from .options import Int8Options
from .quantise import quantise_graph, quantise_with
from .search import keep_in_float, name_all

if TYPE_CHECKING:
    from toolkit.data.calib import CalibrationPairs

    from .convert import Int8Report
    from .search import SearchResult

# The whole model's float layers first (0 more), then this many more of its harm ranking.
HALVES_EXTRA_LAYERS = (0, 1, 2, 4, 6, 9, 12)
Halves = tuple[Path, Path, ParityResult]


def int8_halves(source: Path, report: Int8Report, pairs: CalibrationPairs) -> Halves | None:
    """The int8 halves of the int8 model `report.path`, converted from the halves of the fp32
    `source` as `report` says the whole model was (its options, whether it was forced, its
    search); None when `source` has no halves beside it. CheckFailed (nothing written) when
    they miss their gate."""
    if not has_halves(source):
        return None
    assert report.path is not None  # the whole model is written first
    quantiser = HalfQuantiser(source, report.path, pairs, report.options)
    feeds = batches(pairs.gate)
    searched = report.searched
    if searched is None:
        return derive_halves(source, report.path, quantiser.fixed_rule, feeds, force=report.forced, layout="NHWC")
    failure: CheckFailed | None = None
    for extra in HALVES_EXTRA_LAYERS:
        convert = functools.partial(quantiser.with_float_layers, searched=searched, extra=extra)
        try:
            return derive_halves(source, report.path, convert, feeds, layout="NHWC")
        except CheckFailed as e:
            failure = e
    assert failure is not None
    raise failure


class HalfQuantiser:
    """Quantises a half of the fp32 `source` as the whole model `out` was: by the fixed rule,
    or (after a search) every layer once, then the searched layers put back in float."""

    def __init__(self, source: Path, out: Path, pairs: CalibrationPairs, options: Int8Options):
        features = np.ascontiguousarray(background_features(source, pairs.calib["bg"]).transpose(0, 2, 3, 1))
        self.calib = {"bg": {"bg": pairs.calib["bg"]}, "frame": {FEATURES_NAME: features, "fgbg": pairs.calib["fgbg"]}}
        self.out, self.options = out, options
        self._every_layer: dict[str, tuple[onnx.ModelProto, onnx.ModelProto]] = {}

    def fixed_rule(self, proto: onnx.ModelProto, part: str) -> onnx.ModelProto:
        """The half quantised with the fixed rule of what stays in float (no search ran)."""
        with tempfile.TemporaryDirectory(prefix="toolkit-int8-") as tmp:
            o = self.options
            return quantise_graph(_prepared(proto, part, tmp), self.calib[part], target=o.target, method=o.method, out=self.out)[0]

    def with_float_layers(self, proto: onnx.ModelProto, part: str, *, searched: SearchResult, extra: int) -> onnx.ModelProto:
        """The half with every layer quantised (once per part, as the search quantised the whole
        model), then the searched float layers and `extra` more of its ranking put back in float."""
        if part not in self._every_layer:
            with tempfile.TemporaryDirectory(prefix="toolkit-int8-") as tmp:
                o = self.options
                qdq, pre, _, _ = quantise_with(_prepared(proto, part, tmp), self.calib[part], target=o.target, method=o.method,
                                               out=self.out, exclude=name_all, keep_activations=True)
            self._every_layer[part] = (qdq, pre)
        qdq, pre = self._every_layer[part]
        weights, keys = searched.refs(extra)
        return keep_in_float(qdq, pre, same_layers(pre.graph, weights, keys))


def _prepared(proto: onnx.ModelProto, part: str, tmp: str) -> Path:
    """The half ready to quantise, written under `tmp`: identity pools dropped, the features
    channels-last."""
    drop_identity_pools(proto.graph)
    features_channels_last(proto.graph, FEATURES_NAME, part)
    onnx.checker.check_model(proto)
    half = Path(tmp) / f"{part}.onnx"
    half.write_bytes(proto.SerializeToString())
    return half


def background_features(source: Path, bg: np.ndarray, batch: int = 8) -> np.ndarray:
    """The fp32 background half's `bg_features` of backgrounds `[N, 3, H, W]` (what the int8
    frame half is calibrated on)."""
    with HalvesRunner(source) as runner:
        return np.concatenate([runner.features(bg[i : i + batch]) for i in range(0, len(bg), batch)])
