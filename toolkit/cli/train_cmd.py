"""`toolkit train`: a thin shell over `train.loop.run`.

PyTorch and the `train` package are imported inside the command, so `toolkit --help` and the
edge commands work without them; a missing PyTorch is a one-line error naming the extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..optional import import_optional
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

  samples.png  held-out examples: bg | fgbg | mask pred | mask true |
               depth pred | depth true, after every epoch

  curves.png   losses, mask IoU/Dice, depth RMSE/IoU and the learning rate
               per epoch

  tensorboard/ the losses (every --log-every steps), the epoch figures and
               the sample grids (every epoch, and every --preview-every
               steps) for TensorBoard: tensorboard --logdir RUN_DIR

  data/        the synthetic set, when no --data was given

A resumed run keeps its own settings: giving one again with the same value
is fine, a different value is an error. --epochs and --max-steps may extend
it; --device and --workers apply to this invocation. The run's data path is
stored absolute, so --resume works from any folder; if the data set was
moved, --data points the run at the moved copy (same pairs).

Recipes: improved (the default: AdamW, warm-up + cosine, BCE + Dice mask
with sigmoid decoding, L1 + SSIM + gradient depth loss, flips and colour
jitter, weight averaging) and seed (the original author's: SGD, L1 losses),
for comparison. The checkpoint records the recipe and its decoding, so
every export decodes the outputs as they were trained.

Several processes: --nproc N starts N local processes (gloo on CPU, nccl
on GPUs); or run it under torchrun (torchrun --nproc-per-node N -m toolkit
train ...). --batch-size is per process; rank 0 writes the run folder.

Resuming gives exactly the weights of a run that never stopped on the CPU;
on CUDA only with --deterministic (by default cuDNN autotunes its kernels
for speed, and may pick different ones after a resume).
"""


def register(app: typer.Typer) -> None:
    @app.command("train", help=HELP)
    def train(
        data: Annotated[Path | None, typer.Option(
            "--data", help="Data folder or zip (default: a synthetic set). With --resume: where the run's data set "
            "is now, if it moved.")] = None,
        epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs to train in all (default 12).")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step (default 32).")] = None,
        image_size: Annotated[int | None, typer.Option(
            "--image-size", help="Input size in pixels, a multiple of 4 (default 128).")] = None,
        device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
        out: Annotated[Path | None, typer.Option(
            "--out", help="Run folder (default runs/train, or the resumed run's).")] = None,
        resume: Annotated[Path | None, typer.Option("--resume", help="Run folder or its last.pt to continue.")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps in all.")] = None,
        recipe: Annotated[str | None, typer.Option("--recipe", help="Training recipe: improved (default) or seed.")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).")] = None,
        workers: Annotated[int | None, typer.Option("--workers", help="Data loading processes (default 2).")] = None,
        lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the recipe's).")] = None,
        nproc: Annotated[int, typer.Option(
            "--nproc", help="Training processes on this machine (DistributedDataParallel); default 1.")] = 1,
        clip_grad: Annotated[float | None, typer.Option(
            "--clip-grad", help="Max gradient norm, 0 for none (default: the recipe's).")] = None,
        amp: Annotated[str, typer.Option(
            "--amp", help="Mixed precision: auto (bf16 on CUDA where supported), off, bf16 or fp16.")] = "auto",
        channels_last: Annotated[bool | None, typer.Option(
            "--channels-last/--no-channels-last", help="Channels-last memory format (default: where it pays).")] = None,
        compile_: Annotated[bool, typer.Option(
            "--compile", help="torch.compile the training forward (slow first steps, faster after).")] = False,
        log_every: Annotated[int, typer.Option("--log-every", help="Steps between TensorBoard loss points.")] = 10,
        preview_every: Annotated[int, typer.Option(
            "--preview-every", help="Steps between TensorBoard sample grids inside an epoch (0: per epoch only).")] = 0,
        deterministic: Annotated[bool, typer.Option(
            "--deterministic", help="Deterministic kernels, no cuDNN autotuning: slower on CUDA, but a resumed "
            "run is bit-identical there too (a run started so stays so).")] = False,
    ) -> None:
        import_optional("torch", "PyTorch", "train")
        from train.config import TrainConfig
        from train.loop import run

        # Only the options given reach the config: None is "not given", so a resumed run can tell
        # an option repeated with the run's own value from one left out.
        given = {"data": data, "epochs": epochs, "batch_size": batch_size, "image_size": image_size,
                 "out": out, "resume": resume, "max_steps": max_steps, "recipe": recipe, "seed": seed,
                 "workers": workers, "lr": lr, "clip_grad": clip_grad, "channels_last": channels_last}
        config = TrainConfig(device=device, deterministic=deterministic, amp=amp, compile=compile_,
                             log_every=log_every, preview_every=preview_every,
                             **{k: v for k, v in given.items() if v is not None})
        if nproc != 1:
            from train.launch import launch

            result = launch(config, nproc)
        else:
            result = run(config, progress=True)  # epoch summaries always; Rich draws the bar only on a terminal
        lines = [f"trained {result.steps} steps ({result.epochs} epochs complete) in {result.out}",
                 f"  last.pt      {result.last}",
                 f"  best.pt      {result.best if result.best else '(none yet: no epoch finished)'}"]
        csv = result.out / "metrics.csv"
        lines.append(f"  metrics.csv  {csv if csv.exists() else '(none yet: no epoch finished)'}")
        for line in lines:  # whole lines, also when piped (no wrapping at 80 columns)
            console.print(line, soft_wrap=True, markup=False, highlight=False)
