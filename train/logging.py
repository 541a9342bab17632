"""What a run leaves to look at: `metrics.csv`, TensorBoard scalars and image grids,
`samples.png` and `curves.png` (`RunLogs` is the loop's one handle on all of them).

The CSV is rewritten whole from the run's history after every epoch (atomically), so after a
`--resume` it is exactly the history held in the checkpoint — no duplicated or lost rows.
TensorBoard is optional: without the package the run goes on with the CSV and says so once.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.fsutil import atomic_path, write_text_atomic

FIRST_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_mask_loss", "train_depth_loss", "val_loss")


def write_metrics_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> Path:
    """One row per finished epoch; columns are the union of the rows' keys, a fixed few first."""
    keys: list[str] = [k for k in FIRST_COLUMNS if any(k in row for row in history)]
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k, "")) for k in keys})
    return write_text_atomic(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.6g}"
    return v


class TensorBoard:
    """A lazily imported `SummaryWriter`, or nothing (with one message) when it is missing."""

    def __init__(self, log_dir: Path, enabled: bool = True, purge_step: int | None = None,
                 say: Callable[[str], None] = print):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            say("TensorBoard logging is off: the tensorboard package is not installed (pip install tensorboard)")
            return
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        """An [H, W, 3] uint8 picture."""
        if self.writer is not None:
            self.writer.add_image(tag, grid, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def _to_rgb8(x: np.ndarray) -> np.ndarray:
    """[C, H, W] in [0, 1] (C = 1 or 3) -> [H, W, 3] uint8."""
    x = np.clip(np.nan_to_num(np.asarray(x, np.float32)), 0.0, 1.0)
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    return (x.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


def samples_grid(columns: Sequence[np.ndarray], max_rows: int = 4, gap: int = 2) -> np.ndarray:
    """Arrays `[N, C, H, W]` side by side (one column each), up to `max_rows` images down."""
    rows = min(max_rows, min(int(c.shape[0]) for c in columns))
    h, w = columns[0].shape[-2:]
    grid = np.full((rows * (h + gap) - gap, len(columns) * (w + gap) - gap, 3), 255, np.uint8)
    for r in range(rows):
        for c, col in enumerate(columns):
            grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = _to_rgb8(col[r])
    return grid


SAMPLE_COLUMNS = ("bg", "fgbg", "mask_pred", "mask", "depth_pred", "depth")


def sample_grid(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """bg | fgbg | mask pred | mask true | depth pred | depth true, a row per image."""
    return samples_grid([arrays[k] for k in SAMPLE_COLUMNS])


def write_png(path: Path, picture: np.ndarray) -> Path:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return Path(path)


class RunLogs:
    """Everything a run writes besides checkpoints, in one place; a no-op on ranks other than 0.

    - per step: the mean training loss every `log_every` steps to TensorBoard (`train/loss`);
    - per epoch: the row to `metrics.csv` (rewritten whole) and TensorBoard (`epoch/...`), the
      held-out samples to `samples.png` and TensorBoard (`samples`), and `curves.png`;
    - `preview(grid, step)`: a sample grid every N steps between epochs.
    """

    def __init__(self, out: Path, *, enabled: bool = True, tensorboard: bool = True, samples: bool = True,
                 purge_step: int | None = None):
        import sys

        self.out, self.enabled, self.samples = Path(out), enabled, samples
        self.tb = TensorBoard(self.out / "tensorboard", enabled=enabled and tensorboard, purge_step=purge_step,
                              say=lambda m: print(m, file=sys.stderr))
        self.window: list[float] = []

    def step_loss(self, loss: float, step: int, every: int, lr: float | None = None) -> None:
        if not self.enabled:
            return
        self.window.append(loss)
        if step % every == 0:
            values = {"loss": sum(self.window) / len(self.window)}
            if lr is not None:
                values["lr"] = lr
            self.tb.scalars(values, step, prefix="train/")
            self.window.clear()

    def preview(self, grid: np.ndarray, step: int) -> None:
        if self.enabled:
            self.tb.image("preview", grid, step)

    def epoch(self, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]], step: int,
              keep: Mapping[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        write_metrics_csv(self.out / "metrics.csv", history)
        self.tb.scalars(row, step, prefix="epoch/")
        if self.samples and keep:
            grid = sample_grid(keep)
            write_png(self.out / "samples.png", grid)
            self.tb.image("samples", grid, step)
        from .curves import write_curves

        write_curves(self.out / "curves.png", history)

    def close(self) -> None:
        self.tb.close()
