"""The one source of truth for what goes into and comes out of every backend.

Every backend (PyTorch, ONNX Runtime, TensorRT) takes `{"bg", "fgbg"}` float32 `[N, 3, H, W]`
RGB in [0, 1] and returns `{"mask", "depth"}` float32 `[N, 1, H, W]` in [0, 1]. The input
normalisation and the output decoding live inside the model (a wrapper module in PyTorch, the
same ops in the ONNX graph), and are described here once, so that image loading, metrics,
panels, parity and benchmarks never care which backend ran.

No torch here: this module is part of the edge install.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

INPUT_NAMES: tuple[str, str] = ("bg", "fgbg")
OUTPUT_NAMES: tuple[str, str] = ("mask", "depth")
FEATURES_NAME = "bg_features"  # what the background half hands the frame half (toolkit.net.cut)
FEATURE_CHANNELS = 192  # 64 stem channels + 128 partial sums of the first trunk layer, at H/2 x W/2

# Statistics the original training code used (architecture.md, dataset.md).
BG_MEAN = (0.449, 0.367, 0.308)
BG_STD = (0.226, 0.217, 0.208)
FGBG_MEAN = (0.450, 0.376, 0.322)
FGBG_STD = (0.238, 0.230, 0.224)
MASK_MEAN, MASK_STD = 0.079, 0.254
DEPTH_MEAN, DEPTH_STD = 0.350, 0.208

DEFAULT_IMAGE_SIZE = 128
METADATA_PREFIX = "toolkit."

# Which way a depth map's grey runs. The original set's depth is DenseDepth's output through a
# colour map to grey: bright = far (dataset.md); the author's checkpoints predict that. The
# toolkit's synthetic set wrote near = bright before the convention was recorded, so a model or
# file that does not say reads as "near-bright" (`IOSpec.from_dict`), with a note.
DEPTH_CONVENTIONS = ("far-bright", "near-bright")
ORIGINAL_DEPTH_CONVENTION = "far-bright"
UNRECORDED_DEPTH_CONVENTION = "near-bright"


def check_depth_convention(value: str) -> str:
    if value not in DEPTH_CONVENTIONS:
        raise ValueError(f"depth convention must be one of {', '.join(DEPTH_CONVENTIONS)}, got {value!r}")
    return value


def nearness(depth: np.ndarray, convention: str) -> np.ndarray:
    """Depth in [0, 1] as "1 = near" whatever way it was stored: how metrics that need a side
    (the near region, metres) read any model's or data set's depth."""
    return depth if check_depth_convention(convention) == "near-bright" else (1.0 - depth).astype(np.asarray(depth).dtype)



@dataclass(frozen=True)
class Normalisation:
    """Per-channel `(x - mean) / std` applied to an RGB input in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("normalisation needs 3 means and 3 stds (RGB)")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) <= 0:
            raise ValueError("normalisation values must be finite, with std > 0")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise a `[N, 3, H, W]` float array (reference implementation in numpy)."""
        m = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        s = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return (x - m) / s


@dataclass(frozen=True)
class Decoding:
    """How a raw network output becomes a value in [0, 1].

    kind "affine_clip": `clip(raw * scale + offset, 0, 1)` — outputs trained with L1/SmoothL1 on
    targets normalised by (offset, scale), as in the seed recipe.
    kind "sigmoid": `sigmoid(raw)` — outputs trained as logits.
    """

    kind: str = "affine_clip"
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("affine_clip", "sigmoid"):
            raise ValueError(f"unknown decoding kind {self.kind!r}")
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)) or self.scale == 0:
            raise ValueError("decoding scale and offset must be finite, scale non-zero")

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if self.kind == "sigmoid":
            return (1.0 / (1.0 + np.exp(-raw))).astype(np.float32)
        return np.clip(raw * self.scale + self.offset, 0.0, 1.0).astype(np.float32)

    def encode_target(self, target: np.ndarray) -> np.ndarray:
        """The inverse of the affine part: a [0, 1] target in the network's raw space."""
        if self.kind == "sigmoid":
            return target
        return (target - self.offset) / self.scale

    def describe(self) -> str:
        if self.kind == "sigmoid":
            return "sigmoid(raw)"
        return f"clip(raw * {self.scale:g} + {self.offset:g}, 0, 1)"


@dataclass(frozen=True)
class IOSpec:
    """Input size, input names, normalisation and output decoding of one trained model."""

    height: int = DEFAULT_IMAGE_SIZE
    width: int = DEFAULT_IMAGE_SIZE
    bg: Normalisation = field(default_factory=lambda: Normalisation(BG_MEAN, BG_STD))
    fgbg: Normalisation = field(default_factory=lambda: Normalisation(FGBG_MEAN, FGBG_STD))
    mask: Decoding = field(default_factory=lambda: Decoding("affine_clip", MASK_STD, MASK_MEAN))
    depth: Decoding = field(default_factory=lambda: Decoding("affine_clip", DEPTH_STD, DEPTH_MEAN))
    depth_convention: str = ORIGINAL_DEPTH_CONVENTION  # which way the depth output's grey runs

    def __post_init__(self) -> None:
        for n, v in (("height", self.height), ("width", self.width)):
            if int(v) <= 0 or int(v) % 4:
                raise ValueError(f"image {n} must be a positive multiple of 4, got {v}")
        check_depth_convention(self.depth_convention)

    def with_depth_convention(self, convention: str) -> IOSpec:
        return replace(self, depth_convention=check_depth_convention(convention))

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def with_size(self, height: int, width: int | None = None) -> IOSpec:
        d = self.to_dict()
        d["height"], d["width"] = int(height), int(width if width is not None else height)
        return IOSpec.from_dict(d)

    def normalisation(self, name: str) -> Normalisation:
        return {"bg": self.bg, "fgbg": self.fgbg}[name]

    def decoding(self, name: str) -> Decoding:
        return {"mask": self.mask, "depth": self.depth}[name]

    # -- serialisation: checkpoints hold the dict, ONNX metadata_props hold strings ----------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("bg", "fgbg"):
            d[k] = {"mean": list(d[k]["mean"]), "std": list(d[k]["std"])}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IOSpec:
        try:
            return cls(
                height=int(d["height"]),
                width=int(d["width"]),
                bg=Normalisation(tuple(map(float, d["bg"]["mean"])), tuple(map(float, d["bg"]["std"]))),
                fgbg=Normalisation(tuple(map(float, d["fgbg"]["mean"])), tuple(map(float, d["fgbg"]["std"]))),
                mask=Decoding(str(d["mask"]["kind"]), float(d["mask"]["scale"]), float(d["mask"]["offset"])),
                depth=Decoding(str(d["depth"]["kind"]), float(d["depth"]["scale"]), float(d["depth"]["offset"])),
                depth_convention=str(d.get("depth_convention", UNRECORDED_DEPTH_CONVENTION)),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"invalid I/O spec: {e}") from e

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX `metadata_props` and engine sidecars."""
        return {
            f"{METADATA_PREFIX}input_size": f"{self.height}x{self.width}",
            f"{METADATA_PREFIX}inputs": ",".join(INPUT_NAMES),
            f"{METADATA_PREFIX}outputs": ",".join(OUTPUT_NAMES),
            f"{METADATA_PREFIX}normalisation": json.dumps(
                {k: self.to_dict()[k] for k in ("bg", "fgbg")}, sort_keys=True
            ),
            f"{METADATA_PREFIX}decoding": json.dumps(
                {k: self.to_dict()[k] for k in ("mask", "depth")}, sort_keys=True
            ),
            f"{METADATA_PREFIX}depth_convention": self.depth_convention,
            f"{METADATA_PREFIX}iospec": json.dumps(self.to_dict(), sort_keys=True),
        }

    @classmethod
    def from_metadata(cls, props: Mapping[str, str]) -> IOSpec:
        raw = props.get(f"{METADATA_PREFIX}iospec")
        if raw is None:
            raise ValueError("model metadata has no toolkit I/O spec")
        try:
            return cls.from_dict(json.loads(raw))
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid I/O spec in metadata: {e}") from e


SEED_SPEC = IOSpec()


def depth_convention_note(name: str, metadata: Mapping[str, str]) -> str | None:
    """A note for a model file whose metadata does not say which way its depth runs."""
    raw = metadata.get(f"{METADATA_PREFIX}iospec")
    if raw is None or '"depth_convention"' in raw:
        return None
    return (f"{name}: written before models recorded their depth convention: its depth is read as "
            f"{UNRECORDED_DEPTH_CONVENTION} (bright = near); export it again to record it")


@dataclass(frozen=True)
class Interface:
    """The tensors a model file takes and gives: the whole network, or one half of the
    fixed-camera cut (`toolkit.net.cut`): `bg` -> `bg_features` once per camera, then
    (`bg_features`, `fgbg`) -> (`mask`, `depth`) per frame. Every runner and the engine builder
    read the names and per-sample shapes from here, so the halves run on every backend."""

    part: str  # "whole", "bg" or "frame": the file's `toolkit.split` metadata ("whole" when absent)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # `bg_features` as [N, C, H/2, W/2] ("NCHW") or [N, H/2, W/2, C] ("NHWC": the int8 pair, whose
    # quantised kernels in ONNX Runtime run channels-last; `toolkit.bg_features_layout`)
    features_layout: str = "NCHW"

    def shape(self, name: str, size: tuple[int, int]) -> tuple[int, int, int]:
        """One sample's shape (`[C, H, W]`; the features as their layout says) of the tensor
        `name` for a model of input `size`."""
        h, w = size
        if name == FEATURES_NAME:
            return (FEATURE_CHANNELS, h // 2, w // 2) if self.features_layout == "NCHW" else (h // 2, w // 2, FEATURE_CHANNELS)
        return (3, h, w) if name in INPUT_NAMES else (1, h, w)


INTERFACES: dict[str, Interface] = {
    "whole": Interface("whole", INPUT_NAMES, OUTPUT_NAMES),
    "bg": Interface("bg", ("bg",), (FEATURES_NAME,)),
    "frame": Interface("frame", (FEATURES_NAME, "fgbg"), OUTPUT_NAMES),
}
WHOLE = INTERFACES["whole"]


FEATURE_LAYOUTS = ("NCHW", "NHWC")


def interface_of(metadata: Mapping[str, str]) -> Interface:
    """The interface a model file's metadata declares (`toolkit.split`, `toolkit.bg_features_layout`),
    the whole network by default."""
    part = metadata.get(f"{METADATA_PREFIX}split", "whole")
    if part not in INTERFACES:
        raise ValueError(f"unknown model part {part!r} in its metadata (expected one of {', '.join(INTERFACES)})")
    layout = metadata.get(f"{METADATA_PREFIX}bg_features_layout", "NCHW")
    if layout not in FEATURE_LAYOUTS:
        raise ValueError(f"unknown bg_features layout {layout!r} in its metadata (expected one of {', '.join(FEATURE_LAYOUTS)})")
    return INTERFACES[part] if layout == "NCHW" else replace(INTERFACES[part], features_layout=layout)


def parse_image_size(value: str | int | Sequence[int]) -> tuple[int, int]:
    """'128x224', '128', 128 or (128, 224) -> (height, width), each a positive multiple of 4 (the
    network pools twice); ValueError otherwise. The network is fully convolutional, so a model
    trained at one size runs at any such size (a 16:9 camera: 128x224, not a squashed square)."""
    if isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
    elif isinstance(value, int):
        parts = [str(value)]
    else:
        parts = [str(v) for v in value]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"image size must be HxW or N (whole numbers), got {value!r}") from None
    if len(numbers) not in (1, 2) or any(n <= 0 or n % 4 for n in numbers):
        raise ValueError(f"image size must be HxW or N with positive multiples of 4, got {value!r}")
    return (numbers[0], numbers[-1])


# -- batch sizes: what the exported graphs admit, and the optimisation profiles built on them --
MAX_BATCH = 256  # the dynamic batch axis of every exported graph runs 1..MAX_BATCH


@dataclass(frozen=True)
class BatchProfile:
    """A (min, opt, max) batch range, as TensorRT optimisation profiles need: engines are tuned
    for `opt` and run any batch in `min..max`. The export options, the engine builder, the engine
    runner and ONNX Runtime's TensorRT provider all take one, so the rule is checked here once."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        self.check(self.min, self.opt, self.max)

    @staticmethod
    def check(lo: object, opt: object, hi: object, name: str = "batch profile") -> None:
        """The rule, with `name` (e.g. "--batch") leading each ValueError's message."""
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, opt, hi)):
            raise ValueError(f"{name} must be min,opt,max (three whole numbers), got {lo!r},{opt!r},{hi!r}")
        assert isinstance(lo, int) and isinstance(opt, int) and isinstance(hi, int)
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"{name} must satisfy 1 <= min <= opt <= max, got min={lo} opt={opt} max={hi}")
        if hi > MAX_BATCH:
            raise ValueError(f"{name} max {hi} exceeds the ONNX export's dynamic batch limit {MAX_BATCH}")

    @classmethod
    def of(cls, value: object, name: str = "batch profile") -> BatchProfile:
        """From '1,8,32', (1, 8, 32), {"min": 1, "opt": 8, "max": 32} or a profile; a ValueError
        led by `name` otherwise."""
        if isinstance(value, BatchProfile):
            return value
        if isinstance(value, Mapping):
            try:
                numbers = [_whole(value[k]) for k in ("min", "opt", "max")]
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"invalid {name} {dict(value)!r}") from None
        else:
            if isinstance(value, str):
                parts: list[object] = [p.strip() for p in value.split(",")]
            elif isinstance(value, Sequence):
                parts = list(value)
            else:
                raise ValueError(f"{name} must be min,opt,max (three numbers), got {value!r}")
            if len(parts) != 3:
                raise ValueError(f"{name} must be min,opt,max (three numbers), got {','.join(map(str, parts))}")
            try:
                numbers = [_whole(p) for p in parts]
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be min,opt,max (three whole numbers), got {value!r}") from None
        cls.check(*numbers, name=name)
        return cls(*numbers)

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.min, self.opt, self.max)

    def __iter__(self) -> Iterator[int]:
        return iter(self.as_tuple())

    def __str__(self) -> str:
        return ",".join(map(str, self))

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def admits(self, batch: int) -> bool:
        return self.min <= batch <= self.max


def _whole(value: object) -> int:
    """An int from an int or a string of one (not from 2.5, True or '2.5')."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not a whole number: {value!r}")
    return int(value)


DEFAULT_BATCH_PROFILE = BatchProfile()
