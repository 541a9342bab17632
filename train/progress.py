"""A Rich progress bar per epoch showing the running loss and images per second.

Kept apart from the loop so the loop reads as training, and so `enabled=False` (tests) turns
every call into nothing. When the console is not a terminal (stderr redirected to a file, a CI
log) a live bar cannot redraw: Rich then prints every bar only when the run ends, after the
epoch lines they belong before. There, each epoch is one plain line written as it ends.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class EpochProgress:
    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True, highlight=False)
        self._progress: Progress | None = None
        self._task = None
        self._loss = 0.0
        self._images = 0
        self._t0 = 0.0
        self._plain: tuple[str, int, int] | None = None  # not a terminal: (epoch, steps done, total)

    def print(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, markup=False, soft_wrap=True)  # whole lines, also when piped

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self._loss, self._images, self._t0 = 0.0, 0, time.perf_counter()
        if not self.console.is_terminal:
            self._plain = (f"{epoch}/{epochs}", done, total)
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.1f} img/s"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=done,
                                             epoch=f"{epoch}/{epochs}", loss=float("nan"), ips=0.0)

    def step(self, loss: float, images: int) -> None:
        if self._plain is None and (self._progress is None or self._task is None):
            return
        # An exponential average reads steadier than the last batch's loss.
        self._loss = loss if self._images == 0 else 0.9 * self._loss + 0.1 * loss
        self._images += images
        ips = self._images / max(time.perf_counter() - self._t0, 1e-9)
        if self._plain is not None:
            epoch, done, total = self._plain
            self._plain = (epoch, done + 1, total)
        else:
            self._progress.update(self._task, advance=1, loss=self._loss, ips=ips)  # type: ignore[union-attr]

    def end_epoch(self) -> None:
        if self._plain is not None:
            epoch, done, total = self._plain
            seconds = time.perf_counter() - self._t0
            self.print(f"epoch {epoch}: {done}/{total} steps, loss {self._loss:.4f}, "
                       f"{self._images / max(seconds, 1e-9):.1f} img/s, {seconds:.1f} s")
            self._plain = None
        if self._progress is not None and self._task is not None:
            self._progress.stop_task(self._task)
            self._task = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
