"""What an int8 export was asked for, checked once: `Int8Options`.

One object travels from `ExportOptions` (`--int8-target`, `--calib-method`, `--force`,
`--int8-search`, `--int8-search-budget`) through the quantisation, its gate, the search and the
fixed camera's halves, instead of the same five values passed along at every step. Its checks
run when it is made, so a Python caller gets the command line's one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.errors import UserError
from toolkit.verify.compare import Thresholds

TARGETS = ("cpu", "tensorrt")
METHODS = ("minmax", "entropy", "percentile")
SEARCH_MODES = ("auto", "off")  # auto: a gate miss searches for the layers to keep in float
DEFAULT_TARGET = "cpu"
DEFAULT_METHOD = "entropy"
DEFAULT_BUDGET_S = 900.0
MAX_BUDGET_S = 86400.0
MIN_SPEEDUP = 1.0  # a searched model no faster than fp32 at batch 8 (CPU target) is no use


@dataclass(frozen=True)
class Int8Options:
    """`target`: the runtime the Q/DQ model is for (its zero points and where Q/DQ sit);
    `method`: the calibration; `force`: write a model that fails its gate, with a warning;
    `search`/`budget_s`: whether a gate miss searches for the layers to keep in float, and for
    how long; `thresholds`: the values it sets replace the int8 gate's; `min_speedup`: on the
    CPU target the search ends when its candidate is no faster than this times fp32, measured
    in the same run (0: speed never ends it; it is still measured and reported)."""

    target: str = DEFAULT_TARGET
    method: str = DEFAULT_METHOD
    force: bool = False
    search: str = "auto"
    budget_s: float = DEFAULT_BUDGET_S
    thresholds: Thresholds | None = None
    min_speedup: float = MIN_SPEEDUP

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise UserError(f"--int8-target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.method not in METHODS:
            raise UserError(f"--calib-method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.search not in SEARCH_MODES:
            raise UserError(f"--int8-search must be one of {', '.join(SEARCH_MODES)}, got {self.search!r}")
        try:
            budget = float(self.budget_s)
        except (TypeError, ValueError):
            budget = float("nan")
        if not 0 < budget <= MAX_BUDGET_S:
            raise UserError(f"--int8-search-budget must be in (0, {MAX_BUDGET_S:.0f}] seconds, got {self.budget_s}")
        object.__setattr__(self, "budget_s", budget)
        if not float(self.min_speedup) >= 0:
            raise UserError(f"int8 min_speedup must be 0 or more (a ratio to fp32), got {self.min_speedup}")
