"""The optimiser and learning-rate schedule a recipe names.

A scheduler always exists (a constant one for the seed) so every checkpoint has its slot. The
schedules are functions of the optimiser step and the run's length in steps, recomputed from
the config on resume, so a resumed run follows the same curve; extending a run with more
`--epochs` stretches its remaining schedule to the new length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from toolkit.errors import UserError

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


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, total_steps: int):
    if recipe.scheduler == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    if recipe.scheduler == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, recipe.warmup))
    raise UserError(f"recipe {recipe.name!r}: unknown scheduler {recipe.scheduler!r}")
