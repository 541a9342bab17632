"""What `toolkit export` was asked for, checked in one place: `ExportOptions`.

The rules live here, not in the command line, so a Python caller gets the same one-line errors:
each value's range, and which options only apply with another (a calibration method without
`--int8` is a mistake, not something to ignore). The checks run when the options are made,
before anything is written, so a run never fails half-way on a bad value. The formats table's
own checks (a library a row needs, a Triton folder in the way) run from each selected row's
`preflight` (export.formats).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError
from toolkit.core.sizes import SizeProfile
from toolkit.core.spec import DEFAULT_BATCH_PROFILE, BatchProfile, parse_image_size
from toolkit.data.calib import DEFAULT_CALIB_PAIRS, DEFAULT_GATE_PAIRS, check_calibration_data, check_pair_counts

from .int8.options import DEFAULT_BUDGET_S, DEFAULT_METHOD, DEFAULT_TARGET, Int8Options
from .onnx import check_graph
from .tensorrt import DEFAULT_WORKSPACE_MB, check_portability
from .triton import DEFAULT_NAME as DEFAULT_TRITON_NAME
from .triton import check_model_name

# option field -> (its flag, the flag(s) it only applies with, their fields); the calibration
# pair counts also size fp16's check (it runs on both parts).
DEPENDENT_OPTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "int8_target": ("--int8-target", "--int8", ("int8",)),
    "calib_method": ("--calib-method", "--int8", ("int8",)),
    "calib_pairs": ("--calib-pairs", "--int8 or --fp16", ("int8", "fp16")),
    "gate_pairs": ("--gate-pairs", "--int8 or --fp16", ("int8", "fp16")),
    "force": ("--force", "--int8", ("int8",)),
    "int8_search": ("--int8-search", "--int8", ("int8",)),
    "search_budget_s": ("--int8-search-budget", "--int8", ("int8",)),
    "batch": ("--batch", "--engine", ("engine",)),
    "workspace_mb": ("--workspace", "--engine", ("engine",)),
    "timing_cache": ("--timing-cache", "--engine", ("engine",)),
    "size_profile": ("--size-profile", "--engine", ("engine",)),
    "engine_compat": ("--engine-compat", "--engine", ("engine",)),
    "dla_core": ("--dla-core", "--engine", ("engine",)),
    "triton_name": ("--triton-name", "--triton", ("triton",)),
    "triton_kind": ("--triton-kind", "--triton", ("triton",)),
}
SWITCHES = ("fp16", "int8", "engine", "triton")


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked for; refused (UserError) when made with a bad or misplaced value."""

    graph: str = "folded"
    fp16: bool = False
    int8: bool = False
    engine: bool = False
    triton: Path | None = None  # a Triton model repository folder
    calib: Path | None = None  # a data set (folder or zip, original layout): int8 calibration/gate, fp16 check
    int8_target: str = DEFAULT_TARGET
    calib_method: str = DEFAULT_METHOD
    calib_pairs: int = DEFAULT_CALIB_PAIRS
    gate_pairs: int = DEFAULT_GATE_PAIRS
    force: bool = False  # write an int8 model that fails its gate, with a warning
    int8_search: str = "auto"  # auto: a gate miss searches for the layers to keep in float; off: refuse (or --force)
    search_budget_s: float = DEFAULT_BUDGET_S  # the int8 search's time bound
    batch: BatchProfile = DEFAULT_BATCH_PROFILE  # engine profile; '1,8,32' or (1, 8, 32) are taken too
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Path | None = None  # default <out>/tensorrt.timing-cache
    triton_name: str = DEFAULT_TRITON_NAME
    triton_kind: str | None = None  # "cpu" or "gpu"; default: gpu when this machine has CUDA
    image_size: tuple[int, int] | None = None  # (H, W) the export takes; default the training size ('128x224' taken too)
    dynamic_size: bool = False  # H and W symbolic (any multiple of 4); image_size is then the nominal size
    size_profile: SizeProfile | None = None  # engines of a dynamic-size model: min,opt,max HxW ('96x160,128x224,256x448')
    engine_compat: str = "none"  # export.tensorrt.COMPAT_MODES
    dla_core: int | None = None  # Jetson: build the engines for this DLA core (GPU fallback on)

    def __post_init__(self) -> None:
        if not isinstance(self.batch, BatchProfile):
            object.__setattr__(self, "batch", batch_profile(self.batch))
        if self.image_size is not None:
            try:
                object.__setattr__(self, "image_size", parse_image_size(self.image_size))
            except ValueError as e:
                raise UserError(f"--image-size: {e}") from None
        if self.size_profile is not None:
            try:
                object.__setattr__(self, "size_profile", SizeProfile.of(self.size_profile))
            except ValueError as e:
                raise UserError(f"--size-profile: {e}") from None
        for name in ("triton", "calib", "timing_cache"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        defaults = {f.name: f.default for f in fields(self)}
        self._check_pairings({k for k in DEPENDENT_OPTIONS if getattr(self, k) != defaults[k]})
        self._check_values()

    @property
    def int8_options(self) -> Int8Options:
        """What the int8 export is asked for, as the one object export.int8 takes."""
        return Int8Options(target=self.int8_target, method=self.calib_method, force=self.force, search=self.int8_search,
                           budget_s=self.search_budget_s)

    @classmethod
    def from_given(cls, **given: Any) -> ExportOptions:
        """Options where None means "not given" (the command line's): an option given without the
        flag it applies to is refused even when it equals its default."""
        chosen = {k: v for k, v in given.items() if v is not None}
        probe = {k: chosen.get(k, False) for k in SWITCHES}
        cls._check_pairings_of({k for k, v in chosen.items() if k in DEPENDENT_OPTIONS and v is not False}, probe)
        return cls(**chosen)

    def _check_pairings(self, changed: Collection[str]) -> None:
        self._check_pairings_of(changed, {k: getattr(self, k) for k in SWITCHES})
        if self.calib is not None and not self.int8 and not self.fp16:
            raise UserError("--calib is used by --int8 (calibration and gate) and --fp16 (its check): give one of them")

    @staticmethod
    def _check_pairings_of(given: Collection[str], switches: dict[str, Any]) -> None:
        """Every option given without the flag it applies to, in one line."""
        groups: dict[str, list[str]] = {}
        for option, (own_flag, flag, needs) in DEPENDENT_OPTIONS.items():
            if option in given and not any(switches.get(k) for k in needs):
                groups.setdefault(flag, []).append(own_flag)
        if groups:
            raise UserError("; ".join(f"{', '.join(flags)} only {'applies' if len(flags) == 1 else 'apply'} to {flag}"
                                      for flag, flags in groups.items()))

    def _check_values(self) -> None:
        check_graph(self.graph)
        self.int8_options  # noqa: B018  (the int8 values' checks live in Int8Options: made once here to run them)
        check_pair_counts(self.calib_pairs, self.gate_pairs)
        check_portability(self.engine_compat, self.dla_core)
        if self.dla_core is not None and self.engine and not (self.fp16 or self.int8):
            raise UserError("--dla-core: DLA runs fp16 and int8 layers; add --fp16 or --int8 (the fp32 engine stays on the GPU)")
        if int(self.workspace_mb) <= 0:
            raise UserError(f"--workspace must be a positive number of MiB, got {self.workspace_mb}")
        if self.engine and self.int8 and self.int8_target != "tensorrt":
            raise UserError("--engine builds int8 engines from a TensorRT-target int8 model (zero points 0): "
                            "add --int8-target tensorrt, or drop --int8")
        check_model_name(self.triton_name)
        if self.dynamic_size and self.triton is not None:
            raise UserError("--dynamic-size and --triton: the Triton repository needs a fixed input size; export it without --dynamic-size")
        if self.triton_kind not in (None, "cpu", "gpu"):
            raise UserError(f"--triton-kind must be cpu or gpu, got {self.triton_kind!r}")
        if self.calib is not None:
            check_calibration_data(self.calib)


def batch_profile(value: BatchProfile | str | tuple[int, ...] | list[int]) -> BatchProfile:
    """'1,8,32' or (1, 8, 32) as an engine profile; a bad one is one `--batch` line."""
    try:
        return BatchProfile.of(value, name="--batch")
    except ValueError as e:
        raise UserError(str(e)) from None
