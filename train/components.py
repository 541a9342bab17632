"""What one training run is made of: model, weight average, optimiser, scheduler, loss, data and loaders.

Why a module of its own, and why one function builds it all: the order of the steps is part of
the resume guarantee. Seeding comes before the model's initial weights are drawn; a resumed
run's RNG state is restored after everything that draws from it at start-up (the model, the
average's copy) and before anything it feeds; the scheduler is made before the optimiser's state
is loaded, because making it sets the learning rate. `build_components` keeps that order in one
place, and `train.loop` only runs epochs over the result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from toolkit.core.errors import UserError
from toolkit.core.spec import IOSpec
from toolkit.net.checkpoint import tail_stats_from
from toolkit.net.model import EVA4Net, MaskDepthModel

from . import distributed
from .config import Recipe, TrainConfig, get_recipe
from .dataset import EpochBatches, PairTensors, batches_per_epoch
from .ema import WeightAverage
from .init import InitModel, check_init_data, read_init
from .interrupt import ignore_sigint
from .losses import MaskDepthLoss
from .optim import describe_extension, follow_schedule, make_optimizer, make_scheduler
from .rundata import check_same_data, synthetic_data
from .speed import SpeedOptions, apply_threads, autocast, grad_scaler, memory_format, prepare_model, resolve_speed
from .state import Position, position_of, restore_rng, seed_everything
from .step import StepOptions

__all__ = ["RunData", "TrainComponents", "build_components"]


@dataclass
class RunData:
    """The pairs a run trains on, its split, and the grey -> metres mapping (synthetic set only)."""

    pairs: Any
    train_idx: list[int]
    val_idx: list[int]
    to_metres: Any = None

    @property
    def counts(self) -> dict[str, int]:
        """The pair counts a checkpoint records, which a resume with `--data` elsewhere checks."""
        return {"pairs": len(self.pairs), "held_out": len(self.val_idx)}


@dataclass
class TrainComponents:
    """Everything the epoch loop and the checkpointer work with. `pos` is shared and updated in
    place as training goes; `eval_model` is the averaged model with EMA, `model` otherwise."""

    recipe: Recipe
    spec: IOSpec
    speed: SpeedOptions
    model: MaskDepthModel
    ema: WeightAverage | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: MaskDepthLoss
    pos: Position
    data: RunData
    sampler: EpochBatches
    per_epoch: int
    loader_gen: torch.Generator
    train_loader: DataLoader
    val_loader: DataLoader | None
    eval_model: MaskDepthModel
    options: StepOptions


def build_components(config: TrainConfig, ckpt: dict[str, Any] | None, device: torch.device, out: Path,
                     given: tuple[Any, list[int], list[int]] | None, group: distributed.Group,
                     say: Callable[[str], None]) -> TrainComponents:
    """Make (and, resuming, restore) a run's parts in the order the module docstring explains."""
    recipe = get_recipe(config.recipe)
    spec = recipe.spec.with_size(config.image_size)
    speed = resolve_speed(device, amp=config.amp, channels_last=config.channels_last, compile=config.compile,
                          processes=group.local_world)  # CPU threads shared by this machine's ranks
    apply_threads(speed)
    seed_everything(config.seed)
    init = read_init(config.init) if config.init is not None and ckpt is None else None
    if init is not None:
        say(init.describe())
    model, optimizer, ema = _make_model(config, recipe, spec, speed, device, ckpt, init)
    loss_fn = MaskDepthLoss(recipe)
    pos = Position(plan=[config.epochs]) if ckpt is None else _restore(config, ckpt, model, ema, group, say)
    data = _run_data(config, ckpt, out, given, group, say)
    # The depth the model learns runs the way its data set's does: the checkpoint (and so every
    # export) records it, and the pictures' legends follow it.
    spec = spec.with_depth_convention(data.pairs.depth_convention)
    model.spec = spec
    if init is not None:
        check_init_data(init, spec.depth_convention, config.data or "the synthetic set")
    if len(data.train_idx) < group.world:
        raise UserError(f"{len(data.train_idx)} training pairs cannot feed {group.world} processes")
    sampler = EpochBatches(len(data.train_idx), config.batch_size, config.seed, rank=group.rank, world=group.world)
    per_epoch = batches_per_epoch(len(data.train_idx), config.batch_size, group.world)
    scheduler = _scheduler(config, recipe, optimizer, ckpt, pos, per_epoch, say)
    loader_gen = torch.Generator()
    train_loader, val_loader = _loaders(config, data, sampler, loader_gen, group, cuda=device.type == "cuda")
    eval_model = model if ema is None else MaskDepthModel(ema.module, spec)
    options = StepOptions(augment_seed=config.seed if recipe.augment else None, grad_clip=config.effective_clip_grad,
                          ema=ema, net=distributed.wrap(model.net, group, device), all_finite=group.all_finite,
                          autocast=functools.partial(autocast, device, speed), scaler=grad_scaler(device, speed),
                          memory_format=memory_format(speed))
    return TrainComponents(recipe=recipe, spec=spec, speed=speed, model=model, ema=ema, optimizer=optimizer,
                           scheduler=scheduler, loss_fn=loss_fn, pos=pos, data=data, sampler=sampler,
                           per_epoch=per_epoch, loader_gen=loader_gen, train_loader=train_loader,
                           val_loader=val_loader, eval_model=eval_model, options=options)


def _scheduler(config: TrainConfig, recipe: Recipe, optimizer: torch.optim.Optimizer, ckpt: dict[str, Any] | None,
               pos: Position, per_epoch: int, say: Callable[[str], None]) -> Any:
    """The schedule of the run's plan (extended when --epochs asks for more than planned), with
    a resumed run's optimiser and scheduler state loaded after it is made: making it sets the
    optimiser's learning rate."""
    planned = pos.plan[-1]
    if config.epochs > planned:
        pos.plan.append(config.epochs)
        say(describe_extension(recipe, config.effective_lr, planned, config.epochs))
    ends = [e * per_epoch for e in pos.plan]
    scheduler = make_scheduler(recipe, optimizer, ends[0], ends[1:])
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["training"]["optimizer"])
        scheduler.load_state_dict(ckpt["training"]["scheduler"])
        if config.epochs > planned:
            follow_schedule(optimizer, scheduler)
    return scheduler


def _make_model(config: TrainConfig, recipe: Recipe, spec: IOSpec, speed: SpeedOptions, device: torch.device,
                ckpt: dict[str, Any] | None, init: InitModel | None,
                ) -> tuple[MaskDepthModel, torch.optim.Optimizer, WeightAverage | None]:
    """The network (a resumed run's tail as it was; a new run's as the config says), `init`'s
    weights in it before the optimiser and the average see it."""
    tail = tail_stats_from(ckpt) if ckpt is not None else config.effective_tail
    model = MaskDepthModel(EVA4Net(tail), spec)
    if init is not None:
        model.net.load_state_dict(init.state_for(tail))
    prepare_model(model, device, replace(speed, compile=False))  # same parameters, same state dict keys
    optimizer = make_optimizer(recipe, model.net.parameters(), config.effective_lr, config.effective_momentum)
    ema = WeightAverage(model.net, recipe.ema) if recipe.ema > 0 else None
    if speed.compile:  # after the average's copy, which stays an eager module
        model.net.compile()
    return model, optimizer, ema


def _restore(config: TrainConfig, ckpt: dict[str, Any], model: MaskDepthModel, ema: WeightAverage | None,
             group: distributed.Group, say: Callable[[str], None]) -> Position:
    """Weights, average and RNGs of the checkpoint; the optimiser and scheduler come later."""
    training = ckpt["training"]
    model.net.load_state_dict(training.get("live_model", ckpt["model"]))
    if ema is not None:
        ema.load_state_dict(ckpt["model"])
        ema.updates = int(training.get("ema_updates", 0))
    restore_rng(training["rng"])
    pos = position_of(ckpt)
    _resume_world(ckpt, pos, group)
    say(f"resuming {config.resume} at step {pos.step} (epoch {pos.epoch + 1}, batch {pos.batch})")
    return pos


def _resume_world(ckpt: dict[str, Any], pos: Position, group: distributed.Group) -> None:
    was = int(ckpt["training"].get("world", 1))
    if was != group.world and pos.batch:
        raise UserError(f"this run stopped inside an epoch with {was} training process(es); resume it with "
                        f"{was} (the batches of the epoch are dealt out per process), or from a finished epoch")


def _run_data(config: TrainConfig, ckpt: dict[str, Any] | None, out: Path,
              given: tuple[Any, list[int], list[int]] | None, group: distributed.Group,
              say: Callable[[str], None]) -> RunData:
    """The given data set, or the synthetic one in the run folder (rank 0 makes it first)."""
    if given is not None:
        return RunData(*given)
    if not group.main:
        group.barrier()  # rank 0 makes the synthetic set first
    pairs, train_idx, val_idx, to_metres = synthetic_data(config, out, say)
    if group.main:
        group.barrier()
    if ckpt is not None:
        check_same_data(ckpt, out / "data", len(pairs), len(val_idx))
    return RunData(pairs, train_idx, val_idx, to_metres)


def _loaders(config: TrainConfig, data: RunData, sampler: EpochBatches, loader_gen: torch.Generator,
             group: distributed.Group, cuda: bool) -> tuple[DataLoader, DataLoader | None]:
    """The training loader (batches from `sampler`) and, on rank 0 with a held-out part, the validation one."""
    size = (config.image_size, config.image_size)
    loader_kw: dict[str, Any] = {"num_workers": config.workers, "pin_memory": cuda}
    if config.workers:  # the workers leave Ctrl-C to the training process (`train.interrupt`)
        loader_kw.update(persistent_workers=True, worker_init_fn=ignore_sigint)
    train_loader = DataLoader(PairTensors(data.pairs, data.train_idx, size), batch_sampler=sampler,
                              generator=loader_gen, **loader_kw)
    # Its own generator too: validation (also run when --max-steps stops mid-epoch) must not
    # draw from the global RNG, or a resumed run's RNG state would differ from an unbroken one.
    val_loader = (DataLoader(PairTensors(data.pairs, data.val_idx, size), batch_size=config.batch_size, shuffle=False,
                             generator=torch.Generator().manual_seed(config.seed), **loader_kw)
                  if data.val_idx and group.main else None)
    return train_loader, val_loader
