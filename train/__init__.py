"""Training for the EVA4 mask + depth network (needs PyTorch: the `train` extra).

`train.loop.run(TrainConfig(...))` is the whole job: data (a synthetic set when none is given),
the held-out-background split, the recipe's optimiser and loss, per-epoch validation, resumable
checkpoints (`last.pt`, `best.pt`) and logs (`metrics.csv`, TensorBoard, `samples.png`) in one
run folder. The CLI's `toolkit train` is a thin shell over it.
"""

from __future__ import annotations

from .config import RECIPES, Recipe, TrainConfig

__all__ = ["RECIPES", "Recipe", "TrainConfig"]
