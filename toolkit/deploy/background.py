"""The background a fixed camera sees: a photo of the empty scene, or learnt from the stream.

Why a module: the network needs `bg` next to every frame, and at the edge there are two honest
sources for it — an image taken when the scene was empty, or the per-pixel median of the first
frames (a person who moves is in any one pixel for less than half of them, so the median sees
through them). Both end up as one uint8 HxWx3 array at the stream's frame size.

Decision on a background image of another size than the frames: it is resized to the frame
size (bilinear) and the report says so, rather than refused — a still taken in the camera's
photo mode is the same scene at another resolution. A different aspect ratio is called out in
the note, because it usually means the wrong image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..render import imageio


def load_background(path: str | Path, frame_hw: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The background image as uint8 HxWx3 at `frame_hw`, and a note saying what was used."""
    path = Path(path)
    bg = imageio.read_rgb(path)
    h, w = bg.shape[:2]
    fh, fw = frame_hw
    note = f"background: {path} ({w}x{h})"
    if (h, w) != (fh, fw):
        bg = imageio.resize(bg, (fh, fw))
        note += f", resized to the frames' {fw}x{fh}"
        if abs(w / h - fw / fh) > 0.02 * (fw / fh):
            note += f" (aspect ratio {w / h:.2f} vs the frames' {fw / fh:.2f}: is it the same camera?)"
    return imageio.to_uint8(bg), note


def median_background(frames: Sequence[np.ndarray], wanted: int) -> tuple[np.ndarray, str]:
    """Per-pixel median of `frames` (uint8 HxWx3, one size) and a note saying how many were used.

    Done in row chunks so a few hundred HD frames do not need a float copy of the whole stack.
    """
    if not frames:
        raise UserError("the stream has no frames to learn the background from")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise UserError(f"the first {len(frames)} frames do not share one size ({sorted(shapes)})")
    stack = np.stack([np.asarray(f, np.uint8) for f in frames])
    out = np.empty(stack.shape[1:], np.uint8)
    step = max(1, (1 << 24) // max(1, stack[0, :1].size * len(frames)))
    for r in range(0, stack.shape[1], step):
        out[r : r + step] = np.median(stack[:, r : r + step], axis=0).round().astype(np.uint8)
    note = f"background: per-pixel median of the first {len(frames)} frame(s)"
    if len(frames) < wanted:
        note += f" (asked for {wanted}; the stream has only {len(frames)})"
    return out, note
