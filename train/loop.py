"""The training job: `run(config)` from data to checkpoints, resumable bit for bit.

Determinism is designed in rather than hoped for: the batch order of an epoch is a function of
(seed, epoch) (`train.dataset.epoch_order`), augmentation draws are a function of (seed, step),
the DataLoader draws from its own generator and not from the global RNG, and a checkpoint
records the position inside the epoch. So on the CPU a run stopped at any step and resumed ends
with exactly the weights of a run that never stopped. On CUDA that holds only with
`deterministic` (`--deterministic`): by default cuDNN autotunes its kernels for speed
(`benchmark`), and the kernels it picks may differ between the two runs.

`best.pt` is the epoch with the highest score `val mask IoU - val depth RMSE` (both on [0, 1]
values: overlap of the person, and depth error in the same units), or the lowest training loss
when there is no held-out part. With a recipe that averages weights (EMA), the averaged weights
are what is evaluated and saved as the checkpoint's model; the optimiser's own weights travel in
the checkpoint's training state for `--resume`.

Several processes (`train.distributed`): every rank runs this same loop on its share of each
batch; rank 0 alone makes the run folder, evaluates, logs and saves.
"""

from __future__ import annotations

import functools
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from toolkit.checkpoint import make_checkpoint, save_checkpoint
from toolkit.errors import ToolkitError, UserError
from toolkit.fsutil import check_writable, ensure_dir
from toolkit.model import EVA4Net, MaskDepthModel

from . import distributed
from .config import TrainConfig, get_recipe
from .dataset import EpochBatches, PairTensors, batches_per_epoch
from .ema import WeightAverage
from .environment import deterministic_kernels, resolve_device, worker_error_message
from .logging import RunLogs, sample_grid
from .losses import MaskDepthLoss
from .optim import make_optimizer, make_scheduler
from .progress import EpochProgress
from .rundata import check_data_exists, check_same_data, open_data, synthetic_data
from .speed import apply_threads, autocast, grad_scaler, memory_format, prepare_model, resolve_speed
from .state import Position, load_resume, position_of, restore_rng, seed_everything, training_state
from .step import StepOptions, TrainingDiverged, evaluate, predict_arrays, score_of, train_one_epoch

__all__ = ["TrainResult", "TrainingDiverged", "make_optimizer", "make_scheduler", "preflight", "run", "score_of",
           "train_one_epoch", "worker_error_message"]


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
    if config.resume is not None:
        config, ckpt, _ = load_resume(config)
    else:  # the data path is stored absolute, so --resume works from any working directory
        config = replace(config.with_defaults(),
                         data=None if config.data is None else Path(config.data).resolve()).validate()
    resolve_speed(resolve_device(config.device), amp=config.amp, channels_last=config.channels_last,
                  compile=config.compile)  # e.g. --amp fp16 on the CPU
    check_data_exists(config, resuming=ckpt is not None)
    return config, ckpt


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


def _resume_world(ckpt: dict[str, Any], pos: Position, group: distributed.Group) -> None:
    was = int(ckpt["training"].get("world", 1))
    if was != group.world and pos.batch:
        raise UserError(f"this run stopped inside an epoch with {was} training process(es); resume it with "
                        f"{was} (the batches of the epoch are dealt out per process), or from a finished epoch")


def _train(config: TrainConfig, ckpt: dict[str, Any] | None, device: torch.device, out: Path,
           given: tuple[Any, list[int], list[int]] | None, progress: bool, group: distributed.Group) -> TrainResult:
    if group.main:  # checkpoint temporaries left by a killed run (atomic writes never got to rename them)
        for stale in [*out.glob(".last.pt.*.tmp"), *out.glob(".best.pt.*.tmp")]:
            stale.unlink(missing_ok=True)
    if ckpt is None and (out / "last.pt").exists() and progress:
        print(f"note: {out} holds an earlier run; starting a new one over it "
              f"(--resume {out} continues a run, --out picks another folder)", file=sys.stderr)
    cuda = device.type == "cuda"
    recipe = get_recipe(config.recipe)
    spec = recipe.spec.with_size(config.image_size)
    bar = EpochProgress(enabled=progress)
    say = bar.print if progress else (lambda _msg: None)

    speed = resolve_speed(device, amp=config.amp, channels_last=config.channels_last, compile=config.compile,
                          processes=group.local_world)  # CPU threads shared by this machine's ranks
    apply_threads(speed)
    seed_everything(config.seed)
    model = MaskDepthModel(EVA4Net(), spec)
    model.net.joint_tail = recipe.joint_tail
    prepare_model(model, device, replace(speed, compile=False))  # same parameters, same state dict keys
    optimizer = make_optimizer(recipe, model.net.parameters(), config.effective_lr, config.effective_momentum)
    ema = WeightAverage(model.net, recipe.ema) if recipe.ema > 0 else None
    if speed.compile:  # after the average's copy, which stays an eager module
        model.net.compile()
    loss_fn = MaskDepthLoss(recipe)
    pos = Position()
    if ckpt is not None:
        training = ckpt["training"]
        model.net.load_state_dict(training.get("live_model", ckpt["model"]))
        if ema is not None:
            ema.load_state_dict(ckpt["model"])
            ema.updates = int(training.get("ema_updates", 0))
        restore_rng(training["rng"])
        pos = position_of(ckpt)
        _resume_world(ckpt, pos, group)
        say(f"resuming {config.resume} at step {pos.step} (epoch {pos.epoch + 1}, batch {pos.batch})")

    if given is not None:
        (pairs, train_idx, val_idx), to_metres = given, None
    else:
        if not group.main:
            group.barrier()  # rank 0 makes the synthetic set first
        pairs, train_idx, val_idx, to_metres = synthetic_data(config, out, say)
        if group.main:
            group.barrier()
        if ckpt is not None:
            check_same_data(ckpt, out / "data", len(pairs), len(val_idx))
    if len(train_idx) < group.world:
        raise UserError(f"{len(train_idx)} training pairs cannot feed {group.world} processes")
    data_counts = {"pairs": len(pairs), "held_out": len(val_idx)}
    size = (config.image_size, config.image_size)
    sampler = EpochBatches(len(train_idx), config.batch_size, config.seed, rank=group.rank, world=group.world)
    per_epoch = batches_per_epoch(len(train_idx), config.batch_size, group.world)
    scheduler = make_scheduler(recipe, optimizer, total_steps=config.epochs * per_epoch)
    if ckpt is not None:  # after the scheduler is made: making it sets the optimiser's learning rate
        optimizer.load_state_dict(ckpt["training"]["optimizer"])
        scheduler.load_state_dict(ckpt["training"]["scheduler"])
    loader_gen = torch.Generator()
    loader_kw: dict[str, Any] = {"num_workers": config.workers, "pin_memory": cuda}
    if config.workers:
        loader_kw["persistent_workers"] = True
    train_loader = DataLoader(PairTensors(pairs, train_idx, size), batch_sampler=sampler,
                              generator=loader_gen, **loader_kw)
    # Its own generator too: validation (also run when --max-steps stops mid-epoch) must not
    # draw from the global RNG, or a resumed run's RNG state would differ from an unbroken one.
    val_loader = (DataLoader(PairTensors(pairs, val_idx, size), batch_size=config.batch_size, shuffle=False,
                             generator=torch.Generator().manual_seed(config.seed), **loader_kw)
                  if val_idx and group.main else None)
    eval_model = model if ema is None else MaskDepthModel(ema.module, spec)
    options = StepOptions(augment_seed=config.seed if recipe.augment else None, grad_clip=config.effective_clip_grad,
                          ema=ema, net=distributed.wrap(model.net, group, device), all_finite=group.all_finite,
                          autocast=functools.partial(autocast, device, speed), scaler=grad_scaler(device, speed),
                          memory_format=memory_format(speed))
    last, best = out / "last.pt", out / "best.pt"
    logs = RunLogs(out, enabled=group.main, tensorboard=config.tensorboard, samples=config.samples,
                   purge_step=pos.step or None)

    written: list[Path] = []  # checkpoints this invocation wrote

    def save(path: Path, metrics: dict[str, Any]) -> None:
        if not group.main:
            return
        written.append(path)
        state = training_state(optimizer, scheduler, config, pos, cuda, data=data_counts)
        state["world"] = group.world
        if ema is not None:
            state["live_model"] = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
            state["ema_updates"] = ema.updates
        weights = (ema.module if ema is not None else model.net).state_dict()
        save_checkpoint(path, make_checkpoint(weights, spec, epoch=pos.epoch, step=pos.step, recipe=recipe.name,
                                              source="toolkit train", metrics=metrics, training=state))

    preview = (torch.utils.data.default_collate([PairTensors(pairs, val_idx or train_idx, size)[i]
                                                 for i in range(min(4, len(val_idx or train_idx)))])
               if config.preview_every and group.main else None)

    def on_step(loss: float, images: int) -> None:
        pos.step += 1
        pos.batch += 1
        bar.step(loss, images * group.world)
        logs.step_loss(loss, pos.step, config.log_every, lr=float(optimizer.param_groups[0]["lr"]))
        if preview is not None and pos.step % config.preview_every == 0:
            arrays = predict_arrays(eval_model, preview, device)
            logs.preview(sample_grid(arrays), pos.step)

    say(f"training on {device.type}" + (f" x {group.world} processes" if group.active else "")
        + f": {len(train_idx)} pairs, {len(val_idx)} held out, {per_epoch} steps per epoch, run folder {out}")
    say(f"recipe {recipe.name}; speed options: {speed.describe()}")
    try:
        while pos.epoch < config.epochs and (config.max_steps is None or pos.step < config.max_steps):
            epoch, start = pos.epoch, pos.batch
            sampler.set_epoch(epoch, start)
            loader_gen.manual_seed(config.seed * 1_000_003 + epoch)
            limit = None if config.max_steps is None else config.max_steps - pos.step
            bar.start_epoch(epoch + 1, config.epochs, total=per_epoch, done=start)
            t0 = time.perf_counter()
            sums = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn, device, limit=limit,
                                   on_step=on_step, sums=pos.partial if start else None, first_step=pos.step,
                                   options=options)
            seconds = time.perf_counter() - t0
            bar.end_epoch()
            images = (sums["images"] - pos.partial.get("images", 0)) * group.world
            finished = pos.batch >= per_epoch
            if finished:
                pos.epoch, pos.batch, pos.partial = epoch + 1, 0, {}
            else:
                pos.partial = sums
            row: dict[str, Any] = {"epoch": epoch + 1 if finished else round(epoch + pos.batch / per_epoch, 4),
                                   "step": pos.step, "lr": float(optimizer.param_groups[0]["lr"])}
            if sums["batches"]:
                row.update({f"train_{k}": sums[k] / sums["batches"] for k in ("loss", "mask_loss", "depth_loss")})
            if images:
                row["images_per_s"] = images / max(seconds, 1e-9)
            keep: dict[str, np.ndarray] = {}
            if val_loader is not None:
                row.update(evaluate(eval_model, val_loader, loss_fn, device, to_metres=to_metres, keep=keep))
            pos.history.append(row)
            improved = score_of(row) > pos.best_score
            if improved:
                pos.best_score, pos.best_epoch = score_of(row), pos.epoch
            if improved:  # best.pt first: a kill between the two writes then redoes this epoch
                save(best, row)
            save(last, row)
            logs.epoch(row, pos.history, pos.step, keep)
            say(_summary(row))
            group.barrier()  # the other ranks wait while rank 0 evaluates and saves
    except TrainingDiverged as e:
        good = last.exists() and (written or ckpt is not None)
        kept = f"; the last good checkpoint is {last}" if good else "; no checkpoint of this run was written"
        raise TrainingDiverged(f"{e} at step {pos.step + 1} (epoch {pos.epoch + 1}): training stopped{kept}") from None
    finally:
        bar.close()
        logs.close()
    replicas = distributed.check_replicas(model.net, group)
    if ckpt is not None and pos.step == position_of(ckpt).step:
        say(f"nothing to do: the run is at step {pos.step}, epoch {pos.epoch} of {config.epochs}"
            + (f", max steps {config.max_steps}" if config.max_steps is not None else ""))
    if not last.exists():  # resumed a finished run into a new folder: it still gets its last.pt
        save(last, pos.history[-1] if pos.history else {})
    return TrainResult(out=out, last=last, best=best if best.exists() else None, steps=pos.step,
                       epochs=pos.epoch, history=list(pos.history), replicas=replicas)


def _summary(row: dict[str, Any]) -> str:
    keys = ("train_loss", "val_loss", "val_mask_iou", "val_mask_dice", "val_depth_rmse", "val_depth_iou")
    parts = [f"{k} {row[k]:.4f}" for k in keys if k in row]
    return f"epoch {row['epoch']} step {row['step']}: " + ", ".join(parts)
