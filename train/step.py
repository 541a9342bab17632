"""One optimiser step, one epoch of them, and one pass of evaluation.

The step is where a recipe's extras act (augmentation, gradient clipping, weight averaging)
and where the speed options do (autocast, a gradient scaler for fp16); the loop around it
(`train.loop`) only decides which batches, when to evaluate and what to save.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from toolkit.core.errors import UserError
from toolkit.core.spec import SEED_SPEC
from toolkit.net.model import MaskDepthModel
from toolkit.verify.metrics import MetricAccumulator

from .augment import augment_batch
from .ema import WeightAverage
from .losses import MaskDepthLoss

# The accumulator's `depth_iou` is the IoU of "depth above 0.5", kept for comparison with the
# seed's kind of figure. On data whose depth lies mostly below 0.5 (the synthetic set's mean is
# 0.30) both sides are often empty and it reads 1.0 whatever the error, so a run names it for
# what it is, and RMSE, AbsRel and delta1 are the depth figures it shows.
METRIC_NAMES = {"depth_iou": "depth_above_half_iou"}
_EARLIER_NAMES = {f"val_{old}": f"val_{new}" for old, new in METRIC_NAMES.items()}


def with_current_names(row: Mapping[str, Any]) -> dict[str, Any]:
    """A history row of an earlier run (its checkpoint) under today's names, so a resumed run's
    metrics.csv and curves have one column per figure."""
    return {_EARLIER_NAMES.get(k, k): v for k, v in row.items()}


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stops, the last good checkpoint stays."""


def forward_raw(model: MaskDepthModel, bg: torch.Tensor, fgbg: torch.Tensor,
                net: Callable[..., Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw network outputs for [0, 1] inputs, normalised by the wrapper (the one place it is done).
    `net`: what to call instead of `model.net` (its DDP wrapper or compiled form in training)."""
    return (net or model.net)(model.norm_bg(bg), model.norm_fgbg(fgbg))


def batch_to(batch: dict[str, torch.Tensor], device: torch.device,
             memory_format: torch.memory_format = torch.contiguous_format) -> list[torch.Tensor]:
    return [batch[k].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            for k in ("bg", "fgbg", "mask", "depth")]


@dataclass
class StepOptions:
    """What a recipe (and the speed options) add to the plain optimiser step."""

    augment_seed: int | None = None  # augment each batch, draws seeded by (seed, step)
    grad_clip: float = 0.0  # max global gradient norm; 0 = none
    ema: WeightAverage | None = None  # updated after every optimiser step
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    scaler: Any = None  # a torch.amp.GradScaler for fp16 autocast
    net: Callable[..., Any] | None = None  # the training forward: DDP wrapper / compiled net
    memory_format: torch.memory_format = torch.contiguous_format  # of the input batches
    all_finite: Callable[[float], bool] = math.isfinite  # across ranks in a distributed run


def train_one_epoch(model: MaskDepthModel, batches: Iterable[dict[str, torch.Tensor]], optimizer,
                    scheduler, loss_fn: MaskDepthLoss, device: torch.device, *, limit: int | None = None,
                    on_step: Callable[[float, int], bool | None] | None = None,
                    sums: dict[str, float] | None = None, first_step: int = 0,
                    options: StepOptions | None = None) -> dict[str, float]:
    """Up to `limit` optimiser steps over `batches`. Returns the loss sums and counts of the
    epoch, continued from `sums` (a resumed epoch adds in the same order as an unbroken one).
    `first_step` is the run's step count before this call (it seeds the augmentation).
    The loss is checked before each step, so a NaN never reaches the weights. `on_step` is
    called after each step; a true return ends the epoch there (Ctrl-C: `train.interrupt`)."""
    opts = options or StepOptions()
    model.train()
    sums = dict(sums) if sums else {"loss": 0.0, "mask_loss": 0.0, "depth_loss": 0.0, "batches": 0, "images": 0}
    # The parts are summed on the device (one sync per step, for the NaN check, not three).
    parts_sum = torch.tensor([sums["mask_loss"], sums["depth_loss"]], dtype=torch.float64, device=device)
    step = int(first_step)
    try:
        for batch in batches if limit is None else itertools.islice(batches, limit):
            bg, fgbg, mask, depth = batch_to(batch, device, opts.memory_format)
            if opts.augment_seed is not None:
                bg, fgbg, mask, depth = augment_batch(bg, fgbg, mask, depth, seed=opts.augment_seed, step=step)
            with opts.autocast():
                mask_raw, depth_raw = forward_raw(model, bg, fgbg, opts.net)
            loss, parts = loss_fn(mask_raw.float(), depth_raw.float(), mask, depth)
            value = float(loss.item())
            if not opts.all_finite(value):
                raise TrainingDiverged(f"the training loss became {value}")
            optimizer.zero_grad(set_to_none=True)
            if opts.scaler is not None:
                opts.scaler.scale(loss).backward()
                opts.scaler.unscale_(optimizer)
            else:
                loss.backward()
            if opts.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.net.parameters(), opts.grad_clip)
            if opts.scaler is not None:
                opts.scaler.step(optimizer)
                opts.scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            if opts.ema is not None:
                opts.ema.update(model.net)
            step += 1
            parts_sum += torch.stack([parts["mask_loss"], parts["depth_loss"]]).to(torch.float64)
            sums["loss"] += value
            sums["batches"] += 1
            sums["images"] += int(bg.shape[0])
            if on_step is not None and on_step(value, int(bg.shape[0])):
                break
    finally:
        sums["mask_loss"], sums["depth_loss"] = (float(v) for v in parts_sum.tolist())
    return sums


@torch.no_grad()
def evaluate(model: MaskDepthModel, batches: Iterable[dict[str, torch.Tensor]], loss_fn: MaskDepthLoss,
             device: torch.device, *, to_metres: Callable[[np.ndarray], np.ndarray] | None = None,
             keep: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Validation losses and metrics (`toolkit.verify.metrics`), keys prefixed `val_`.

    The seed-style figures use the raw outputs when the model is trained in the seed's target
    space, as the seed computed them. `keep`, when given, receives the first batch (for pictures).
    """
    model.eval()
    seed_space = model.spec.mask == SEED_SPEC.mask and model.spec.depth == SEED_SPEC.depth
    acc = MetricAccumulator(to_metres=to_metres)
    losses = {"loss": 0.0, "mask_loss": 0.0, "depth_loss": 0.0}
    n = 0
    for batch in batches:
        bg, fgbg, mask, depth = batch_to(batch, device)
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
    out.update({f"val_{METRIC_NAMES.get(k, k)}": v for k, v in acc.result().items()})
    return out


def score_of(row: dict[str, Any]) -> float:
    """What `best.pt` maximises: held-out mask IoU minus depth RMSE (`train.loop`'s docstring),
    else minus the training loss. Unchanged by the depth IoU's rename: the score never used it,
    and RMSE stays its depth term because it exists on every data set (AbsRel and delta1 need
    metric depth) and moves with every pixel's error rather than jumping when a region empties."""
    if "val_mask_iou" in row:
        return float(row["val_mask_iou"]) - float(row["val_depth_rmse"])
    return -float(row.get("train_loss", float("inf")))




@torch.no_grad()
def predict_arrays(model: MaskDepthModel, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, np.ndarray]:
    """Inputs, targets and decoded predictions of one batch as numpy arrays (for pictures),
    leaving the model in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        bg, fgbg, mask, depth = batch_to(batch, device)
        mask_pred, depth_pred = model(bg, fgbg)
    finally:
        model.train(was_training)
    return {k: t.float().cpu().numpy() for k, t in {"bg": bg, "fgbg": fgbg, "mask_pred": mask_pred, "mask": mask,
                                                     "depth_pred": depth_pred, "depth": depth}.items()}
