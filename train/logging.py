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

from toolkit.core.fsutil import atomic_path, write_text_atomic
from toolkit.core.spec import ORIGINAL_DEPTH_CONVENTION

# The figures a reader looks at first lead, depth by RMSE, AbsRel and delta1 (`train.step.METRIC_NAMES`).
FIRST_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_mask_loss", "train_depth_loss", "val_loss", "val_mask_iou",
                 "val_mask_dice", "val_depth_rmse", "val_depth_absrel", "val_depth_delta1", "val_depth_mae")


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


SAMPLE_COLUMNS = ("bg", "fgbg", "mask_pred", "mask", "depth_pred", "depth")


SAMPLE_LABELS = ("bg", "fgbg", "mask pred", "mask true", "depth pred", "depth true")
SAMPLE_TILE = 128  # px: training sizes (32, 64) are enlarged by a whole factor to at least this


def sample_grid(arrays: Mapping[str, np.ndarray], max_rows: int = 4,
                depth_convention: str = ORIGINAL_DEPTH_CONVENTION) -> np.ndarray:
    """bg | fgbg | mask pred | mask true | depth pred | depth true, a row per held-out image.

    Drawn by `imageio.make_grid` like every other panel, so it reads the same way: labelled
    columns, depth in infer's and parity's magma under a near/far bar (the data's `depth_convention`), masks grey, every tile
    on the fixed [0, 1] scale (nothing stretched per tile, so prediction and truth compare),
    and tiles enlarged to `SAMPLE_TILE` px (pixel for pixel) to be seen at all.
    """
    from toolkit.render import imageio

    rows = min(max_rows, min(int(arrays[k].shape[0]) for k in SAMPLE_COLUMNS))
    grid = [[_sample_tile(k, arrays[k][r]) for k in SAMPLE_COLUMNS] for r in range(rows)]
    legends = [imageio.depth_legend(depth_convention) if k.startswith("depth") else None for k in SAMPLE_COLUMNS]
    return imageio.make_grid(grid, SAMPLE_LABELS, legends=legends, min_height=SAMPLE_TILE)


def _sample_tile(name: str, x: np.ndarray) -> np.ndarray:
    """One [C, H, W] array in [0, 1] as an HxWxC tile; depth through the shared colour map."""
    from toolkit.render import imageio

    tile = np.clip(np.nan_to_num(np.asarray(x, np.float32)), 0.0, 1.0).transpose(1, 2, 0)
    return imageio.colorize_depth(tile) if name.startswith("depth") else tile


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
                 purge_step: int | None = None, depth_convention: str = ORIGINAL_DEPTH_CONVENTION):
        import sys

        self.out, self.enabled, self.samples = Path(out), enabled, samples
        self.depth_convention = depth_convention  # the run's data: which end of the depth legend is far
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
            grid = sample_grid(keep, depth_convention=self.depth_convention)
            write_png(self.out / "samples.png", grid)
            self.tb.image("samples", grid, step)
        from .curves import write_curves

        write_curves(self.out / "curves.png", history)

    def close(self) -> None:
        self.tb.close()
