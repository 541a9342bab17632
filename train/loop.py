"""The training job: `run(config)` from data to checkpoints, resumable bit for bit.

Determinism is designed in rather than hoped for: the batch order of an epoch is a function of
(seed, epoch) (`train.dataset.epoch_order`), the DataLoader draws from its own generator and not
from the global RNG, and a checkpoint records the position inside the epoch. So on the CPU a run
stopped at any step and resumed ends with exactly the weights of a run that never stopped. On
CUDA that holds only with `deterministic` (`--deterministic`): by default cuDNN autotunes its
kernels for speed (`benchmark`), and the kernels it picks may differ between the two runs.

`best.pt` is the epoch with the highest score `val mask IoU - val depth RMSE` (both on [0, 1]
values: overlap of the person, and depth error in the same units), or the lowest training loss
when there is no held-out part.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from toolkit.checkpoint import make_checkpoint, save_checkpoint
from toolkit.errors import ToolkitError, UserError
from toolkit.fsutil import ensure_dir
from toolkit.metrics import MetricAccumulator
from toolkit.model import EVA4Net, MaskDepthModel
from toolkit.spec import SEED_SPEC

from .config import Recipe, TrainConfig, get_recipe
from .dataset import EpochBatches, PairTensors, batches_per_epoch
from .logging import TensorBoard, write_metrics_csv, write_samples
from .losses import MaskDepthLoss
from .progress import EpochProgress
from .state import Position, load_resume, position_of, restore_rng, seed_everything, training_state


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stops, the last good checkpoint stays."""


@dataclass
class TrainResult:
    out: Path
    last: Path
    best: Path | None
    steps: int
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device cuda: CUDA is not available to this PyTorch ({torch.__version__})")
    return torch.device("cuda")


def forward_raw(model: MaskDepthModel, bg: torch.Tensor, fgbg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw network outputs for [0, 1] inputs, normalised by the wrapper (the one place it is done)."""
    return model.net(model.norm_bg(bg), model.norm_fgbg(fgbg))


def make_optimizer(recipe: Recipe, params: Iterable[torch.nn.Parameter], lr: float, momentum: float):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)
    raise UserError(f"recipe {recipe.name!r}: unknown optimizer {recipe.optimizer!r}")


def make_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer):
    """A scheduler always exists (a constant one for the seed), so checkpoints have its slot."""
    if recipe.scheduler == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    raise UserError(f"recipe {recipe.name!r}: unknown scheduler {recipe.scheduler!r}")


def _batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [batch[k].to(device, non_blocking=True) for k in ("bg", "fgbg", "mask", "depth")]


def train_one_epoch(model: MaskDepthModel, batches: Iterable[dict[str, torch.Tensor]], optimizer,
                    scheduler, loss_fn: MaskDepthLoss, device: torch.device, *, limit: int | None = None,
                    on_step: Callable[[float, int], None] | None = None,
                    sums: dict[str, float] | None = None) -> dict[str, float]:
    """Up to `limit` optimiser steps over `batches`. Returns the loss sums and counts of the
    epoch, continued from `sums` (a resumed epoch adds in the same order as an unbroken one).
    The loss is checked before each step, so a NaN never reaches the weights."""
    model.train()
    sums = dict(sums) if sums else {"loss": 0.0, "mask_loss": 0.0, "depth_loss": 0.0, "batches": 0, "images": 0}
    # The parts are summed on the device (one sync per step, for the NaN check, not three).
    parts_sum = torch.tensor([sums["mask_loss"], sums["depth_loss"]], dtype=torch.float64, device=device)
    try:
        for batch in batches if limit is None else itertools.islice(batches, limit):
            bg, fgbg, mask, depth = _batch_to(batch, device)
            mask_raw, depth_raw = forward_raw(model, bg, fgbg)
            loss, parts = loss_fn(mask_raw, depth_raw, mask, depth)
            value = float(loss.item())
            if not math.isfinite(value):
                raise TrainingDiverged(f"the training loss became {value}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            parts_sum += torch.stack([parts["mask_loss"], parts["depth_loss"]]).to(torch.float64)
            sums["loss"] += value
            sums["batches"] += 1
            sums["images"] += int(bg.shape[0])
            if on_step is not None:
                on_step(value, int(bg.shape[0]))
    finally:
        sums["mask_loss"], sums["depth_loss"] = (float(v) for v in parts_sum.tolist())
    return sums


@torch.no_grad()
def evaluate(model: MaskDepthModel, batches: Iterable[dict[str, torch.Tensor]], loss_fn: MaskDepthLoss,
             device: torch.device, *, to_metres: Callable[[np.ndarray], np.ndarray] | None = None,
             keep: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Validation losses and metrics (`toolkit.metrics`), keys prefixed `val_`.

    The seed-style figures use the raw outputs when the model is trained in the seed's target
    space, as the seed computed them. `keep`, when given, receives the first batch (for pictures).
    """
    model.eval()
    seed_space = model.spec.mask == SEED_SPEC.mask and model.spec.depth == SEED_SPEC.depth
    acc = MetricAccumulator(to_metres=to_metres)
    losses = {"loss": 0.0, "mask_loss": 0.0, "depth_loss": 0.0}
    n = 0
    for batch in batches:
        bg, fgbg, mask, depth = _batch_to(batch, device)
        mask_raw, depth_raw = forward_raw(model, bg, fgbg)
        loss, parts = loss_fn(mask_raw, depth_raw, mask, depth)
        losses["loss"] += float(loss)
        losses["mask_loss"] += float(parts["mask_loss"])
        losses["depth_loss"] += float(parts["depth_loss"])
        n += 1
        pm, pd = model.decode_mask(mask_raw), model.decode_depth(depth_raw)
        arrays = {k: t.float().cpu().numpy() for k, t in
                  {"bg": bg, "fgbg": fgbg, "mask_pred": pm, "depth_pred": pd, "mask": mask, "depth": depth,
                   "mask_raw": mask_raw, "depth_raw": depth_raw}.items()}
        acc.update(arrays["mask_pred"], arrays["depth_pred"], arrays["mask"], arrays["depth"],
                   pred_mask_raw=arrays["mask_raw"] if seed_space else None,
                   pred_depth_raw=arrays["depth_raw"] if seed_space else None)
        if keep is not None and not keep:
            keep.update(arrays)
    if not n:
        return {}
    out = {f"val_{k}": v / n for k, v in losses.items()}
    out.update({f"val_{k}": v for k, v in acc.result().items()})
    return out


def score_of(row: dict[str, Any]) -> float:
    """What `best.pt` maximises (see the module docstring)."""
    if "val_mask_iou" in row:
        return float(row["val_mask_iou"]) - float(row["val_depth_rmse"])
    return -float(row.get("train_loss", float("inf")))


def open_data(config: TrainConfig, resuming: bool = False):
    """(pairs, train indices, held-out indices) of a given `--data`, opened and split before the
    run folder is made, so a missing or unusable data set leaves nothing behind."""
    from toolkit.data import reader

    assert config.data is not None
    if not Path(config.data).exists():
        hint = (" (the data set of the run being resumed; if it moved, give --data with its new place)"
                if resuming else "")
        raise UserError(f"{config.data}: no such data folder or zip{hint}")
    pairs = reader.open_dataset(config.data)
    return (pairs, *_split(pairs, config, config.data))


def synthetic_data(config: TrainConfig, out: Path, say: Callable[[str], None]):
    """(pairs, train indices, held-out indices, to_metres) of the default synthetic set in
    `<out>/data`, made on first use (`synthesize` writes `<out>/.data.partial` and renames it)."""
    from toolkit.data import reader, synth

    data = out / "data"
    if not data.is_dir():
        say(f"making a synthetic data set in {data}")
        synth.synthesize(data, **config.synth)
    pairs = reader.open_dataset(data)
    return (pairs, *_split(pairs, config, data), synth.gray_to_metres)


def _split(pairs: Any, config: TrainConfig, where: Path) -> tuple[list[int], list[int]]:
    from toolkit.data import split

    train_idx, val_idx = split.split_by_background(pairs, holdout=config.holdout, seed=config.seed)
    if not len(train_idx):
        raise UserError(f"{where}: no training pairs left after holding out backgrounds")
    return list(train_idx), list(val_idx)


# PyTorch re-raises an error of a DataLoader worker with the worker's whole traceback folded into
# its message ("Caught UserError in DataLoader worker process 1. Original Traceback ...").
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def worker_error_message(error: BaseException) -> str | None:
    """The original one-line message of a toolkit error raised in a DataLoader worker, or None
    when `error` is not one (errors raised in this process pass through unchanged)."""
    text = str(error)
    if not isinstance(error, ToolkitError) or _WORKER_TRACEBACK not in text:
        return None
    last = text.rstrip().splitlines()[-1]  # "toolkit.errors.UserError: <message>"
    for cls in type(error).__mro__:
        for name in (f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__):
            if last.startswith(name + ": "):
                return last[len(name) + 2:]
    return last


@contextlib.contextmanager
def deterministic_kernels(enabled: bool, cuda: bool) -> Iterator[None]:
    """`--deterministic`: deterministic algorithms (a warning where an op has none) and cuDNN
    without autotuning. Otherwise cuDNN autotunes on CUDA (`benchmark`, faster, but its choice
    of kernels can differ between runs, so a resumed CUDA run is not bit-identical). The global
    settings are restored afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if enabled:
            if cuda:  # cuBLAS is deterministic only with a fixed workspace (read when first used)
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        elif cuda:
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def run(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train as `config` says; see the module docstring and `train.state` for resume.

    Options, device and a given data set are checked before the run folder is made; a run
    folder this call made is removed again when it fails before writing a checkpoint."""
    config.validate()
    ckpt = None
    if config.resume is not None:
        config, ckpt, _ = load_resume(config)
    else:  # the data path is stored absolute, so --resume works from any working directory
        config = replace(config.with_defaults(),
                         data=None if config.data is None else Path(config.data).resolve()).validate()
    device = resolve_device(config.device)
    given = open_data(config, resuming=ckpt is not None) if config.data is not None else None
    if given is not None and ckpt is not None:
        _check_same_data(ckpt, config.data, len(given[0]), len(given[2]))
    out = config.run_dir
    made = out  # the outermost folder this call makes (None: the run folder exists already)
    while not made.parent.exists() and made.parent != made:
        made = made.parent
    made = None if out.exists() else made
    out = ensure_dir(out)
    try:
        with deterministic_kernels(config.deterministic, device.type == "cuda"):
            return _train(config, ckpt, device, out, given, progress)
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


def _check_same_data(ckpt: dict[str, Any], data: Path, pairs: int, held_out: int) -> None:
    """A resumed run's data set (maybe a moved copy) must hold what the run was trained on."""
    was = ckpt["training"].get("data")
    if isinstance(was, dict) and (was.get("pairs"), was.get("held_out")) != (pairs, held_out):
        raise UserError(f"{data}: holds {pairs} pairs ({held_out} held out) but the run being resumed was trained "
                        f"on {was.get('pairs')} ({was.get('held_out')} held out); resume with the same data set")


def _train(config: TrainConfig, ckpt: dict[str, Any] | None, device: torch.device, out: Path,
           given: tuple[Any, list[int], list[int]] | None, progress: bool) -> TrainResult:
    if ckpt is None and (out / "last.pt").exists() and progress:
        print(f"note: {out} holds an earlier run; starting a new one over it "
              f"(--resume {out} continues a run, --out picks another folder)", file=sys.stderr)
    cuda = device.type == "cuda"
    recipe = get_recipe(config.recipe)
    spec = recipe.spec.with_size(config.image_size)
    bar = EpochProgress(enabled=progress)
    say = bar.print if progress else (lambda _msg: None)

    seed_everything(config.seed)
    model = MaskDepthModel(EVA4Net(), spec).to(device)
    optimizer = make_optimizer(recipe, model.net.parameters(), config.effective_lr, config.effective_momentum)
    scheduler = make_scheduler(recipe, optimizer)
    loss_fn = MaskDepthLoss(recipe)
    pos = Position()
    if ckpt is not None:
        model.net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["training"]["optimizer"])
        scheduler.load_state_dict(ckpt["training"]["scheduler"])
        restore_rng(ckpt["training"]["rng"])
        pos = position_of(ckpt)
        say(f"resuming {config.resume} at step {pos.step} (epoch {pos.epoch + 1}, batch {pos.batch})")

    if given is not None:
        (pairs, train_idx, val_idx), to_metres = given, None
    else:
        pairs, train_idx, val_idx, to_metres = synthetic_data(config, out, say)
        if ckpt is not None:
            _check_same_data(ckpt, out / "data", len(pairs), len(val_idx))
    data_counts = {"pairs": len(pairs), "held_out": len(val_idx)}
    size = (config.image_size, config.image_size)
    sampler = EpochBatches(len(train_idx), config.batch_size, config.seed)
    loader_gen = torch.Generator()
    loader_kw: dict[str, Any] = {"num_workers": config.workers, "pin_memory": cuda}
    if config.workers:
        loader_kw["persistent_workers"] = True
    train_loader = DataLoader(PairTensors(pairs, train_idx, size), batch_sampler=sampler,
                              generator=loader_gen, **loader_kw)
    # Its own generator too: validation (also run when --max-steps stops mid-epoch) must not
    # draw from the global RNG, or a resumed run's RNG state would differ from an unbroken one.
    val_loader = DataLoader(PairTensors(pairs, val_idx, size), batch_size=config.batch_size, shuffle=False,
                            generator=torch.Generator().manual_seed(config.seed), **loader_kw) if val_idx else None
    per_epoch = batches_per_epoch(len(train_idx), config.batch_size)
    last, best = out / "last.pt", out / "best.pt"
    tb = TensorBoard(out / "tensorboard", enabled=config.tensorboard, purge_step=pos.step or None,
                     say=lambda m: print(m, file=sys.stderr))

    written: list[Path] = []  # checkpoints this invocation wrote

    def save(path: Path, metrics: dict[str, Any]) -> None:
        written.append(path)
        state = training_state(optimizer, scheduler, config, pos, cuda, data=data_counts)
        save_checkpoint(path, make_checkpoint(model.net.state_dict(), spec, epoch=pos.epoch, step=pos.step,
                                              recipe=recipe.name, source="toolkit train", metrics=metrics,
                                              training=state))

    window: list[float] = []  # losses since the last TensorBoard point

    def on_step(loss: float, images: int) -> None:
        pos.step += 1
        pos.batch += 1
        window.append(loss)
        bar.step(loss, images)
        if pos.step % config.log_every == 0:
            tb.scalars({"loss": sum(window) / len(window)}, pos.step, prefix="train/")
            window.clear()

    say(f"training on {device.type}: {len(train_idx)} pairs, {len(val_idx)} held out, "
        f"{per_epoch} steps per epoch, run folder {out}")
    try:
        while pos.epoch < config.epochs and (config.max_steps is None or pos.step < config.max_steps):
            epoch, start = pos.epoch, pos.batch
            sampler.set_epoch(epoch, start)
            loader_gen.manual_seed(config.seed * 1_000_003 + epoch)
            limit = None if config.max_steps is None else config.max_steps - pos.step
            bar.start_epoch(epoch + 1, config.epochs, total=per_epoch, done=start)
            t0 = time.perf_counter()
            sums = train_one_epoch(model, train_loader, optimizer, scheduler, loss_fn, device,
                                   limit=limit, on_step=on_step, sums=pos.partial if start else None)
            seconds = time.perf_counter() - t0
            bar.end_epoch()
            images = sums["images"] - pos.partial.get("images", 0)
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
                row.update(evaluate(model, val_loader, loss_fn, device, to_metres=to_metres, keep=keep))
            pos.history.append(row)
            improved = score_of(row) > pos.best_score
            if improved:
                pos.best_score, pos.best_epoch = score_of(row), pos.epoch
            save(last, row)
            if improved:
                save(best, row)
            write_metrics_csv(out / "metrics.csv", pos.history)
            tb.scalars(row, pos.step, prefix="epoch/")
            if config.samples and keep:
                write_samples(out / "samples.png", keep["bg"], keep["fgbg"], keep["mask_pred"], keep["mask"],
                              keep["depth_pred"], keep["depth"])
            say(_summary(row))
    except TrainingDiverged as e:
        good = last.exists() and (written or ckpt is not None)
        kept = f"; the last good checkpoint is {last}" if good else "; no checkpoint of this run was written"
        raise TrainingDiverged(f"{e} at step {pos.step + 1} (epoch {pos.epoch + 1}): training stopped{kept}") from None
    finally:
        bar.close()
        tb.close()
    if ckpt is not None and pos.step == position_of(ckpt).step:
        say(f"nothing to do: the run is at step {pos.step}, epoch {pos.epoch} of {config.epochs}"
            + (f", max steps {config.max_steps}" if config.max_steps is not None else ""))
    if not last.exists():  # resumed a finished run into a new folder: it still gets its last.pt
        save(last, pos.history[-1] if pos.history else {})
    return TrainResult(out=out, last=last, best=best if best.exists() else None, steps=pos.step,
                       epochs=pos.epoch, history=list(pos.history))


def _summary(row: dict[str, Any]) -> str:
    keys = ("train_loss", "val_loss", "val_mask_iou", "val_mask_dice", "val_depth_rmse", "val_depth_iou")
    parts = [f"{k} {row[k]:.4f}" for k in keys if k in row]
    return f"epoch {row['epoch']} step {row['step']}: " + ", ".join(parts)
