"""An exponential moving average of the weights (and BatchNorm statistics).

The averaged weights are what a run evaluates, saves as the checkpoint's `model` and so
exports: averaging the last few hundred steps removes most of the step-to-step noise that a
high learning rate leaves, for free at inference time. The optimiser's own weights are kept
too (`checkpoint["training"]["live_model"]`), so `--resume` continues the same trajectory.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """`avg = d * avg + (1 - d) * live` after every optimiser step, with the decay ramped up as
    `min(decay, (1 + n) / (10 + n))` so the first steps are not dominated by the random start.
    Integer buffers (BatchNorm's batch counter) are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float, updates: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = int(updates)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        live = model.state_dict()
        for name, avg in self.module.state_dict().items():
            value = live[name].detach()
            if avg.dtype.is_floating_point:
                avg.lerp_(value.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
