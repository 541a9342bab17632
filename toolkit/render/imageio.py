"""Pillow in, numpy out (and back): the one place that turns image files into arrays.

Why one module: every caller (the data reader, `infer`, parity, panels) must agree on how an
image becomes numbers — which modes are accepted, how 16-bit data is scaled, how EXIF rotation
is honoured, and what a broken file looks like to the user (one `UserError` line naming the
file). Everything here is numpy + Pillow so it runs on the edge install (no torch).

Conventions: float arrays are float32 in [0, 1], images are HxW (grey) or HxWx3 (RGB), sizes
are `(height, width)` like numpy shapes (Pillow's own `(width, height)` never leaks out).
Panels (`make_panel`, `make_grid`) turn arrays into tiles here; `pictures.py` lays out their
labels and colour bars.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.errors import UserError
from ..core.fsutil import regular_file_problem, write_bytes_atomic
from ..core.spec import ORIGINAL_DEPTH_CONVENTION, check_depth_convention
from .pictures import Legend, compose

# A 160 x 160 data set never needs more; a larger header is almost surely a decompression bomb
# (a tiny file that inflates to gigabytes). Pillow's own limit (~89 Mpx) only warns.
MAX_IMAGE_PIXELS = 64_000_000
# Files are read whole (zip members arrive as bytes too): a bigger "image" is refused unread.
MAX_FILE_BYTES = 1024 * 1024 * 1024

# Modes `open_image` hands out; everything else Pillow reads is converted to one of these.
OPEN_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I", "F")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")

Source = str | os.PathLike | bytes


def _label(source: Source, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<image bytes>"
    return str(source)


def open_image(source: Source, name: str | None = None) -> Image.Image:
    """Decode an image fully and return it upright, in one of `OPEN_MODES`.

    `source` is a path or the file's bytes (a zip member); `name` is what error messages call
    it. The image is decoded here (`load()`), so a truncated file fails now, with its name,
    rather than later inside a batch. Only the first frame of an animation is kept.
    """
    label = _label(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        problem = regular_file_problem(path, MAX_FILE_BYTES)
        if problem is not None and problem != "no such file":
            raise UserError(f"{label}: not a readable image ({problem})")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"{label}: not a readable image (no such file)") from None
        except PermissionError:
            raise UserError(f"{label}: not a readable image (permission denied)") from None
        except OSError as e:
            raise UserError(f"{label}: not a readable image ({e.strerror or e})") from None
    if not data:
        raise UserError(f"{label}: not a readable image (empty file)")
    return _decode(data, label)


def _decode(data: bytes, label: str) -> Image.Image:
    try:
        # Pillow warns about damage it works around (corrupt EXIF or TIFF tags): recorded and
        # dropped here, so a damaged file is a clean image or one error line, not stderr noise.
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            # Pillow only *warns* between its limit and twice its limit: make that an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise UserError(
                        f"{label}: not a readable image ({w}x{h} pixels is over the "
                        f"{MAX_IMAGE_PIXELS} pixel limit; a decompression bomb?)"
                    )
                im.load()
                im = _upright(im)
                return _normalise_mode(im)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{label}: not a readable image (too many pixels: {e})") from None
    except UnidentifiedImageError:
        raise UserError(f"{label}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        # Pillow reports truncated/corrupt data with a zoo of exception types.
        detail = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"{label}: not a readable image (truncated or corrupt: {detail})") from None


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (phones store rotated pixels plus a tag)."""
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a fine image unreadable
        return im


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Convert the long tail of Pillow modes to the few `OPEN_MODES` the rest understands."""
    mode = im.mode
    if mode in OPEN_MODES or mode in _SIXTEEN_BIT:
        return im.copy() if mode in _SIXTEEN_BIT else im
    if mode == "1":
        return im.convert("L")
    if mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if mode == "PA":
        return im.convert("RGBA")
    if mode == "La":
        return im.convert("LA")
    if mode in ("RGBa", "RGBX"):
        return im.convert("RGBA" if mode == "RGBa" else "RGB")
    if mode.startswith("I;16"):
        return im.convert("I")
    # CMYK, YCbCr, LAB, HSV, ...: Pillow knows the way to RGB.
    return im.convert("RGB")


def image_to_array(im: Image.Image) -> np.ndarray:
    """Pixels as float32 in [0, 1]: HxW for grey modes, HxWx3 for colour. Alpha is dropped.

    Scaling by mode: 8-bit / 255; `I;16*` / 65535; `I` (32-bit int, how some Pillow versions
    open 16-bit PNGs) / 65535 when it fits in 16 bits, else min-max; `F` as is when it already
    lies in [0, 1], else min-max (a float image has no fixed white level). NaN becomes 0.
    """
    mode = im.mode
    if mode in ("RGBA", "LA"):
        im = im.convert(mode[:-1])
        mode = im.mode
    if mode in _SIXTEEN_BIT:
        return (np.asarray(im).astype(np.float32) / 65535.0).astype(np.float32)
    a = np.asarray(im)
    if mode == "I":
        a = a.astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            return _minmax(a)
        return (a / 65535.0).astype(np.float32)
    if mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if a.size and (a.min() < 0 or a.max() > 1):
            return _minmax(a)
        return a.astype(np.float32)
    if a.dtype != np.uint8:  # unexpected, but never silently mis-scale
        raise ValueError(f"unexpected pixel type {a.dtype} for mode {mode}")
    return from_uint8(a)


def from_uint8(a: np.ndarray) -> np.ndarray:
    """8-bit pixels as float32 in [0, 1], as an 8-bit image file is read (`read_rgb`)."""
    return np.asarray(a).astype(np.float32) / np.float32(255.0)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


# ITU-R BT.601 luma, the weights Pillow's own "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def read_rgb(
    source: Source, name: str | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Any readable image as float32 HxWx3 RGB in [0, 1]; `size=(h, w)` resizes bilinearly."""
    a = image_to_array(open_image(source, name))
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return resize(a, size) if size is not None else a


def read_gray(
    source: Source, name: str | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Any readable image as float32 HxW in [0, 1] (colour reduced with BT.601 luma)."""
    a = image_to_array(open_image(source, name))
    if a.ndim == 3:
        a = np.clip(a @ _LUMA, 0.0, 1.0).astype(np.float32)
    return resize(a, size) if size is not None else a


def resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float HxW or HxWxC array to `size=(h, w)`, channel by channel.

    Done in Pillow's 32-bit float mode so nothing is quantised to 8 bits on the way (outputs
    are written back at the input's size with this). Pillow's bilinear filter widens with the
    scale factor, so downscaling averages instead of aliasing.
    """
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"resize: size must be positive, got {size}")
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise ValueError(f"resize: expected HxW or HxWxC, got shape {a.shape}")
    if a.shape[:2] == (h, w):
        return a.astype(np.float32, copy=False)
    if a.ndim == 2:
        return _resize_plane(a, h, w)
    return np.stack([_resize_plane(a[:, :, c], h, w) for c in range(a.shape[2])], axis=2)


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 HxWx3 image resized (bilinear) to `size=(h, w)` in Pillow's 8-bit mode: within
    one grey level of `resize` (the float path), several times faster on a camera's frame,
    which is why `stream` feeds the model through it (benchmarks/stream.py)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.Resampling.BILINEAR))


def _resize_plane(plane: np.ndarray, h: int, w: int) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32).copy()


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 (rounded, clipped, NaN -> 0); uint8 input is returned as is."""
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a
    a = np.nan_to_num(a.astype(np.float32), nan=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _as_pil(arr: np.ndarray) -> Image.Image:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected a grey HxW or RGB HxWx3 image, got shape {a.shape}")
    return Image.fromarray(np.ascontiguousarray(to_uint8(a)))


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a grey HxW or RGB HxWx3 image (float in [0, 1] or uint8)."""
    buf = io.BytesIO()
    _as_pil(arr).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Write a PNG atomically (temp file + rename: readers never see half an image)."""
    return write_bytes_atomic(path, encode_png(arr))


# Magma (matplotlib / BIDS colormaps, CC0), 17 stops of the 256-entry table as uint8 RGB.
# Chosen because its lightness rises monotonically, so a depth tile reads like the grey it was
# stored as (bright = far for a far-bright model, near for a near-bright one: `depth_legend`
# says which), and it stays readable in greyscale print.
_MAGMA_STOPS = np.array(
    [
        [0, 0, 4], [10, 8, 34], [29, 17, 71], [54, 16, 107], [81, 18, 124], [106, 28, 129],
        [131, 38, 129], [156, 46, 127], [183, 55, 121], [208, 65, 111], [231, 82, 99],
        [245, 107, 92], [252, 138, 98], [254, 169, 115], [254, 202, 141], [253, 227, 165],
        [252, 253, 191],
    ],
    np.float32,
)
_MAGMA_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_MAGMA_STOPS)), _MAGMA_STOPS[:, c])
     for c in range(3)],
    axis=1,
).round().astype(np.uint8)


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth HxW in [0, 1] to a uint8 HxWx3 magma image: 0 dark, 1 bright (what that means is the
    model's depth convention: put `depth_legend(convention)` over the tile)."""
    d = np.asarray(depth)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[:, :, 0]
    if d.ndim != 2:
        raise ValueError(f"colorize_depth: expected HxW, got shape {d.shape}")
    return _MAGMA_LUT[to_uint8(d)]


def depth_legend(convention: str = ORIGINAL_DEPTH_CONVENTION) -> Legend:
    """What magma's two ends mean on a depth tile of a model (or data set) whose depth grey runs
    as `convention` says (`toolkit.core.spec.DEPTH_CONVENTIONS`): "far" at the bright end for
    far-bright depth (the original's), "near" there for near-bright."""
    check_depth_convention(convention)
    return Legend(_MAGMA_LUT, "near", "far") if convention == "far-bright" else Legend(_MAGMA_LUT, "far", "near")


def magma_legend(low: str, high: str) -> Legend:
    """A colour bar for any tile drawn with `colorize_depth` (a difference map: "0" to its max)."""
    return Legend(_MAGMA_LUT, low, high)


def _as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    a = to_uint8(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"make_panel: expected HxW or HxWx3 tiles, got shape {a.shape}")
    return a


def _to_height(tile: np.ndarray, height: int) -> np.ndarray:
    """Aspect kept; a whole-number enlargement is nearest-neighbour, so each model pixel stays
    a visible square instead of a blur."""
    h, w = tile.shape[:2]
    if h == height:
        return tile
    filt = Image.Resampling.NEAREST if height % h == 0 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(tile).resize((max(1, round(w * height / h)), height), filt))


def make_panel(images: Sequence[np.ndarray], labels: Sequence[str], gap: int = 2, *,
               legends: Sequence[Legend | None] | None = None, min_height: int = 0) -> np.ndarray:
    """Tiles side by side at a common height (the tallest), each under its label: one row of
    `make_grid`. Pass `legends=[..., depth_legend(convention)]` to put a near/far bar over a depth tile."""
    return make_grid([images], labels, gap, legends=legends, min_height=min_height)


def make_grid(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], gap: int = 2, *,
              legends: Sequence[Legend | None] | None = None, min_height: int = 0) -> np.ndarray:
    """Rows of tiles, a column per label, at one height under one band of labels and legends.

    For a person comparing inputs and outputs at a glance: grey tiles become RGB, floats in
    [0, 1] become uint8, aspect ratios are kept, and tiles shorter than `min_height` are
    enlarged by a whole factor (a 32 px training tile is otherwise too small to see). Labels
    are wrapped or shortened to their tile's width and legends get rows of their own, so no
    text overlaps at any tile size (`pictures` lays it out).
    """
    legends = [None] * len(labels) if legends is None else list(legends)
    if not rows or not rows[0]:
        raise ValueError("make_panel: no images")
    if any(len(row) != len(labels) for row in rows) or len(legends) != len(labels):
        raise ValueError(f"make_panel: {len(rows[0])} images, {len(labels)} labels, {len(legends)} legends")
    tiles = [[_as_rgb_uint8(i) for i in row] for row in rows]
    tallest = max(t.shape[0] for row in tiles for t in row)
    height = tallest * max(1, -(-int(min_height) // tallest))
    scaled = [[_to_height(t, height) for t in row] for row in tiles]
    return compose(scaled, [str(s) for s in labels], legends, gap)


def to_nchw(images: Sequence[np.ndarray]) -> np.ndarray:
    """A list of HxWx3 (or HxW) arrays of one size to a float32 `[N, C, H, W]` batch."""
    if len(images) == 0:
        raise ValueError("to_nchw: no images")
    arrs = [np.asarray(i, dtype=np.float32) for i in images]
    arrs = [a[:, :, None] if a.ndim == 2 else a for a in arrs]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1 or arrs[0].ndim != 3:
        raise ValueError(f"to_nchw: images must share one HxWxC shape, got {sorted(shapes)}")
    return np.ascontiguousarray(np.stack(arrs).transpose(0, 3, 1, 2))


def from_nchw(batch: np.ndarray, squeeze: bool = True) -> list[np.ndarray]:
    """A `[N, C, H, W]` batch back to a list of HxWxC arrays (HxW when C == 1 and `squeeze`)."""
    b = np.asarray(batch)
    if b.ndim != 4:
        raise ValueError(f"from_nchw: expected [N, C, H, W], got shape {b.shape}")
    out = [np.ascontiguousarray(x.transpose(1, 2, 0)) for x in b]
    if squeeze and b.shape[1] == 1:
        out = [x[:, :, 0] for x in out]
    return out
