"""The training job: `run(config)` from data to checkpoints, resumable bit for bit.

Determinism is designed in rather than hoped for: the batch order of an epoch is a function of
(seed, epoch) (`train.dataset.epoch_order`), augmentation draws are a function of (seed, step),
the DataLoader draws from its own generator and not from the global RNG, and a checkpoint
records the position inside the epoch. So on the CPU a run stopped at any step (`--max-steps`,
Ctrl-C: `train.interrupt`) and resumed ends with exactly the weights of a run that never
stopped. On CUDA that holds only with
`deterministic` (`--deterministic`): by default cuDNN autotunes its kernels for speed
(`benchmark`), and the kernels it picks may differ between the two runs.

`best.pt` is the epoch with the highest score `val mask IoU - val depth RMSE` (both on [0, 1]
values: overlap of the person, and depth error in the same units), or the lowest training loss
when there is no held-out part. With a recipe that averages weights (EMA), the averaged weights
are what is evaluated and saved as the checkpoint's model; the optimiser's own weights travel in
the checkpoint's training state for `--resume`.

Several processes (`train.distributed`): every rank runs this same loop on its share of each
batch; rank 0 alone makes the run folder, evaluates, logs and saves.

A new run is not started over a folder that holds one (`last.pt` or `best.pt`) unless `force`
asks to start over: the old run's checkpoints would have been replaced one at a time.

The run's parts are made by `train.components` (in the order resume depends on), its
checkpoints written by `train.checkpointer` (in the order kill safety depends on); this module
is the job around them and the epoch loop.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.core.errors import ToolkitError, UserError
from toolkit.core.fsutil import check_writable, ensure_dir
from toolkit.core.text import count

from . import distributed
from .checkpointer import Checkpointer, held_checkpoints, remove_previous_run, remove_stale_temporaries
from .components import TrainComponents, build_components
from .config import TrainConfig
from .dataset import PairTensors
from .environment import deterministic_kernels, resolve_device, worker_error_message
from .interrupt import StopRequest, TrainingAborted, TrainingInterrupted, aborted_message, interrupted_message, sigint_stops
from .logging import RunLogs, sample_grid
from .optim import make_optimizer, make_scheduler
from .progress import EpochProgress
from .rundata import check_data_exists, check_same_data, open_data
from .speed import resolve_speed
from .state import load_resume, position_of
from .step import TrainingDiverged, evaluate, predict_arrays, score_of, train_one_epoch

__all__ = ["TrainResult", "TrainingAborted", "TrainingDiverged", "TrainingInterrupted", "make_optimizer", "make_scheduler",
           "preflight", "run", "score_of", "train_one_epoch", "worker_error_message"]


@dataclass
class TrainResult:
    out: Path
    last: Path
    best: Path | None
    steps: int
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)  # each rank's parameter hash (one for a single process)


def preflight(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The config to run (a resumed run's own, completed) and the checkpoint to resume, after
    checking options, device and a given data set: mistakes surface before anything is made."""
    config.validate()
    ckpt = None
    if config.init is not None and config.recipe is None:  # the model's own recipe: its outputs' decoding
        from .init import read_init

        config = replace(config, recipe=read_init(config.init).recipe)
    if config.resume is not None:
        config, ckpt, _ = load_resume(config)
    else:  # the data path is stored absolute, so --resume works from any working directory
        config = replace(config.with_defaults(),
                         data=None if config.data is None else Path(config.data).resolve()).validate()
    resolve_speed(resolve_device(config.device), amp=config.amp, channels_last=config.channels_last,
                  compile=config.compile)  # e.g. --amp fp16 on the CPU
    check_data_exists(config, resuming=ckpt is not None)
    if ckpt is None:
        _check_new_run_folder(config)
    return config, ckpt


def _check_new_run_folder(config: TrainConfig) -> None:
    """A new run is not started over one that a folder holds, unless `force` says so: its
    checkpoints would be replaced one by one (a new last.pt beside the old best.pt until the
    first epoch ends), which nobody asking for `--out RUN` means."""
    out = config.run_dir
    held = held_checkpoints(out)
    if held and not config.force:
        raise UserError(f"{out}: holds a run already ({' and '.join(held)}); --resume {out} continues it, "
                        f"--force starts a new one over it")


def run(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train as `config` says; see the module docstring and `train.state` for resume.

    Options, device and a given data set are checked before the run folder is made; a run
    folder this call made is removed again when it fails before writing a checkpoint."""
    config, ckpt = preflight(config)
    with distributed.process_group(resolve_device(config.device)) as (group, device):
        given = open_data(config, resuming=ckpt is not None) if config.data is not None else None
        if given is not None and ckpt is not None:
            check_same_data(ckpt, config.data, len(given[0]), len(given[2]))
        out = config.run_dir
        made = out  # the outermost folder this call makes (None: the run folder exists already)
        while not made.parent.exists() and made.parent != made:
            made = made.parent
        made = None if out.exists() or not group.main else made
        out = ensure_dir(out)
        try:
            # A read-only or full run folder fails now, not at the first checkpoint (~2 MiB each,
            # last.pt + best.pt + their temporary copies, samples and metrics: 64 MiB is ample).
            check_writable(out, need_bytes=64 * 2**20)
            with deterministic_kernels(config.deterministic, device.type == "cuda"):
                return _train(config, ckpt, device, out, given, progress and group.main, group)
        except BaseException as e:
            if made is not None and not (out / "last.pt").exists():
                shutil.rmtree(made, ignore_errors=True)
            if isinstance(e, ToolkitError):
                # Expected errors: drop the finished frames' locals now, so the DataLoader worker
                # processes they hold stop here rather than whenever the error is dropped.
                traceback.clear_frames(e.__traceback__)
                message = worker_error_message(e)  # e.g. a broken image read in a worker process
                if message is not None:
                    raise UserError(message) from None
            raise


def _train(config: TrainConfig, ckpt: dict[str, Any] | None, device: torch.device, out: Path,
           given: tuple[Any, list[int], list[int]] | None, progress: bool, group: distributed.Group) -> TrainResult:
    bar = EpochProgress(enabled=progress)
    say = bar.print if progress else (lambda _msg: None)
    if group.main:
        remove_stale_temporaries(out)
        removed = remove_previous_run(out) if ckpt is None and config.force else []
        if removed:
            say(f"--force: starting a new run in {out}; the earlier one's {', '.join(removed)} removed")
    parts = build_components(config, ckpt, device, out, given, group, say)
    pos, data = parts.pos, parts.data
    logs = RunLogs(out, enabled=group.main, tensorboard=config.tensorboard, samples=config.samples,
                   purge_step=pos.step or None, depth_convention=parts.spec.depth_convention)
    saver = Checkpointer(out, parts, config, group, cuda=device.type == "cuda")
    epochs = _Epochs(config, parts, group, device, bar, logs, saver, say)
    say(f"training on {device.type}" + (f" x {group.world} processes" if group.active else "")
        + f": {len(data.train_idx)} pairs, {len(data.val_idx)} held out, {count(parts.per_epoch, 'step')} per epoch, "
        f"run folder {out}")
    say(f"recipe {parts.recipe.name}; speed options: {parts.speed.describe()}")
    if ckpt is not None and Path(config.resume).resolve() == saver.last.resolve():
        saver.last_step = pos.step  # the last.pt on disk is the one resumed
    try:
        with sigint_stops() as stop:
            epochs.run(stop)
    except TrainingDiverged as e:
        good = saver.last.exists() and (saver.written or ckpt is not None)
        kept = f"; the last good checkpoint is {saver.last}" if good else "; no checkpoint of this run was written"
        raise TrainingDiverged(f"{e} at step {pos.step + 1} (epoch {pos.epoch + 1}): training stopped{kept}") from None
    except KeyboardInterrupt:  # a second Ctrl-C (the first only asks `stop`)
        raise TrainingAborted(aborted_message(out, saver.last_step)) from None
    finally:
        bar.close()
        logs.close()
    replicas = distributed.check_replicas(parts.model.net, group)
    if ckpt is not None and pos.step == position_of(ckpt).step:
        say(f"nothing to do: the run is at step {pos.step}, epoch {pos.epoch} of {config.epochs}"
            + (f", max steps {config.max_steps}" if config.max_steps is not None else ""))
    saver.ensure_last(pos.history)
    best = saver.best
    return TrainResult(out=out, last=saver.last, best=best if best.exists() else None, steps=pos.step,
                       epochs=pos.epoch, history=list(pos.history), replicas=replicas)


class _Epochs:
    """The epoch loop over a run's parts: train, evaluate, checkpoint and log each (partial) epoch."""

    def __init__(self, config: TrainConfig, parts: TrainComponents, group: distributed.Group, device: torch.device,
                 bar: EpochProgress, logs: RunLogs, saver: Checkpointer, say: Callable[[str], None]):
        self.config, self.parts, self.group, self.device = config, parts, group, device
        self.bar, self.logs, self.saver, self.say = bar, logs, saver, say
        data, size = parts.data, (config.image_size, config.image_size)
        shown = data.val_idx or data.train_idx
        self.preview = (torch.utils.data.default_collate([PairTensors(data.pairs, shown, size)[i]
                                                          for i in range(min(4, len(shown)))])
                        if config.preview_every and group.main else None)

    def run(self, stop: StopRequest) -> None:
        """The epochs left; on Ctrl-C (`stop`) the run ends after the step in progress with last.pt
        at that step, or after the epoch whose evaluation or checkpoint the Ctrl-C came in."""
        config, pos = self.config, self.parts.pos
        self.stop, self.stopping = stop, False
        while pos.epoch < config.epochs and (config.max_steps is None or pos.step < config.max_steps):
            if self.stopping:
                raise self._interrupted()
            row, keep = self._epoch()
            if keep is None:  # stopped inside the epoch: its position is saved, as --max-steps saves it
                self.saver.save(self.saver.last, row)
                self.group.barrier()
                raise self._interrupted()
            pos.history.append(row)
            improved = score_of(row) > pos.best_score
            if improved:
                pos.best_score, pos.best_epoch = score_of(row), pos.epoch
            self.saver.save_epoch(row, improved)
            self.logs.epoch(row, pos.history, pos.step, keep)
            self.say(_summary(row))
            self.group.barrier()  # the other ranks wait while rank 0 evaluates and saves
            self._stop_agreed()

    def _stop_agreed(self) -> bool:
        """Whether Ctrl-C reached any rank: all ranks then stop at this same step."""
        self.stopping = self.group.any_rank(self.stop.requested)
        return self.stopping

    def _interrupted(self) -> TrainingInterrupted:
        pos = self.parts.pos
        return TrainingInterrupted(interrupted_message(pos.step, pos.epoch + (1 if pos.batch else 0), self.saver.last.parent))

    def _epoch(self) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
        """Train up to the end of the epoch (or --max-steps); its row and the held-out samples kept.
        Stopped early by Ctrl-C: the row of the steps done, not evaluated, and None."""
        config, p, pos = self.config, self.parts, self.parts.pos
        epoch, start = pos.epoch, pos.batch
        p.sampler.set_epoch(epoch, start)
        p.loader_gen.manual_seed(config.seed * 1_000_003 + epoch)
        limit = None if config.max_steps is None else config.max_steps - pos.step
        self.bar.start_epoch(epoch + 1, config.epochs, total=p.per_epoch, done=start)
        t0 = time.perf_counter()
        sums = train_one_epoch(p.model, p.train_loader, p.optimizer, p.scheduler, p.loss_fn, self.device, limit=limit,
                               on_step=self._on_step, sums=pos.partial if start else None, first_step=pos.step,
                               options=p.options)
        seconds = time.perf_counter() - t0
        self.bar.end_epoch()
        images = (sums["images"] - pos.partial.get("images", 0)) * self.group.world
        finished = pos.batch >= p.per_epoch
        if finished:
            pos.epoch, pos.batch, pos.partial = epoch + 1, 0, {}
        else:
            pos.partial = sums
        row: dict[str, Any] = {"epoch": epoch + 1 if finished else round(epoch + pos.batch / p.per_epoch, 4),
                               "step": pos.step, "lr": float(p.optimizer.param_groups[0]["lr"])}
        if sums["batches"]:
            row.update({f"train_{k}": sums[k] / sums["batches"] for k in ("loss", "mask_loss", "depth_loss")})
        if images:
            row["images_per_s"] = images / max(seconds, 1e-9)
        if self.stopping and not finished and (config.max_steps is None or pos.step < config.max_steps):
            return row, None
        keep: dict[str, np.ndarray] = {}
        if p.val_loader is not None:
            row.update(evaluate(p.eval_model, p.val_loader, p.loss_fn, self.device, to_metres=p.data.to_metres,
                                keep=keep))
        return row, keep

    def _on_step(self, loss: float, images: int) -> bool:
        """After each step: progress, logs, the preview; True when Ctrl-C ends the epoch here."""
        pos = self.parts.pos
        pos.step += 1
        pos.batch += 1
        self.bar.step(loss, images * self.group.world)
        self.logs.step_loss(loss, pos.step, self.config.log_every, lr=float(self.parts.optimizer.param_groups[0]["lr"]))
        if self.preview is not None and pos.step % self.config.preview_every == 0:
            arrays = predict_arrays(self.parts.eval_model, self.preview, self.device)
            self.logs.preview(sample_grid(arrays, depth_convention=self.parts.spec.depth_convention), pos.step)
        return self._stop_agreed()


def _summary(row: dict[str, Any]) -> str:
    """An epoch's line: the losses, the mask's figures and the depth's (RMSE, and AbsRel and delta1
    on metric depth); the depth-above-0.5 IoU stays in metrics.csv (see `train.step.METRIC_NAMES`)."""
    keys = ("train_loss", "val_loss", "val_mask_iou", "val_mask_dice", "val_depth_rmse", "val_depth_absrel",
            "val_depth_delta1")
    parts = [f"{k} {row[k]:.4f}" for k in keys if k in row]
    return f"epoch {row['epoch']} step {row['step']}: " + ", ".join(parts)
