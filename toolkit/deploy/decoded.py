"""A video frame as the decoder gave it: the model's copy made from its YUV planes, the RGB
picture only when something shows it.

Why: at 720p, converting a decoded frame to RGB and resizing that for the model (8-bit Pillow)
cost 6 ms of the decode thread's 8 per frame, on the cores the model runs on; resizing the three
8-bit planes (the chroma planes are a quarter of the pixels) and converting the model's few
thousand pixels to RGB costs 3. The RGB picture (`np.asarray(frame)`) is still made, once, for
the video, the preview and the background.

How close (tests/deploy/test_decoded.py; figures in benchmarks/README.md): FFmpeg's conversion
is linear in Y, U and V up to its fixed-point rounding, and a resize is linear, so converting
after the resize gives the same picture within its rounding: within about half a grey level
on average of `infer`'s float resize of FFmpeg's RGB frame (the 8-bit RGB resize was a quarter),
a few levels at most. FFmpeg's own scaler straight to the model's size (`reformat`) was tried
and moved the masks far more (IoU 0.79-0.88 against `infer`'s, against 0.97-0.99 here).

Only what the conversion below reproduces takes this path: 8-bit 4:2:0 in limited ("TV")
range, BT.601 or BT.709 (FFmpeg's own choice by the frame's tag, untagged is BT.601; PyAV 17
and later read the tag), at even sizes (FFmpeg converts odd sizes another way, without the
rounding `_OFFSET` follows). Any other frame is converted to RGB by FFmpeg as before.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeAlias

import numpy as np
from PIL import Image

from ..render import imageio

# limited-range Y'CbCr -> R'G'B' (rows R, G, B; columns Y-16, U-128, V-128)
YUV_TO_RGB = {
    "bt601": ((1.16438, 0.0, 1.59603), (1.16438, -0.39176, -0.81297), (1.16438, 2.01723, 0.0)),
    "bt709": ((1.16438, 0.0, 1.79274), (1.16438, -0.21325, -0.53291), (1.16438, 2.11240, 0.0)),
}
MATRICES = {2: "bt601", 5: "bt601", 6: "bt601", 1: "bt709"}  # AVColorSpace: 2 unspecified, 5/6 BT.601, 1 BT.709
MATRIX_TAG = {"bt601": 6, "bt709": 1}  # a tag that names each matrix (SMPTE170M, BT709)
# FFmpeg's fixed-point conversion truncates: its RGB sits about a grey level below the exact
# formula (measured on x86: R 1.0, G 1.5, B 1.1); the model's copy follows FFmpeg's picture.
_OFFSET = np.array([-1.0, -1.47, -1.11], np.float32)
_LIMITED = (0, 1)  # AVColorRange: unspecified (limited, for yuv420p), MPEG/TV


class DecodedFrame:
    """One decoded 8-bit 4:2:0 frame. `shape`/`dtype` as the RGB array it stands for;
    `np.asarray(frame)` is that array (made by FFmpeg once, then kept); `model_input(size)` the
    model's float32 copy made from the planes."""

    __slots__ = ("_frame", "_rgb", "tag", "shape")
    dtype = np.dtype(np.uint8)

    def __init__(self, frame: Any, tag: int):
        self._frame, self.tag, self._rgb = frame, tag, None  # tag: the frame's AVColorSpace, a MATRICES key
        self.shape = (int(frame.height), int(frame.width), 3)

    @property
    def matrix(self) -> str:
        return MATRICES[self.tag]

    @staticmethod
    def wrap(frame: Any) -> DecodedFrame | np.ndarray:
        """A DecodedFrame for a frame the planes path reproduces; else FFmpeg's RGB array."""
        tag = int(frame.colorspace)
        reproduced = frame.format.name == "yuv420p" and int(frame.color_range) in _LIMITED and tag in MATRICES
        if not reproduced or frame.width % 2 or frame.height % 2:
            return frame.to_ndarray(format="rgb24")
        return DecodedFrame(frame, tag)

    def rgb(self) -> np.ndarray:
        """The uint8 HxWx3 picture, as FFmpeg converts it (once)."""
        if self._rgb is None:
            self._rgb = self._frame.to_ndarray(format="rgb24")
        return self._rgb

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        rgb = self.rgb()
        if dtype is not None and np.dtype(dtype) != rgb.dtype:
            return rgb.astype(dtype)
        return rgb.copy() if copy else rgb  # np.asarray: the kept picture itself (treat it as read-only)

    def resized(self, size: tuple[int, int]) -> np.ndarray:
        """uint8 RGB at `size` (h, w) through FFmpeg's scaler: for pictures people look at,
        never for the model."""
        h, w = int(size[0]), int(size[1])
        if (h, w) == self.shape[:2]:
            return self.rgb()
        return self._frame.reformat(w, h, "rgb24", interpolation="BILINEAR").to_ndarray()

    def planes_at(self, size: tuple[int, int]) -> Planes | None:
        """A copy of the picture's planes at `size` (h, w; FFmpeg's scaler when it differs), to
        draw on and encode as they are; None at an odd size (4:2:0 halves each side)."""
        h, w = int(size[0]), int(size[1])
        if h % 2 or w % 2:
            return None
        frame = self._frame if (h, w) == self.shape[:2] else self._frame.reformat(w, h, "yuv420p", interpolation="BILINEAR")
        out = Planes.blank(h, w, self.tag)
        for plane, target in zip(frame.planes[:3], (out.y, out.u, out.v)):
            target[:] = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        return out

    def model_input(self, size: tuple[int, int]) -> np.ndarray:
        """float32 HxWx3 in [0, 1] at `size` (h, w): each plane resized (bilinear, as `infer`
        resizes), then converted."""
        h, w = int(size[0]), int(size[1])
        planes = [_resized_plane(p, h, w) for p in self._frame.planes[:3]]
        planes[0] -= 16.0
        planes[1] -= 128.0
        planes[2] -= 128.0
        rgb = np.stack(planes, axis=-1) @ np.asarray(YUV_TO_RGB[self.matrix], np.float32).T
        rgb += _OFFSET
        np.clip(rgb, 0.0, 255.0, out=rgb)
        rgb *= np.float32(1 / 255)
        return rgb


def _resized_plane(plane: Any, h: int, w: int) -> np.ndarray:
    """One 8-bit plane resized to (h, w), as float32 (read in place: its lines are padded)."""
    image = Image.frombuffer("L", (plane.width, plane.height), plane, "raw", "L", plane.line_size, 1)
    return np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), np.float32)


Frame: TypeAlias = "np.ndarray | DecodedFrame"  # what a FrameSource's decoded() yields


class Planes(NamedTuple):
    """An 8-bit 4:2:0 picture in one I420 buffer (Y, then U, then V, each plane's rows
    contiguous: what the encoder takes as it is), and the colour tag its source had."""

    i420: np.ndarray  # uint8 (h * 3 / 2, w)
    tag: int  # AVColorSpace, a MATRICES key (2: untagged, read as BT.601)

    @staticmethod
    def blank(h: int, w: int, tag: int) -> Planes:
        return Planes(np.empty((h * 3 // 2, w), np.uint8), tag)

    @property
    def matrix(self) -> str:
        return MATRICES[self.tag]

    @property
    def size(self) -> tuple[int, int]:
        return self.i420.shape[0] * 2 // 3, self.i420.shape[1]

    @property
    def y(self) -> np.ndarray:
        h, w = self.size
        return self.i420.reshape(-1)[: h * w].reshape(h, w)

    @property
    def u(self) -> np.ndarray:
        h, w = self.size
        return self.i420.reshape(-1)[h * w : h * w * 5 // 4].reshape(h // 2, w // 2)

    @property
    def v(self) -> np.ndarray:
        h, w = self.size
        return self.i420.reshape(-1)[h * w * 5 // 4 :].reshape(h // 2, w // 2)


def rgb_to_yuv(rgb: np.ndarray, matrix: str) -> np.ndarray:
    """Limited-range Y, U, V (float, last axis) of RGB values (0-255, last axis): the inverse of
    YUV_TO_RGB[matrix], for the colours the pictures add (the tint, the colour map, the labels)."""
    inverse = np.linalg.inv(np.asarray(YUV_TO_RGB[matrix], np.float64))
    return np.asarray(rgb, np.float64) @ inverse.T + (16.0, 128.0, 128.0)


def model_input(frame: Frame, size: tuple[int, int], *, match_infer: bool = False) -> np.ndarray:
    """The model's float32 HxWx3 copy of `frame` (or of a background) at `size` (h, w): from
    the planes when the frame has them, else the 8-bit RGB resize (`imageio.resize_uint8`, a
    quarter of a grey level from `infer`'s float resize); `match_infer`: `infer`'s own float
    resize of the RGB picture, whatever the frame (what `infer` would feed the model)."""
    if match_infer:
        return imageio.resize(imageio.from_uint8(np.asarray(frame)), size)
    if isinstance(frame, DecodedFrame):
        return frame.model_input(size)
    return imageio.from_uint8(imageio.resize_uint8(frame, size))


def picture_at(frame: Frame, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB of `frame` at `size` (h, w), for the pictures a person looks at."""
    if isinstance(frame, DecodedFrame):
        return frame.resized(size)
    return imageio.resize_uint8(frame, size)
