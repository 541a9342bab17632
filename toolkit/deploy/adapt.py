"""A background that follows the scene: slow light changes by a running update, sudden ones
(the light switched, the camera bumped) by relearning.

The model compares each frame with the background; a stale background shows up as a large
difference on the pixels the model calls background (mask below `BACKGROUND_MASK`), where frame
and background should agree.

* `--bg-update RATE`: on those pixels the background moves `RATE` of the way to the frame at
  every frame (an exponential running average; 0 keeps it fixed). Person pixels never leak in.
* Stale detection: when the mean difference on background pixels stays above `stale_level` for
  `stale_frames` frames in a row, the background is relearnt as the per-pixel median of the next
  `relearn_frames` frames, taken at each pixel over the frames where the model called it
  background (a person who walks slowly stays on the same pixels for many frames: a plain median
  would learn them into the background); a pixel the model called person in every one of those
  frames takes the plain median. One line with the frame number says so.

The model's runner gets the new background (and, with halves, recomputes its features) at
most every `push_every` frames, and at once after a relearn: the background half is run then,
not on every frame.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import UserError

BACKGROUND_MASK = 0.3  # a pixel the model gives less than this is background


@dataclass
class Adaptation:
    rate: float = 0.0  # --bg-update
    relearn: bool = True  # --bg-relearn: detect a stale background and relearn it
    stale_level: float = 0.08  # mean |frame - bg| on background pixels ([0, 1] units) that is "stale"
    stale_frames: int = 8  # ... for this many frames in a row
    relearn_frames: int = 8  # the median of this many frames is the new background
    push_every: int = 10  # frames between running updates handed to the model

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise UserError(f"--bg-update must be in [0, 1] (the share of each frame taken into the background), got {self.rate}")
        if self.stale_frames < 1 or self.relearn_frames < 1 or self.push_every < 1:
            raise UserError("stale_frames, relearn_frames and push_every must be positive")


@dataclass
class BackgroundTracker:
    """The background at the model's size (HxWx3 float in [0, 1]) and how it changes with the frames."""

    background: np.ndarray
    settings: Adaptation = field(default_factory=Adaptation)
    events: list[str] = field(default_factory=list)  # one line per relearn
    frame: int = 0
    _stale_run: int = 0
    _relearning: list[tuple[np.ndarray, np.ndarray]] | None = None
    _since_push: int = 0

    def observe(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        """One frame (HxWx3, [0, 1], the model's size) and the model's mask for it (HxW); the
        background to hand the model now, or None to keep the one it has."""
        self.frame += 1
        s = self.settings
        if self._relearning is not None:
            self._relearning.append((frame, mask < BACKGROUND_MASK))
            if len(self._relearning) < s.relearn_frames:
                return None
            self.background = masked_median([f for f, _ in self._relearning], [b for _, b in self._relearning])
            self._relearning, self._stale_run, self._since_push = None, 0, 0
            self.events.append(f"frame {self.frame}: background relearnt (median of frames {self.frame - s.relearn_frames + 1}-{self.frame})")
            return self.background
        background_pixels = mask < BACKGROUND_MASK
        if not background_pixels.any():
            return None
        gap = float(np.abs(frame - self.background).mean(axis=-1)[background_pixels].mean())
        self._stale_run = self._stale_run + 1 if gap > s.stale_level and s.relearn else 0
        if self._stale_run >= s.stale_frames:  # the light switched or the camera moved: relearn
            self.events.append(f"frame {self.frame}: background stale (mean difference {gap:.3f} on background pixels "
                               f"for {s.stale_frames} frames): relearning from the next {s.relearn_frames}")
            self._relearning = []
            return None
        if s.rate > 0:
            keep = background_pixels[..., None]
            self.background = np.where(keep, self.background + s.rate * (frame - self.background), self.background).astype(np.float32)
            self._since_push += 1
            if self._since_push >= s.push_every:
                self._since_push = 0
                return self.background
        return None


def masked_median(frames: list[np.ndarray], background: list[np.ndarray]) -> np.ndarray:
    """Per pixel, the median of `frames` (HxWx3) over those where `background` (HxW bool) holds;
    the median of all of them where it never does."""
    stack = np.stack(frames).astype(np.float32)
    keep = np.stack(background)[..., None]  # [N, H, W, 1]
    masked = np.where(keep, stack, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: filled below
        out = np.nanmedian(masked, axis=0)
    return np.where(np.isnan(out), np.median(stack, axis=0), out).astype(np.float32)
