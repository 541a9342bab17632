"""Input sizes a model takes: one fixed size, or (`--dynamic-size`) any multiple of 4.

The network is fully convolutional and pools twice, so it runs at any H x W that are multiples
of 4. A model exported with `--dynamic-size` has symbolic H and W in its graph and records
`toolkit.dynamic_size` in its metadata; its `input_size` stays the nominal size (what parity and
bench run at, and what frames are resized to). ONNX Runtime and OpenVINO then run it at any
multiple of 4; a TensorRT engine needs a range fixed at build time (`SizeProfile`,
`--size-profile 96x160,128x224,256x448`: min, opt, max).

No torch here: part of the edge install.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .spec import METADATA_PREFIX, parse_image_size

DYNAMIC_SIZE_KEY = f"{METADATA_PREFIX}dynamic_size"
SIZE_MULTIPLE = 4
MAX_SIZE = 4096  # the largest H or W a dynamic-size export admits


def is_dynamic(metadata: Mapping[str, str]) -> bool:
    """The model file takes any H x W that are multiples of 4 (its metadata says so)."""
    return metadata.get(DYNAMIC_SIZE_KEY) == "1"


def check_size(height: int, width: int) -> str | None:
    """Why a dynamic model cannot take H x W (None when it can)."""
    if height <= 0 or width <= 0 or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        return f"{height}x{width} is not a size the network takes (H and W: positive multiples of {SIZE_MULTIPLE})"
    if max(height, width) > MAX_SIZE:
        return f"{height}x{width} is over the largest size a dynamic-size export takes ({MAX_SIZE})"
    return None


@dataclass(frozen=True)
class SizeProfile:
    """The (min, opt, max) input sizes of a TensorRT engine built from a dynamic-size model:
    each a (H, W), each dimension ordered min <= opt <= max."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def __post_init__(self) -> None:
        sizes = (self.min, self.opt, self.max)
        for axis, name in ((0, "H"), (1, "W")):
            lo, opt, hi = (s[axis] for s in sizes)
            if not lo <= opt <= hi:
                raise ValueError(f"size profile: {name} must satisfy min <= opt <= max, got {lo}, {opt}, {hi}")

    @classmethod
    def of(cls, value: SizeProfile | str | Sequence[Any] | Mapping[str, Any]) -> SizeProfile:
        """From '96x160,128x224,256x448', three sizes, or {"min": [h, w], ...}; ValueError otherwise."""
        if isinstance(value, SizeProfile):
            return value
        if isinstance(value, Mapping):
            parts: list[Any] = [value.get(k) for k in ("min", "opt", "max")]
        elif isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",") if p]
        else:
            parts = list(value)
        if len(parts) != 3 or any(p is None for p in parts):
            raise ValueError(f"size profile must be min,opt,max sizes (e.g. 96x160,128x224,256x448), got {value!r}")
        return cls(*(parse_image_size(p) for p in parts))

    @classmethod
    def fixed(cls, size: tuple[int, int]) -> SizeProfile:
        return cls(size, size, size)

    def admits(self, size: tuple[int, int]) -> bool:
        return all(self.min[i] <= size[i] <= self.max[i] for i in (0, 1))

    def __str__(self) -> str:
        return ",".join(f"{h}x{w}" for h, w in (self.min, self.opt, self.max))

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}
