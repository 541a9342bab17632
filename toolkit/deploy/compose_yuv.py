"""The stream's pictures drawn on the decoder's YUV planes, for an encoder that takes them as
they are.

Why: an RGB picture costs the video twice over at 720p: FFmpeg's RGB conversion of the frame
(1.1 ms), then PyAV's copy of the picture into a frame (2.1) and FFmpeg's RGB -> YUV for the
encoder (2.5; 6.2 and 9.8 for the 3840-wide panel), mostly holding Python's lock while the
model's thread needs it. Drawn on the planes, the same pictures cost two copies of the planes
(ours, and PyAV's into the encoder's frame: 0.2 ms at 720p) and the blend around the person;
measured at 720p, interleaved (benchmarks/README.md): the overlay 28.5 -> 32.8 frames/s, the
panel 19.5 -> 22.8.

The same pictures as `compose.Composer` draws, within the 4:2:0 encoding both go through: the
tint is the same blend (linear, so it is the same in YUV) at each plane's resolution; the colour
map and the label band are converted once per stream. tests/deploy/test_compose_yuv.py compares
both after the same 4:2:0 round trip.
"""

from __future__ import annotations

import numpy as np

from .compose import GAP, OVERLAY_RGB, Composer, blend_in, blend_weights, grey, tile_lefts, tinted_box
from .decoded import MATRIX_TAG, Planes, rgb_to_yuv


def _levels(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


class YuvComposer:
    """`composer`'s layout, drawn on `Planes` in `matrix` (a `decoded.YUV_TO_RGB` key). Like
    `Composer`, what `compose` returns is overwritten by the next call. `fits(composer)` says
    whether a layout can be drawn so at all (4:2:0 needs even sizes and even tile offsets)."""

    def __init__(self, composer: Composer, matrix: str):
        self.composer, self.matrix = composer, matrix
        self.size = composer.size
        self._tint = [int(v) for v in _levels(rgb_to_yuv(OVERLAY_RGB, matrix))]
        palette = np.asarray(composer.palette, np.float64).reshape(256, 3)
        self._luts = [lut.tolist() for lut in _levels(rgb_to_yuv(palette, matrix)).T]  # Y, U, V per grey level
        self._canvas: Planes | None = None
        if composer.canvas is not None:  # the band and the gaps, converted once
            self._canvas = _to_planes(composer.canvas, matrix)

    @staticmethod
    def fits(composer: Composer) -> bool:
        """Even tiles under an even band (GAP is even): every tile and the picture are then even."""
        h, w = composer.size
        return not (h % 2 or w % 2 or composer.band_height % 2 or GAP % 2)

    def compose(self, frame: Planes, mask: np.ndarray, depth: np.ndarray) -> Planes:
        """`frame` (at `size`, drawn on in place for the overlay layout) with the mask and depth."""
        if frame.size != self.size:
            raise ValueError(f"compose: frame is {frame.size}, the layout is {self.size}")
        if self._canvas is None:
            self._tint_in(frame.y, frame.u, frame.v, mask)
            return frame
        h, w = self.size
        top, canvas = self.composer.band_height, self._canvas
        tiles = [_tile(canvas, top, left, h, w) for left in tile_lefts(w)]
        for target in tiles[:2]:
            for plane, source in zip(target, (frame.y, frame.u, frame.v)):
                plane[:] = source
        self._tint_in(*tiles[1], mask)
        self._depth_in(tiles[2], depth)
        return canvas

    def _tint_in(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, mask: np.ndarray) -> None:
        """`Composer.overlay`'s blend, on each plane at its own resolution, only in the box
        around the mask's non-zero pixels."""
        small = grey(mask)
        box = tinted_box(np.asarray(small), y.shape)
        if box is None:
            return
        blend_in(y, blend_weights(small, box, y.shape), box, self._tint[0])
        box = tinted_box(np.asarray(small), u.shape)  # U and V: one size, one box, one weight map
        alpha = blend_weights(small, box, u.shape)
        for plane, tint in ((u, self._tint[1]), (v, self._tint[2])):
            blend_in(plane, alpha, box, tint)

    def _depth_in(self, tile: tuple[np.ndarray, np.ndarray, np.ndarray], depth: np.ndarray) -> None:
        """The colour map (`Composer.depth`'s palette) looked up per plane from the depth in grey."""
        full, half = grey(depth, tile[0].shape), grey(depth, tile[1].shape)  # U and V share the half-size map
        for plane, lut, image in zip(tile, self._luts, (full, half, half)):
            plane[:] = np.asarray(image.point(lut))


def _tile(canvas: Planes, top: int, left: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of one tile's three planes in `canvas` (top, left, h, w even: in luma pixels)."""
    return (canvas.y[top : top + h, left : left + w],
            canvas.u[top // 2 : (top + h) // 2, left // 2 : (left + w) // 2],
            canvas.v[top // 2 : (top + h) // 2, left // 2 : (left + w) // 2])


def _to_planes(rgb: np.ndarray, matrix: str) -> Planes:
    """An even-sized uint8 RGB picture as 4:2:0 planes (chroma: the mean of each 2x2 block)."""
    h, w = rgb.shape[:2]
    yuv = rgb_to_yuv(rgb.astype(np.float64), matrix)
    out = Planes.blank(h, w, MATRIX_TAG[matrix])
    out.y[:] = _levels(yuv[..., 0])
    for i, plane in ((1, out.u), (2, out.v)):
        plane[:] = _levels(yuv[..., i].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    return out
