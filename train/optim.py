"""The optimiser and learning-rate schedule a recipe names.

A scheduler always exists (a constant one for the seed) so every checkpoint has its slot. The
schedules are functions of the optimiser step and the run's plan in steps, recomputed on resume
from the plan the checkpoint records, so a resumed run follows the same curve.

Extending a run (`--resume RUN --epochs 5` after 3) gives the added epochs a cosine of their
own: the learning rate restarts at the run's peak (no warm-up: the optimiser's moments are warm)
and falls to 0 at the new last epoch, while the epochs first planned keep their curve. Why: a
run that finished sits at a learning rate of ~0, so continuing its curve would train nothing,
and stretching it (what this did before) jumped from ~0 to a point mid-way down a longer cosine
that no epoch ever planned; a restart over the added epochs is the known shape (a warm restart,
SGDR), reaches 0 again where the run now ends, and is the same whenever the extension is asked.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from toolkit.core.errors import UserError
from toolkit.core.text import count

from .config import Recipe


def make_optimizer(recipe: Recipe, params: Iterable[torch.nn.Parameter], lr: float, momentum: float):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)
    raise UserError(f"recipe {recipe.name!r}: unknown optimizer {recipe.optimizer!r}")


def warmup_cosine(total_steps: int, warmup: float, floor: float = 0.0) -> Callable[[int], float]:
    """Learning-rate factor: linear from ~0 to 1 over the first `warmup` share of the steps, then
    a half cosine down to `floor`. A short warm-up keeps AdamW's first, badly estimated steps
    from throwing BatchNorm statistics around; the cosine tail is where the weights settle."""
    total = max(1, int(total_steps))
    warm = max(1, int(round(total * warmup))) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def restarted_cosine(ends: Sequence[int], warmup: float) -> Callable[[int], float]:
    """Learning-rate factor of a run planned to end at step `ends[0]` and extended to each later
    end: `warmup_cosine` up to `ends[0]`, then a half cosine from 1 to 0 over each extension."""
    first = warmup_cosine(ends[0], warmup)

    def factor(step: int) -> float:
        i = bisect.bisect_right(ends, step)  # the extension `step` is in: ends[i - 1] <= step < ends[i]
        if i == 0 or len(ends) == 1:
            return first(step)
        if i == len(ends):
            return 0.0
        progress = (step - ends[i - 1]) / max(1, ends[i] - ends[i - 1])
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, total_steps: int, extensions: Sequence[int] = ()):
    """`total_steps`: the steps the run was first planned for; `extensions`: the later ends it
    was extended to (see the module docstring)."""
    if recipe.scheduler == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    if recipe.scheduler == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, restarted_cosine([total_steps, *extensions], recipe.warmup))
    raise UserError(f"recipe {recipe.name!r}: unknown scheduler {recipe.scheduler!r}")


def follow_schedule(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Set the learning rate of the step to come from the schedule. A resumed optimiser holds
    the rate its last step left (right for the same plan); after an extension the schedule has
    changed under it."""
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


def describe_extension(recipe: Recipe, lr: float, planned: int, epochs: int) -> str:
    """The one line an extended run prints at its start."""
    added = f"epoch {epochs}" if epochs == planned + 1 else f"epochs {planned + 1}-{epochs}"
    if recipe.scheduler == "constant":
        return f"{added} extend a run planned for {count(planned, 'epoch')}: the learning rate stays {lr:g} (recipe {recipe.name})"
    return (f"{added} extend a run planned for {count(planned, 'epoch')}: a new cosine over the added epochs, the learning rate "
            f"restarting at {lr:g} and falling to 0 at epoch {epochs} "
            f"({'the first epoch keeps its' if planned == 1 else f'the first {planned} epochs keep their'} curve)")
