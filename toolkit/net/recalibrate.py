"""BatchNorm statistics that match what the network computes: a label-free check and a re-estimation.

Why: every export is checked against PyTorch, and PyTorch in eval mode applies each BatchNorm's
running statistics. When those statistics are not what the layer saw in training, eval mode
computes another function than the one trained, and every export agrees with it. The original
author's checkpoints are the case in point (architecture.md): their shared decoder tail keeps a
blend of the mask and depth branches' statistics and segments nothing in eval mode.

The check (`agreement`) needs no labels: the IoU between the masks of eval mode and those of the
same weights normalised by each batch's own statistics (what training computed). A model whose
statistics fit its weights scores high (0.69 for the re-estimated epoch-12 fixture on synthetic
pairs, 0.84 on real ones); the epoch-12 fixture as shipped scores 0.000.

The fix (`reestimate`, "precise BN" / AdaBN / NNCF's BatchNorm adaptation): run unlabelled pairs
through the network in training mode without learning anything, every BatchNorm averaging the
batch statistics it sees (cumulative mean: `momentum=None`), the tail one set per head. A
shared tail becomes a per-head one (the weights stay as trained); a joint tail stays joint (its
training normalised both branches together, so its statistics stay one blend).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import CheckFailed, UserError
from ..core.spec import INPUT_NAMES
from ..data.calib import CalibrationPairs, check_calibration_data, check_pair_counts, load_pairs, synthetic_pairs
from ..verify.metrics import mask_iou
from .checkpoint import build_model, load_checkpoint, make_checkpoint, save_checkpoint, spec_of, tail_stats_from
from .model import EVA4Net, MaskDepthModel, per_head_state, tail_stats_of

MIN_AGREEMENT = 0.6  # below it, a model's running statistics do not match its network
DEFAULT_CALIB_PAIRS = 64
DEFAULT_GATE_PAIRS = 16
BATCH = 16  # pairs per forward: BatchNorm's batch statistics need more than a few
SHUFFLE_SEED = 0
PURPOSE = "re-estimation"  # what the shared pair loaders' messages call this use of them


Tick = Callable[[], None]  # called after each batch (a progress bar's advance)


def _count(pairs: dict[str, np.ndarray]) -> int:
    return int(pairs[INPUT_NAMES[0]].shape[0])


def _batches(pairs: dict[str, np.ndarray], batch: int, order: np.ndarray | None = None,
             tick: Tick | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """`pairs` as channels-last tensors, `batch` at a time (channels-last: the dilated depthwise
    convolutions run about twice as fast on the CPU)."""
    order = np.arange(_count(pairs)) if order is None else order
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        yield tuple(torch.from_numpy(np.ascontiguousarray(pairs[k][idx])).to(memory_format=torch.channels_last)
                    for k in INPUT_NAMES)
        if tick is not None:
            tick()


@contextlib.contextmanager
def _channels_last(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with channels-last weights for a while; its weights go back to the plain layout
    after (what a checkpoint stores)."""
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format)


def _masks(model: MaskDepthModel, pairs: dict[str, np.ndarray], batch: int, tick: Tick | None) -> np.ndarray:
    with torch.no_grad(), _channels_last(model):
        return np.concatenate([model(bg, fg)[0].numpy() for bg, fg in _batches(pairs, batch, tick=tick)])


def batches_of(pairs: dict[str, np.ndarray], batch: int = BATCH) -> int:
    """How many forward batches `pairs` take (for a progress bar's total)."""
    return -(-_count(pairs) // batch)


def agreement(model: MaskDepthModel, pairs: dict[str, np.ndarray], batch: int = BATCH, tick: Tick | None = None) -> float:
    """Mean IoU (masks at 0.5) between `model` in eval mode and the same weights normalised by
    each batch's own statistics, on `pairs` (bg, fgbg in [0, 1]); `model` is left unchanged.
    Batches of `batch` pairs, as training normalised them. Two passes: `2 * batches_of(pairs)`
    ticks."""
    was_training = model.training
    live = copy.deepcopy(model).train()  # training mode updates running statistics: on a copy
    try:
        eval_masks = _masks(model.eval(), pairs, batch, tick)
        batch_masks = _masks(live, pairs, batch, tick)
    finally:
        model.train(was_training)
    return mask_iou(eval_masks, batch_masks)


def _norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reestimate(model: MaskDepthModel, pairs: dict[str, np.ndarray], batch: int = BATCH, seed: int = SHUFFLE_SEED,
               tick: Tick | None = None) -> int:
    """Replace every BatchNorm's running statistics of `model` by the average of the batch
    statistics of `pairs` (shuffled: a batch of one scene would under-state the variance).
    Weights are untouched; returns how many BatchNorm statistic sets were re-estimated."""
    norms = _norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    order = np.random.default_rng(seed).permutation(_count(pairs))
    model.train()
    try:
        with torch.no_grad(), _channels_last(model):
            for bg, fg in _batches(pairs, batch, order, tick):
                model(bg, fg)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return len(norms)


@dataclass
class Recalibration:
    """What a re-estimation did, and the label-free agreement before and after it."""

    before: float
    after: float
    tail_before: str
    tail_after: str
    calib_pairs: int
    gate_pairs: int
    source: str  # "synthetic" or the data set's name
    min_agreement: float = MIN_AGREEMENT
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return math.isfinite(self.after) and self.after >= self.min_agreement

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        tail = (f"tail {self.tail_before} -> {self.tail_after}" if self.tail_before != self.tail_after
                else f"tail {self.tail_after}")
        return (f"label-free agreement {self.before:.3f} -> {self.after:.3f} (eval-mode vs batch-statistics "
                f"masks, IoU on {self.gate_pairs} held-out {self.source} pairs; >= {self.min_agreement:g} passes); "
                f"re-estimated on {self.calib_pairs} {self.source} pairs, {tail}")

    def to_dict(self) -> dict[str, Any]:
        return {"agreement_before": self.before, "agreement_after": self.after, "tail_before": self.tail_before,
                "tail_after": self.tail_after, "calib_pairs": self.calib_pairs, "gate_pairs": self.gate_pairs,
                "source": self.source, "min_agreement": self.min_agreement}


def recalibrated_model(ckpt: dict[str, Any]) -> MaskDepthModel:
    """The checkpoint's model, ready to re-estimate: a shared tail made per-head."""
    tail = tail_stats_from(ckpt)
    state = ckpt["model"]
    if tail == "shared":
        tail, state = "per_head", per_head_state(state)
    net = EVA4Net(tail)
    net.load_state_dict(state)
    return MaskDepthModel(net, spec_of(ckpt)).eval()


def recalibrate(ckpt: dict[str, Any], pairs: CalibrationPairs, *, min_agreement: float = MIN_AGREEMENT,
                batch: int = BATCH, progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], Recalibration]:
    """`ckpt` with every BatchNorm's statistics re-estimated on `pairs.calib` (the tail one set
    per head unless it was trained jointly), judged by the label-free agreement on `pairs.gate`
    (other backgrounds). Returns the new checkpoint (no training state: a new start, not a
    resumable run) and the report; whether it passed is the caller's to act on. `progress(done,
    total)` after each forward batch."""
    total = 4 * batches_of(pairs.gate, batch) + batches_of(pairs.calib, batch)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    before = agreement(build_model(ckpt), pairs.gate, batch, tick)
    model = recalibrated_model(ckpt)
    reestimate(model, pairs.calib, batch, tick=tick)
    after = agreement(model, pairs.gate, batch, tick)
    report = Recalibration(before, after, tail_from := tail_stats_from(ckpt), model.net.tail_stats,
                           pairs.calib_count, pairs.gate_count, pairs.source, min_agreement, list(pairs.notes))
    source = f"{ckpt.get('source', '')}; BatchNorm statistics re-estimated on {report.calib_pairs} {report.source} pairs"
    new = make_checkpoint(model.net.state_dict(), spec_of(ckpt), epoch=int(ckpt.get("epoch", 0)),
                          step=int(ckpt.get("step", 0)), recipe=str(ckpt.get("recipe", "")), source=source.lstrip("; "),
                          metrics=dict(ckpt.get("metrics") or {}), tail_stats=model.net.tail_stats)
    new["recalibration"] = report.to_dict() | {"tail_trained": tail_from}
    assert tail_stats_of(new["model"]) == ("per_head" if model.net.tail_stats == "per_head" else "shared")
    return new, report


@dataclass(frozen=True)
class CalibrationOptions:
    """Where the unlabelled pairs of a re-estimation come from, and how many: the rules are
    checked here, so a Python caller gets the CLI's errors. `data` None: a synthetic set made
    for the run (a site's own pairs do better: architecture.md's table)."""

    data: Path | None = None
    calib_pairs: int = DEFAULT_CALIB_PAIRS
    gate_pairs: int = DEFAULT_GATE_PAIRS
    min_agreement: float = MIN_AGREEMENT

    def __post_init__(self) -> None:
        check_pair_counts(self.calib_pairs, self.gate_pairs, PURPOSE)
        if not 0.0 <= self.min_agreement <= 1.0:
            raise UserError(f"{PURPOSE}: the minimum agreement must be in [0, 1], got {self.min_agreement}")
        if self.data is not None:
            check_calibration_data(self.data, purpose=PURPOSE)

    def pairs(self, size: tuple[int, int], say: Callable[[str], None] = print) -> CalibrationPairs:
        """The calibration and held-out pairs at `size`; without data, a synthetic set (said)."""
        if self.data is not None:
            return load_pairs(self.data, size, calib_pairs=self.calib_pairs, gate_pairs=self.gate_pairs, purpose=PURPOSE)
        say(f"no --calib: re-estimating on {self.calib_pairs} pairs of a synthetic set made for this run "
            f"(a site's own unlabelled pairs, --calib DIR, do better)")
        with tempfile.TemporaryDirectory(prefix="toolkit-recalibrate-") as tmp:
            return synthetic_pairs(tmp, size, calib_pairs=self.calib_pairs, gate_pairs=self.gate_pairs, purpose=PURPOSE)


def recalibrate_checked(ckpt: dict[str, Any], options: CalibrationOptions, name: str,
                        say: Callable[[str], None] = print,
                        progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], Recalibration]:
    """`recalibrate` on the options' pairs, refused (`CheckFailed`, exit 1) when the agreement
    stays below the minimum: the caller writes nothing then."""
    pairs = options.pairs(spec_of(ckpt).size, say)
    new, report = recalibrate(ckpt, pairs, min_agreement=options.min_agreement, progress=progress)
    for note in report.notes:
        say(f"note: {note}")
    if not report:
        raise CheckFailed(f"{name}: not written: {report.summary()}: the re-estimated statistics still do not "
                          f"match the network (other pairs, more of them, or --keep-statistics for the exact import)")
    return new, report


def recalibrate_file(ckpt_path: str | Path, out: str | Path, options: CalibrationOptions,
                     say: Callable[[str], None] = print,
                     progress: Callable[[int, int], None] | None = None) -> Recalibration:
    """`toolkit recalibrate`: a toolkit checkpoint with its BatchNorm statistics re-estimated,
    written to `out` only when it passes (atomically)."""
    from ..core.fsutil import check_output_file

    check_output_file(out)  # before the work, not after it
    ckpt = load_checkpoint(ckpt_path)
    new, report = recalibrate_checked(ckpt, options, str(out), say, progress)
    save_checkpoint(out, new)
    return report


@dataclass(frozen=True)
class StatisticsCheck:
    """A checkpoint's label-free agreement on a few synthetic pairs: whether its BatchNorm
    statistics match what its network computes (`doctor --model`, `parity`)."""

    name: str
    agreement: float
    pairs: int
    min_agreement: float = MIN_AGREEMENT

    def __bool__(self) -> bool:
        return self.agreement >= self.min_agreement

    def line(self) -> str:
        figure = (f"label-free agreement {self.agreement:.3f} {'>=' if self else '<'} {self.min_agreement:g} "
                  f"(eval-mode vs batch-statistics masks on {self.pairs} synthetic pairs)")
        if self:
            return f"{self.name}: BatchNorm statistics match its network: {figure}"
        return (f"warning: {self.name}: BatchNorm statistics do not match what its network computes: {figure}; "
                f"eval mode, and every export of it, compute another function than the one trained "
                f"(toolkit recalibrate {self.name} --out NEW.pt re-estimates them)")


@functools.lru_cache(maxsize=8)
def _agreement_of(path: str, stamp: tuple[int, int], pairs: int) -> float:
    ckpt = load_checkpoint(path)
    size = spec_of(ckpt).size
    with tempfile.TemporaryDirectory(prefix="toolkit-statistics-") as tmp:
        gate = synthetic_pairs(tmp, size, calib_pairs=1, gate_pairs=pairs, purpose=PURPOSE).gate
    return agreement(build_model(ckpt), gate, batch=pairs)


def check_statistics(path: str | Path, pairs: int = 8) -> StatisticsCheck:
    """`path`'s label-free agreement on `pairs` synthetic pairs (computed once per file version
    in a process: parity and doctor may ask again)."""
    path = Path(path)
    st = path.stat()
    return StatisticsCheck(path.name, _agreement_of(str(path.resolve()), (st.st_mtime_ns, st.st_size), pairs), pairs)
