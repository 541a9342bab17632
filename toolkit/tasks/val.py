"""`toolkit val`: how good each deployed model is against the labels, beside how fast, in one run.

`parity` proves an export is the same model as PyTorch; it cannot say the model is any good. This
scores every model (any runner: `.pt`, `.onnx` on ONNX Runtime or OpenVINO, `.engine`) against the
**ground truth** of a data set's held-out backgrounds (the split `toolkit train` and the int8 gate
use: whole backgrounds, `toolkit.data.holdout`), with the figures `toolkit train` reports
(`toolkit.verify.metrics.MetricAccumulator`: mask IoU/Dice per image, depth RMSE over pixels, AbsRel and
delta1), and times each at the batch sizes asked in the same run (`toolkit.tasks.bench`'s interleaved
rounds, so the latency ratios are measured over the same stretch of the machine's time).

Depth sides: a model's depth and a data set's each run one way (`toolkit.core.spec.DEPTH_CONVENTIONS`:
the model's metadata, the set's `dataset.json`). Both are read as "nearness" (1 = near) before
scoring, so a model is scored against data of the other convention too (said in a note), and the
near-region IoU is the region nearer than the middle grey whatever way the grey was stored.

Depth units: AbsRel and delta1 are ratios of depths, so they need depth in a unit where 0 means
"at the camera". The toolkit's synthetic set stores log-spaced grey (`gray_to_metres` gives
metres); another data set's grey levels are taken as a far-bright grey (`gray`: 0 at the camera,
the original set's own way), pixels below `metrics.DEPTH_EPS` left out. Without `--data` a synthetic set is made for the run (its own seed:
backgrounds no default training run has seen) and every pair of it is scored.

No torch at import: `.onnx` models are scored on the edge install.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError, positive
from ..core.spec import INPUT_NAMES, ORIGINAL_DEPTH_CONVENTION, OUTPUT_NAMES, nearness
from ..verify import metrics
from .bench import Target, check_timing, open_targets, parse_providers, time_interleaved
from .busy import BusyCheck, LoadReader, machine_reading

DEPTH_UNITS = ("auto", "synthetic", "gray")
DEFAULT_LIMIT = 64
SCORE_BATCH = 8  # pairs per call while scoring (timing uses the batch sizes asked)
HOLDOUT, SPLIT_SEED = 0.2, 0  # toolkit train's defaults: the same backgrounds are held out
SYNTH_SEED = 4051  # the set made without --data: not the default training set's seed (0)
SYNTH_BACKGROUNDS, SYNTH_FOREGROUNDS, SYNTH_PLACEMENTS = 4, 4, 2
FIGURES = ("mask_iou", "mask_dice", "depth_rmse", "depth_mae", "depth_absrel", "depth_delta1")


@dataclass
class HeldOut:
    """The scored pairs with their labels, at the models' size."""

    inputs: dict[str, np.ndarray]  # bg, fgbg: float32 [N, 3, H, W]
    truth: dict[str, np.ndarray]  # mask, depth: float32 [N, 1, H, W]
    source: str
    backgrounds: int
    units: str  # "synthetic" or "gray"
    depth_convention: str = ORIGINAL_DEPTH_CONVENTION  # which way the data set's depth grey runs

    @property
    def count(self) -> int:
        return int(self.inputs[INPUT_NAMES[0]].shape[0])


@dataclass
class ValRow:
    model: str
    backend: str
    precision: str
    pairs: int
    figures: dict[str, float]  # FIGURES and the seed-style ones, against the truth
    ms_per_pair: dict[int, float]  # batch -> median ms per call / batch
    speedup: dict[int, float] = field(default_factory=dict)  # pairs/s vs the first row, same batch
    nonfinite: int = 0  # NaN/inf output values

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["figures"] = {k: (v if np.isfinite(v) else None) for k, v in self.figures.items()}
        d["ms_per_pair"] = {str(k): v for k, v in self.ms_per_pair.items()}
        d["speedup"] = {str(k): v for k, v in self.speedup.items()}
        return d


@dataclass
class ValReport:
    data: str
    pairs: int
    backgrounds: int
    depth_units: str
    batches: list[int]
    rows: list[ValRow]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"note": "figures are against the data set's labels; ms_per_pair is the median call time over "
                        "the batch size, timed in interleaved rounds in this run",
                "data": self.data, "pairs": self.pairs, "backgrounds": self.backgrounds,
                "depth_units": self.depth_units, "batches": self.batches,
                "rows": [r.to_dict() for r in self.rows], "notes": list(self.notes)}


def held_out(data: str | Path, size: tuple[int, int], *, limit: int = DEFAULT_LIMIT, holdout: float = HOLDOUT,
             seed: int = SPLIT_SEED, units: str = "gray", every_pair: bool = False) -> HeldOut:
    """Up to `limit` pairs (evenly spaced) from the held-out backgrounds of `data` (all pairs
    with `every_pair`), with their mask and depth."""
    from ..data.holdout import evenly, split_by_background
    from ..data.reader import open_dataset

    with open_dataset(data) as ds:
        if every_pair:
            pool = list(range(len(ds)))
        else:
            pool = split_by_background(ds, holdout=holdout, seed=seed)[1]
            if not pool:
                raise UserError(f"{data}: all its pairs share one background; val scores held-out backgrounds, "
                                "so it needs pairs from at least 2")
        picks = [pool[i] for i in evenly(len(pool), limit)]
        arrays = ds.load_batch(picks, size)
        bgs = len({ds.samples[i].bg for i in picks})
        convention = ds.depth_convention
    return HeldOut({k: arrays[k] for k in INPUT_NAMES}, {k: arrays[k] for k in OUTPUT_NAMES}, Path(data).name, bgs, units,
                   convention)


def score(target: Target, pairs: HeldOut) -> ValRow:
    """One model's figures against the labels (its session loaded for this and freed after), both
    depths read as nearness (module docstring)."""
    from ..data.synth import gray_to_metres

    acc = metrics.MetricAccumulator(to_metres=gray_to_metres if pairs.units == "synthetic" else (lambda near: 1.0 - near))
    truth = nearness(pairs.truth["depth"], pairs.depth_convention)
    bad = 0
    with target.runner as runner:
        for i in range(0, pairs.count, SCORE_BATCH):
            feed = {k: np.ascontiguousarray(v[i:i + SCORE_BATCH]) for k, v in pairs.inputs.items()}
            out = runner.infer(feed)
            bad += int(sum((~np.isfinite(out[n])).sum() for n in OUTPUT_NAMES))
            got = {n: np.nan_to_num(out[n], nan=0.0, posinf=1.0, neginf=0.0) for n in OUTPUT_NAMES}
            acc.update(got["mask"], nearness(got["depth"], runner.spec.depth_convention),
                       pairs.truth["mask"][i:i + SCORE_BATCH], truth[i:i + SCORE_BATCH])
    return ValRow(str(target.path), runner.backend_used, runner.precision, pairs.count, acc.result(), {}, nonfinite=bad)


def _pairs_for(data: str | Path | None, size: tuple[int, int], units: str, limit: int, holdout: float, seed: int,
               tmp: str, every_pair: bool = False) -> tuple[HeldOut, list[str]]:
    if data is not None:
        if not Path(data).exists():
            raise UserError(f"{data}: no such data folder or zip")
        chosen = "gray" if units == "auto" else units
        pairs = held_out(data, size, limit=limit, holdout=holdout, seed=seed, units=chosen, every_pair=every_pair)
        if every_pair:
            return pairs, [f"{pairs.count} pairs from all {pairs.backgrounds} background{'s' if pairs.backgrounds != 1 else ''} "
                           f"of {pairs.source} (--all: a test set of its own, no pair held back for training)"]
        return pairs, [f"{pairs.count} pairs from {pairs.backgrounds} held-out background{'s' if pairs.backgrounds != 1 else ''} of {pairs.source} "
                       f"(holdout {holdout}, seed {seed}: the split toolkit train uses with the same values)"]
    from ..data.synth import synthesize

    folder = Path(tmp) / "val-data"
    synthesize(folder, backgrounds=SYNTH_BACKGROUNDS, foregrounds=SYNTH_FOREGROUNDS, placements=SYNTH_PLACEMENTS,
               size=max(size), seed=SYNTH_SEED)
    pairs = held_out(folder, size, limit=limit, units="synthetic" if units == "auto" else units, every_pair=True)
    pairs.source = "synthetic"
    return pairs, [f"no --data: {pairs.count} pairs of a synthetic set made for this run (seed {SYNTH_SEED}, "
                   f"{pairs.backgrounds} backgrounds no default training set has); give --data for your own"]


def validate(models: list[str | Path], data: str | Path | None = None, *, provider: str = "cpu",
             limit: int = DEFAULT_LIMIT, batches: list[int] | None = None, warmup: int = 3, iters: int = 20,
             holdout: float = HOLDOUT, seed: int = SPLIT_SEED, depth_units: str = "auto",
             on_row: Callable[[ValRow], None] | None = None, every_pair: bool = False,
             load: LoadReader = machine_reading) -> ValReport:
    """Score each model against the labels, time each at `batches`; the CLI's `val`. A `.pt`
    runs at the first exported model's size; every model must take the same size. `every_pair`:
    `data` is a test set of its own, scored whole (up to `limit`), not split by background."""
    batches = list(batches or [1, 8])
    if not models:
        raise UserError("val: give at least one --model")
    positive(limit, "val: --limit")
    if every_pair and data is None:
        raise UserError("val: --all scores every pair of --data (a test set of its own); give --data")
    if depth_units not in DEPTH_UNITS:
        raise UserError(f"val: --depth-units must be one of {', '.join(DEPTH_UNITS)}, got {depth_units!r}")
    check_timing(batches, warmup, iters)
    targets = open_targets(models, parse_providers(provider), None)
    size = targets[0].runner.spec.size
    for t in targets:
        if t.runner.spec.size != size:
            raise UserError(f"{t.path}: takes {t.runner.spec.height}x{t.runner.spec.width}, "
                            f"{Path(targets[0].path).name} {size[0]}x{size[1]}")
    with tempfile.TemporaryDirectory(prefix="toolkit-val-") as tmp:
        pairs, notes = _pairs_for(data, size, depth_units, limit, holdout, seed, tmp, every_pair)
    rows = [score(t, pairs) for t in targets]
    busy = BusyCheck(load).start()
    time_interleaved(targets, batches, warmup, iters)
    busy_line = busy.note("times")  # the accuracy figures do not depend on the load
    for t, row in zip(targets, rows):
        row.ms_per_pair = {b: float(np.median(t.times[b])) * 1000 / b for b in batches}
        row.speedup = {b: rows[0].ms_per_pair[b] / row.ms_per_pair[b] for b in batches} if rows[0].ms_per_pair else {}
        if row.nonfinite:
            notes.append(f"{Path(row.model).name}: {row.nonfinite} NaN/inf output values (scored as 0 / 1)")
        if on_row:
            on_row(row)
    for t, row in zip(targets, rows):  # a provider that fell back, a runtime the machine lacks: said, not silent
        notes += [n if n.startswith(Path(t.path).name) else f"{Path(t.path).name} ({row.backend}): {n}" for n in t.runner.notes]
    notes += [f"{Path(t.path).name} predicts {t.runner.spec.depth_convention} depth, {pairs.source} holds "
              f"{pairs.depth_convention}: scored with one side flipped" for t in targets
              if t.runner.spec.depth_convention != pairs.depth_convention]
    notes = list(dict.fromkeys(notes))
    notes.append("depth AbsRel and delta1 " + ("in metres (the synthetic set's log-spaced grey)" if pairs.units == "synthetic"
                                                else "on far-bright grey levels (--depth-units synthetic: metres)"))
    notes += [busy_line] if busy_line else []  # last: what a reader of the times must see
    return ValReport(pairs.source, pairs.count, pairs.backgrounds, pairs.units, batches, rows, notes)


def gate_failures(report: ValReport, *, min_mask_iou: float | None = None, max_depth_rmse: float | None = None) -> list[str]:
    """'model.int8.onnx: mask IoU 0.41 < 0.5' for each row that misses a figure asked of it
    (NaN/inf outputs always miss)."""
    failures = []
    for r in report.rows:
        name, iou, rmse = Path(r.model).name, r.figures.get("mask_iou", float("nan")), r.figures.get("depth_rmse", float("nan"))
        if r.nonfinite:
            failures.append(f"{name}: {r.nonfinite} NaN/inf output values")
        if min_mask_iou is not None and not iou >= min_mask_iou:
            failures.append(f"{name}: mask IoU {iou:.4f} < {min_mask_iou}")
        if max_depth_rmse is not None and not rmse <= max_depth_rmse:
            failures.append(f"{name}: depth RMSE {rmse:.4f} > {max_depth_rmse}")
    return failures


def accuracy_latency_png(report: ValReport, names: dict[str, str]) -> np.ndarray:
    """Mask IoU and depth RMSE against ms per pair (batch 1 where timed, else the smallest
    batch), a marker per model and backend."""
    from ..render.plot import Panel, Point, scatter_png

    batch = 1 if 1 in report.batches else min(report.batches)
    points = [Point(f"{names.get(r.model, Path(r.model).name)} ({r.backend}, {r.precision})", r.ms_per_pair[batch],
                    {k: r.figures.get(k, float("nan")) for k in ("mask_iou", "depth_rmse")}) for r in report.rows]
    panels = [Panel("mask_iou", "mask IoU vs truth (higher is better)", min_span=0.05, floor=0.0),
              Panel("depth_rmse", "depth RMSE vs truth (lower is better)", min_span=0.01, floor=0.0)]
    source = "a synthetic set" if report.data == "synthetic" else report.data
    title = f"toolkit val: {report.pairs} pairs of {source}, latency at batch {batch} (this machine, same run)"
    return scatter_png(points, panels, title=title, x_label=f"ms per pair at batch {batch}")
