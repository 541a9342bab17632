"""What `stream` draws per frame, in uint8 at the output's size: the mask overlay, or the panel.

Layouts (`--layout`):
  * ``panel`` (the default): frame | mask overlay | depth colour map under one band of labels
    and the depth legend: for review, what `stream` has always written;
  * ``overlay``: the frame with the person tinted, at the camera's size: for live use, a third
    of the pixels to encode.

Why uint8: the float compose (mask and depth resized as float32 images, blended in float, the
colour map through a float copy, the labels drawn again every frame) took 36 ms of a 1280x720
frame's time on a 2-core box, three times the model's. Here the mask and depth are resized as
8-bit grey (Pillow, bilinear), the tint is Pillow's masked paste with an alpha look-up table, the
colour map is a palette, and the label band is drawn once per stream: the same picture within
one grey level (tests/deploy/test_compose.py holds it to the float formula), in C.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..core.errors import UserError
from ..core.spec import ORIGINAL_DEPTH_CONVENTION
from ..render import imageio, pictures

LAYOUTS = ("panel", "overlay")
OVERLAY_RGB = (40, 220, 90)  # the mask's tint: green reads on skin and shelves alike
OVERLAY_ALPHA = 0.6
PANEL_LABELS = ("frame", "mask", "depth")
GAP = 2  # px between the panel's tiles (as `imageio.make_panel`)
ALPHA_LUT = [int(OVERLAY_ALPHA * v + 0.5) for v in range(256)]  # mask grey -> the tint's weight


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def grey(values: np.ndarray, size: tuple[int, int] | None = None) -> Image.Image:
    """A [0, 1] map (NaN as 0, clipped: `imageio.to_uint8`) as an 8-bit grey image, resized
    (bilinear) to `size` (h, w) when given."""
    im = Image.fromarray(imageio.to_uint8(values))
    if size is None:
        return im
    h, w = size
    return im if im.size == (w, h) else im.resize((w, h), Image.Resampling.BILINEAR)


def mask_at(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The model's mask at `size` (h, w) as the float resize gives it, NaN as 0, in [0, 1]:
    what `--masks-dir` writes (as it always has; the pictures use the 8-bit `grey`)."""
    return np.clip(imageio.resize(np.nan_to_num(mask), size), 0.0, 1.0)


def tinted_box(mask8: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) at `size` that holds every pixel a bilinear resize of `mask8` makes
    non-zero (its non-zero pixels, grown by the filter's reach), or None when it is all zero."""
    rows, cols = np.flatnonzero(mask8.any(axis=1)), np.flatnonzero(mask8.any(axis=0))
    if rows.size == 0:
        return None
    (mh, mw), (h, w) = mask8.shape, size
    reach_y, reach_x = int(np.ceil(max(1.0, mh / h))) + 1, int(np.ceil(max(1.0, mw / w))) + 1  # source px a target px reads
    y0, y1 = max(0, rows[0] - reach_y), min(mh, rows[-1] + 1 + reach_y)
    x0, x1 = max(0, cols[0] - reach_x), min(mw, cols[-1] + 1 + reach_x)
    return int(x0 * w // mw), int(y0 * h // mh), int(-(-x1 * w // mw)), int(-(-y1 * h // mh))


def blend_weights(mask: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    """The tint's weight inside `box` of a picture of `size` (h, w): the grey `mask` resized over
    the whole picture, only the box computed, with the same pixels' centres as a whole resize."""
    x0, y0, x1, y1 = box
    (mw, mh), (h, w) = mask.size, size
    source = (x0 * mw / w, y0 * mh / h, x1 * mw / w, y1 * mh / h)
    return mask.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=source).point(ALPHA_LUT)


def blend_in(target: np.ndarray, alpha: Image.Image, box: tuple[int, int, int, int], tint: int | tuple[int, ...]) -> None:
    """Blend `tint` into `target` (uint8 HxW or HxWx3, in place) inside `box` (`tinted_box` at
    the target's size), weighted by `alpha` (`blend_weights` for that box)."""
    x0, y0, x1, y1 = box
    region = Image.fromarray(np.ascontiguousarray(target[y0:y1, x0:x1]))
    region.paste(tint, None, alpha)  # the blend Image.composite does, without its copy
    target[y0:y1, x0:x1] = np.asarray(region)


def tile_lefts(w: int) -> list[int]:
    """Where the panel's tiles (frame, overlay, depth; each `w` wide) start, left to right."""
    return [i * (w + GAP) for i in range(len(PANEL_LABELS))]


class Composer:
    """Draws one stream's frames in `layout` at `size` (h, w: the camera tile's), reusing one
    canvas: what `compose` returns is overwritten by the next call (copy it to keep it)."""

    def __init__(self, layout: str, size: tuple[int, int], depth_convention: str = ORIGINAL_DEPTH_CONVENTION):
        self.layout = check_layout(layout)
        self.size = (int(size[0]), int(size[1]))
        h, w = self.size
        self.palette = imageio.colorize_depth(np.arange(256, dtype=np.uint8)[None, :] / 255.0)[0].reshape(-1).tolist()
        self.band_height = 0
        self._canvas: np.ndarray | None = None
        if self.layout == "panel":
            legends = [None, None, imageio.depth_legend(depth_convention)]
            band = pictures.label_band([w] * 3, list(PANEL_LABELS), legends, GAP)
            self.band_height = band.shape[0]
            self._canvas = np.empty((band.shape[0] + h, band.shape[1], 3), np.uint8)
            self._canvas[:] = pictures.BACKGROUND
            self._canvas[: band.shape[0]] = band

    @property
    def canvas(self) -> np.ndarray | None:
        """The panel's canvas: the label band over the background colour, the tiles as last
        drawn (None for the overlay layout)."""
        return self._canvas

    @property
    def out_size(self) -> tuple[int, int]:
        """(h, w) of what `compose` returns."""
        return self.size if self._canvas is None else (self._canvas.shape[0], self._canvas.shape[1])

    def overlay(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The frame (uint8 at `size`) with the mask tinted in. Only the box around the mask's
        non-zero pixels is resized and blended (a person covers a few percent of a camera's
        picture): outside it the tint's weight is 0, so the frame is the answer there."""
        small = grey(mask)
        box = tinted_box(np.asarray(small), self.size)
        if box is None:
            return frame
        out = frame.copy()
        blend_in(out, blend_weights(small, box, self.size), box, OVERLAY_RGB)
        return out

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """The depth map's colour picture at `size` (magma: `imageio.colorize_depth`'s table)."""
        im = grey(depth, self.size)
        im.putpalette(self.palette)
        return np.asarray(im.convert("RGB"))

    def compose(self, frame: np.ndarray, mask: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """`frame` (uint8 HxWx3 at `size`) and the model's mask and depth (any size) in the layout."""
        if frame.shape[:2] != self.size:
            raise ValueError(f"compose: frame is {frame.shape[:2]}, the layout is {self.size}")
        overlay = self.overlay(frame, mask)
        if self._canvas is None:
            return overlay
        h, w = self.size
        top, canvas = self.band_height, self._canvas
        for left, tile in zip(tile_lefts(w), (frame, overlay, self.depth(depth))):
            canvas[top : top + h, left : left + w] = tile
        return canvas


def compose_panel(frame: np.ndarray, mask: np.ndarray, depth: np.ndarray,
                  depth_convention: str = ORIGINAL_DEPTH_CONVENTION) -> tuple[np.ndarray, np.ndarray]:
    """One panel (frame | overlay | depth at the frame's size) and the mask at that size, for a
    single picture; a stream keeps one `Composer` instead (its label band drawn once)."""
    panel = Composer("panel", frame.shape[:2], depth_convention).compose(frame, mask, depth).copy()
    return panel, mask_at(mask, frame.shape[:2])
