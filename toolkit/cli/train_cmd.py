"""`toolkit train`: a thin shell over `train.loop.run`.

PyTorch and the `train` package are imported inside the command, so `toolkit --help` and the
edge commands work without them; a missing PyTorch is a one-line error naming the extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.optional import import_optional
from ..core.text import count
from .common import console, err_console

HELP = """Train the mask + depth network.

With no --data, a small synthetic set is made in RUN_DIR/data (and reused).
--data takes the data set as you hold it: a folder or zips in the original
layout. The run folder (--out, default runs/train) holds:

  last.pt      latest state, after every epoch and when --max-steps or
               Ctrl-C stops; with optimiser, scheduler and RNG state:
               --resume RUN_DIR continues exactly where it stopped

  best.pt      the epoch with the best held-out mask IoU minus depth RMSE

  metrics.csv  a row per epoch: losses, mask IoU/Dice, depth RMSE, AbsRel
               and delta1 (those two on metric depth: the synthetic set),
               MAE, seed-style IoU/Dice loss, and val_depth_above_half_iou:
               the IoU of depth above 0.5, kept to compare with the seed.
               It is no depth measure: where most depth is below 0.5 both
               sides are often empty and it reads 1.0 whatever the error
               (an earlier run's val_depth_iou is this figure)

  samples.png  held-out examples: bg | fgbg | mask pred | mask true |
               depth pred | depth true, after every epoch

  curves.png   losses, mask IoU/Dice, depth RMSE/AbsRel/delta1 and the
               learning rate per epoch

  tensorboard/ the losses (every --log-every steps), the epoch figures and
               the sample grids (every epoch, and every --preview-every
               steps) for TensorBoard: tensorboard --logdir RUN_DIR

  data/        the synthetic set, when no --data was given

An --out folder that holds a run (last.pt or best.pt) is refused: --resume
continues it, --force starts a new one over it.

A resumed run keeps its own settings: giving one again with the same value
is fine, a different value is an error. --epochs and --max-steps may extend
it; --device and --workers apply to this invocation. The run's data path is
stored absolute, so --resume works from any folder; if the data set was
moved, --data points the run at the moved copy (same pairs).

Extending a run (--epochs beyond the epochs it was planned for, finished or
not) gives the added epochs a cosine of their own: the learning rate
restarts at the run's peak (--lr or the recipe's; no warm-up) and falls to 0
at the new last epoch, while the epochs first planned keep their curve (a
finished run sits at ~0, so continuing its curve would train nothing). The
run says so in one line when it starts. The seed recipe's rate is constant.

Ctrl-C finishes the step in progress, writes last.pt at that step and ends
with one line (exit code 130) naming the --resume to continue, which ends
with the weights of a run that never stopped. A second Ctrl-C stops at once
and leaves the last.pt written before. With --nproc every process stops at
the same step.

Fine-tuning: --init M.pt starts a new run from a model's weights (a toolkit
checkpoint, or one of the original author's files, read without running
code from it), with a fresh optimiser and schedule and the model's own
recipe unless --recipe is given: a few labelled pairs of a new site and a
few epochs. The data's depth must run the model's way (dataset.json).

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
        force: Annotated[bool, typer.Option(
            "--force", help="Start a new run in an --out folder that holds one: its checkpoints and logs are "
            "removed first (its synthetic data set is kept).")] = False,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps in all.")] = None,
        recipe: Annotated[str | None, typer.Option("--recipe", help="Training recipe: improved (default) or seed.")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default 0).")] = None,
        workers: Annotated[int | None, typer.Option("--workers", help="Data loading processes (default 2).")] = None,
        lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the recipe's).")] = None,
        nproc: Annotated[int, typer.Option(
            "--nproc", help="Training processes on this machine (DistributedDataParallel).")] = 1,
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
        init: Annotated[Path | None, typer.Option(
            "--init", help="Start from this model's weights (a toolkit checkpoint, or the original author's "
            "Models_pt file) with a fresh optimiser and schedule; its recipe unless --recipe.")] = None,
        tail: Annotated[str | None, typer.Option(
            "--tail", help="The decoder tail's BatchNorm statistics: per_head, joint or shared "
            "(default: the recipe's).")] = None,
    ) -> None:
        import_optional("torch", "PyTorch", "train")
        from train.config import TrainConfig

        # Only the options given reach the config: None is "not given", so a resumed run can tell
        # an option repeated with the run's own value from one left out.
        given = {"data": data, "epochs": epochs, "batch_size": batch_size, "image_size": image_size,
                 "out": out, "resume": resume, "max_steps": max_steps, "recipe": recipe, "seed": seed,
                 "workers": workers, "lr": lr, "clip_grad": clip_grad, "channels_last": channels_last,
                 "init": init, "tail": tail}
        _run(TrainConfig(device=device, deterministic=deterministic, amp=amp, compile=compile_, log_every=log_every,
                         preview_every=preview_every, force=force, **{k: v for k, v in given.items() if v is not None}),
             nproc)


def _caused_by_interrupt(error: BaseException) -> bool:
    """A Ctrl-C that landed inside a library's import can surface as that library's own error
    (a half-imported module); the KeyboardInterrupt is then in the exception's context chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _run(config, nproc: int) -> None:
    """Train in one process (`train.loop.run`) or N (`train.launch.launch`), then list the run's
    files; Ctrl-C ends in one line and exit code 130 (128 + SIGINT), as `train.interrupt` says."""
    from train.interrupt import TrainingAborted, TrainingInterrupted

    try:
        if nproc != 1:
            from train.launch import launch

            result = launch(config, nproc)
        else:
            from train.loop import run

            result = run(config, progress=True)  # epoch summaries always; Rich draws the bar only on a terminal
    except (TrainingInterrupted, TrainingAborted) as e:
        _say(str(e), err_console)
        raise typer.Exit(130) from None
    except (KeyboardInterrupt, Exception) as e:  # outside the steps (data, model, a library import cut short): nothing saved
        if not _caused_by_interrupt(e):
            raise
        _say("interrupted before the first step: nothing was trained", err_console)
        raise typer.Exit(130) from None
    csv = result.out / "metrics.csv"
    for line in (f"trained {count(result.steps, 'step')} ({count(result.epochs, 'epoch')} complete) in {result.out}",
                 f"  last.pt      {result.last}",
                 f"  best.pt      {result.best if result.best else '(none yet: no epoch finished)'}",
                 f"  metrics.csv  {csv if csv.exists() else '(none yet: no epoch finished)'}"):
        _say(line, console)


def _say(line: str, where) -> None:
    where.print(line, soft_wrap=True, markup=False, highlight=False)  # whole lines, also when piped (no wrapping at 80 columns)
