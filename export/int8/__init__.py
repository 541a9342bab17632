"""int8: one home for the int8 export.

`options` (`Int8Options`: what was asked, checked once) -> `quantise` (ONNX Runtime's static
Q/DQ tools, each target's settings, the fixed rule of what stays in float) -> `convert`
(`quantize_int8`: quantise, gate against fp32 on held-out pairs, write) -> `search` (when the
gate misses: the fewest layers to keep in float) -> `halves` (the fixed camera's two files,
quantised as the whole model was, retried with more float layers when they miss).
The calibration pairs come from `toolkit.data.calib`. No torch anywhere here.
"""

from toolkit.data.calib import CalibrationPairs, load_pairs, synthetic_pairs

from .convert import Int8Report, quantize_int8
from .options import DEFAULT_BUDGET_S, DEFAULT_METHOD, DEFAULT_TARGET, METHODS, SEARCH_MODES, TARGETS, Int8Options

__all__ = ["DEFAULT_BUDGET_S", "DEFAULT_METHOD", "DEFAULT_TARGET", "METHODS", "SEARCH_MODES", "TARGETS",
           "CalibrationPairs", "Int8Options", "Int8Report", "load_pairs", "quantize_int8", "synthetic_pairs"]
