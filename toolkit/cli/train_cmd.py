"""`toolkit train`: a thin shell over `train.loop.run`.

PyTorch and the `train` package are imported inside the command, so `toolkit --help` and the
edge commands work without them; a missing PyTorch is a one-line error naming the extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import MissingDependency
from .common import console

HELP = """Train the mask + depth network.

With no --data, a small synthetic set is made in RUN_DIR/data (and reused).
--data takes the data set as you hold it: a folder or zips in the original
layout. The run folder (--out, default runs/train) holds:

  last.pt      latest state, after every epoch and when --max-steps stops;
               with optimiser, scheduler and RNG state: --resume RUN_DIR
               continues exactly where it stopped

  best.pt      the epoch with the best held-out mask IoU minus depth RMSE

  metrics.csv  a row per epoch: losses, mask IoU/Dice, depth RMSE/MAE/IoU
               (AbsRel, delta1 on synthetic data), seed-style IoU/Dice loss

  samples.png  held-out examples: bg, fgbg, mask and depth (pred, true)

  tensorboard/ the same figures for TensorBoard (when installed)

  data/        the synthetic set, when no --data was given
"""


def register(app: typer.Typer) -> None:
    @app.command("train", help=HELP)
    def train(
        data: Annotated[Path | None, typer.Option("--data", help="Data folder or zip (default: a synthetic set).")] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs to train in all (default 12).")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step (default 32).")] = None,
        image_size: Annotated[int | None, typer.Option(
            "--image-size", help="Input size in pixels, a multiple of 4 (default 128).")] = None,
        device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
        out: Annotated[Path | None, typer.Option(
            "--out", help="Run folder (default runs/train, or the resumed run's).")] = None,
        resume: Annotated[Path | None, typer.Option("--resume", help="Run folder or its last.pt to continue.")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps in all.")] = None,
        recipe: Annotated[str | None, typer.Option("--recipe", help="Training recipe (default seed).")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).")] = None,
        workers: Annotated[int | None, typer.Option("--workers", help="Data loading processes (default 2).")] = None,
        lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the recipe's).")] = None,
    ) -> None:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise MissingDependency("PyTorch", "train") from None
        from train.config import TrainConfig
        from train.loop import run

        given = {"data": data, "epochs": epochs, "batch_size": batch_size, "image_size": image_size,
                 "out": out, "resume": resume, "max_steps": max_steps, "recipe": recipe, "seed": seed,
                 "workers": workers, "lr": lr}
        config = TrainConfig(device=device, **{k: v for k, v in given.items() if v is not None})
        if resume is not None:
            from train.config import TRAJECTORY_FIELDS

            from ..errors import UserError

            fixed = [f"--{k.replace('_', '-')}" for k in TRAJECTORY_FIELDS if given.get(k) is not None]
            if fixed:
                raise UserError(f"{', '.join(fixed)} cannot change when resuming: the run keeps its own settings")
        result = run(config, progress=True)  # epoch summaries always; Rich draws the bar only on a terminal
        console.print(f"trained {result.steps} steps ({result.epochs} epochs complete) in {result.out}")
        console.print(f"  last.pt      {result.last}")
        console.print(f"  best.pt      {result.best if result.best else '(none yet: no epoch finished)'}")
        csv = result.out / "metrics.csv"
        console.print(f"  metrics.csv  {csv if csv.exists() else '(none yet: no epoch finished)'}")
