"""Writing a run's `last.pt` and `best.pt`, so that a kill at any moment leaves a resumable run.

Why a class of its own: the guarantees live in the details. Every write is atomic and carries
the payload's SHA-256 (`toolkit.net.checkpoint.save_checkpoint`), so a kill mid-write leaves the
previous file intact and only a temporary behind, which the next run removes. After an epoch
that improved, best.pt is written before last.pt: a kill between the two leaves last.pt at the
previous epoch, so the resumed run redoes this one and writes both again. Only rank 0 writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from toolkit.net.checkpoint import make_checkpoint, save_checkpoint

from .components import TrainComponents
from .config import TrainConfig
from .distributed import Group
from .state import training_state

__all__ = ["RUN_FILES", "Checkpointer", "remove_previous_run", "remove_stale_temporaries"]

# What a run writes into its folder besides its synthetic data set (`data/`, reused by a new run).
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "samples.png", "curves.png", "tensorboard")


def remove_stale_temporaries(out: Path) -> None:
    """Checkpoint temporaries left by a killed run (atomic writes never got to rename them)."""
    for stale in [*out.glob(".last.pt.*.tmp"), *out.glob(".best.pt.*.tmp")]:
        stale.unlink(missing_ok=True)


def held_checkpoints(out: Path) -> list[str]:
    """Which of `last.pt` and `best.pt` the folder holds: whether it holds a run."""
    return [name for name in ("last.pt", "best.pt") if (out / name).exists()]


def remove_previous_run(out: Path) -> list[str]:
    """`--force`: the checkpoints and logs of the run the folder held, removed before the new run
    starts, so none of them is taken for the new run's (an old best.pt beside a new last.pt).
    Returns the names removed; a folder that holds no run (no `last.pt`, no `best.pt`) is left
    as it is: its `metrics.csv` or `tensorboard/` are someone else's."""
    if not held_checkpoints(out):
        return []
    removed = []
    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


class Checkpointer:
    """The checkpoints of one run folder, written from the run's current state (`parts.pos`)."""

    def __init__(self, out: Path, parts: TrainComponents, config: TrainConfig, group: Group, cuda: bool):
        self.last, self.best = out / "last.pt", out / "best.pt"
        self.parts, self.config, self.group, self.cuda = parts, config, group, cuda
        self.written: list[Path] = []  # checkpoints this invocation wrote
        self.last_step: int | None = None  # the step of the last.pt it wrote last

    def save(self, path: Path, metrics: dict[str, Any]) -> None:
        """Write the run as it stands to `path`, the averaged weights as its model under EMA (the
        optimiser's own weights then travel in the training state for `--resume`)."""
        if not self.group.main:
            return
        p = self.parts
        self.written.append(path)
        state = training_state(p.optimizer, p.scheduler, self.config, p.pos, self.cuda, data=p.data.counts)
        state["world"] = self.group.world
        if p.ema is not None:
            state["live_model"] = {k: v.detach().cpu() for k, v in p.model.net.state_dict().items()}
            state["ema_updates"] = p.ema.updates
        weights = (p.ema.module if p.ema is not None else p.model.net).state_dict()
        save_checkpoint(path, make_checkpoint(weights, p.spec, epoch=p.pos.epoch, step=p.pos.step, recipe=p.recipe.name,
                                              source="toolkit train", metrics=metrics, training=state,
                                              tail_stats=p.model.net.tail_stats))
        if path == self.last:
            self.last_step = p.pos.step

    def save_epoch(self, row: dict[str, Any], improved: bool) -> None:
        """The end of an epoch (or of a partial one at --max-steps)."""
        if improved:  # best.pt first: a kill between the two writes then redoes this epoch
            self.save(self.best, row)
        self.save(self.last, row)

    def ensure_last(self, history: list[dict[str, Any]]) -> None:
        """A resumed finished run into a new folder still gets its last.pt."""
        if not self.last.exists():
            self.save(self.last, history[-1] if history else {})
