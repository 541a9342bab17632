"""Temporal stability of a stream: how much the mask flickers, and a smoothing that steadies it.

Flicker is the mean absolute change of the predicted mask between consecutive frames, over the
pixels where nothing changed: with true masks, where the truth did not change; without labels
(real footage), where the input frame itself did not change (every channel within
`STILL_THRESHOLD`). A model that is stable on a still scene scores near 0; the figure is in
`stream`'s summary and `--json`.

`--smooth ALPHA` keeps an exponential moving average of mask and depth: each output is `ALPHA`
x the previous output + (1 - ALPHA) x this frame's. It trades flicker for lag on moving edges;
`benchmarks/temporal.py` measures both (flicker and IoU against the truth, with and without).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UserError

STILL_THRESHOLD = 2.0 / 255.0  # an input pixel that changed less than this (any channel) is still


class Smoother:
    """Exponential moving average of (mask, depth); `alpha` 0 passes frames through."""

    def __init__(self, alpha: float):
        if not 0.0 <= alpha < 1.0:
            raise UserError(f"--smooth must be in [0, 1) (the weight of the previous frame), got {alpha}")
        self.alpha = alpha
        self._state: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, mask: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.alpha == 0.0:
            return mask, depth
        if self._state is None or self._state[0].shape != mask.shape:
            self._state = (mask.astype(np.float32), depth.astype(np.float32))
        else:
            a = self.alpha
            self._state = (a * self._state[0] + (1 - a) * mask, a * self._state[1] + (1 - a) * depth)
        return self._state

    def reset(self) -> None:
        """Forget the history (the background changed: the old outputs no longer apply)."""
        self._state = None


class FlickerMeter:
    """Mean |mask_t - mask_t-1| over still pixels, averaged over the frame pairs seen."""

    def __init__(self) -> None:
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self.total = 0.0
        self.pairs = 0

    def add(self, frame: np.ndarray, mask: np.ndarray, still: np.ndarray | None = None) -> float | None:
        """`frame` HxWx3 in [0, 1] and its mask HxW at the same size; `still` (bool HxW): the
        pixels known not to have changed (from true masks), else taken from the frames. Returns
        this frame's flicker (None for the first, or when no pixel stayed still)."""
        change = None
        if self._previous is not None and self._previous[0].shape == frame.shape:
            last_frame, last_mask = self._previous
            if still is None:
                still = np.abs(frame - last_frame).max(axis=-1) < STILL_THRESHOLD
            if still.any():
                change = float(np.abs(mask - last_mask)[still].mean())
                self.total += change
                self.pairs += 1
        self._previous = (frame, mask)
        return change

    @property
    def value(self) -> float | None:
        """The flicker figure (None before two frames with still pixels)."""
        return self.total / self.pairs if self.pairs else None
