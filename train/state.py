"""Everything `--resume` needs, as plain data that survives `torch.load(weights_only=True)`.

`checkpoint["training"]` holds the optimiser and scheduler state, every RNG the run may draw
from (torch CPU, CUDA, numpy, Python `random`), the config (its data path absolute), the
position inside the epoch, the best score so far, the epoch history and the data set's pair
counts. Numpy's and Python's RNG states are tuples holding arrays and big integers, which the
safe unpickler does not accept as such, so they are turned into tensors, ints and strings here
and back again on restore.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.core.errors import UserError
from toolkit.net.checkpoint import load_checkpoint

from .config import DEFAULTS, TRAJECTORY_FIELDS, TrainConfig
from .step import with_current_names

# Per-invocation options: a resumed run takes them from the new command line, not the checkpoint.
INVOCATION_FIELDS = ("max_steps", "device", "workers", "log_every", "tensorboard", "samples", "preview_every", "amp",
                     "channels_last", "compile", "force")


@dataclass
class Position:
    """Where training stands: `step` optimiser steps done in total; the next batch to run is
    batch `batch` of epoch `epoch` (both 0-based). After a whole epoch: (epoch + 1, 0)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_score: float = float("-inf")
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    # Loss sums of the epoch in progress, so its row after a resume covers the whole epoch.
    partial: dict[str, float] = field(default_factory=dict)
    # The epochs the learning-rate schedule was planned for: the run's first --epochs, then one
    # entry per extension to more (`train.optim.make_scheduler`).
    plan: list[int] = field(default_factory=list)


def rng_state(cuda: bool) -> dict[str, Any]:
    """Snapshot of all RNGs, converted to types the weights-only loader accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
    }
    if cuda and torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python `random` (the network's initial weights come from torch)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def to_cpu(obj: Any) -> Any:
    """Tensors anywhere in a nested dict/list moved to the CPU: checkpoints are device-neutral."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def training_state(optimizer: torch.optim.Optimizer, scheduler: Any, config: TrainConfig,
                   pos: Position, cuda: bool, data: dict[str, int] | None = None) -> dict[str, Any]:
    """The `training` entry of a checkpoint. `data`: the data set's pair counts, which a resume
    with `--data` elsewhere checks."""
    state = {
        "optimizer": to_cpu(optimizer.state_dict()),
        "scheduler": to_cpu(scheduler.state_dict()),
        "rng": rng_state(cuda),
        "config": config.to_dict(),
        "position": {"step": pos.step, "epoch": pos.epoch, "batch": pos.batch, "partial": dict(pos.partial)},
        "best": {"score": float(pos.best_score), "epoch": int(pos.best_epoch)},
        "history": [dict(row) for row in pos.history],
        "schedule": {"epochs": [int(e) for e in pos.plan]},
    }
    if data is not None:
        state["data"] = {k: int(v) for k, v in data.items()}
    return state


def resume_path(path: Path) -> Path:
    """A run folder means its `last.pt`."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
        if not path.exists():
            raise UserError(f"{path.parent}: no last.pt in this folder, nothing to resume")
    return path


def load_resume(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any], Path]:
    """The checkpoint to resume and the config to continue with.

    A resumed run keeps its own settings. Options left at None in `config` were not given and
    take the run's value; a trajectory setting (`TRAJECTORY_FIELDS`) given with the run's own
    value is fine, with another value it is an error rather than a silently different run.
    `epochs` and `max_steps` may be given to extend the run; the per-invocation options
    (`INVOCATION_FIELDS`) come from `config`, as does `deterministic` when set (a run started
    deterministic stays so). `data`, when given, points the run at a moved copy of its data set
    (the loop checks it holds as many pairs); otherwise the run's own (absolute) data path is
    used. The run folder is the checkpoint's unless `out` is given.
    """
    assert config.resume is not None
    path = resume_path(config.resume)
    ckpt = load_checkpoint(path)
    training = ckpt.get("training") or {}
    if not isinstance(training.get("config"), dict) or "optimizer" not in training:
        raise UserError(f"{path}: holds no training state to resume from (not written by `toolkit train`)")
    saved = TrainConfig.from_dict(training["config"]).with_defaults()
    for name in TRAJECTORY_FIELDS:
        given = getattr(config, name)
        if name == "data" or given is None:
            continue
        if name == "lr":
            same, was = config.effective_lr == saved.effective_lr, saved.effective_lr
        elif name == "clip_grad":
            same, was = config.effective_clip_grad == saved.effective_clip_grad, saved.effective_clip_grad
        elif name == "momentum":
            same, was = config.effective_momentum == saved.effective_momentum, saved.effective_momentum
        else:
            was = getattr(saved, name)
            same = given == was
        if not same:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {given} differs from the run being resumed ({was}); a resumed run keeps "
                            f"its settings (only --epochs and --max-steps may extend it)")
    changes: dict[str, Any] = {name: getattr(config, name) for name in INVOCATION_FIELDS}
    changes["workers"] = config.workers if config.workers is not None else DEFAULTS["workers"]
    changes["epochs"] = config.epochs if config.epochs is not None else saved.epochs
    changes["deterministic"] = bool(config.deterministic or saved.deterministic)
    if config.data is not None:
        changes["data"] = Path(config.data).resolve()
    changes["out"] = config.out if config.out is not None else path.parent
    changes["resume"] = path
    return replace(saved, **changes).validate(), ckpt, path


def position_of(ckpt: dict[str, Any]) -> Position:
    """Where the checkpoint's run stands. Earlier checkpoints have no schedule plan (their
    schedule spanned the epochs of their config) and older metric names in their history."""
    t = ckpt["training"]
    p, best = t["position"], t.get("best", {})
    plan = t.get("schedule", {}).get("epochs") or [int(t["config"]["epochs"])]
    return Position(step=int(p["step"]), epoch=int(p["epoch"]), batch=int(p["batch"]),
                    best_score=float(best.get("score", float("-inf"))), best_epoch=int(best.get("epoch", -1)),
                    history=[with_current_names(r) for r in t.get("history", [])], partial=dict(p.get("partial", {})),
                    plan=[int(e) for e in plan])
