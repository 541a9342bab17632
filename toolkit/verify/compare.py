"""Parity: run backends beside the PyTorch reference on the same pairs and judge agreement.

Shaped after Polygraphy's comparator: the result is truthy when every threshold passes. Per
model it reports, for each output, max and mean |model - reference|, and the mask IoU/Dice and
depth IoU/RMSE of the model's outputs measured against the reference's. Thresholds depend on
the model's precision (recorded in its metadata) and can be overridden.

No torch at module level: the reference runner imports it when it opens the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.spec import INPUT_NAMES, ORIGINAL_DEPTH_CONVENTION, OUTPUT_NAMES
from ..runtime import Runner, open_runner
from . import metrics


@dataclass(frozen=True)
class Thresholds:
    """Pass conditions; None means "not judged". Each is refused outside its range (NaN too),
    as the command line's `--max-abs`, `--mask-iou` and `--depth-rmse` are."""

    max_abs: float | None = None
    mask_iou: float | None = None
    depth_iou: float | None = None
    depth_rmse: float | None = None

    def __post_init__(self) -> None:
        for name, hi in (("max_abs", None), ("mask_iou", 1), ("depth_iou", 1), ("depth_rmse", 1)):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and (hi is None or value <= hi)):
                flag = {"depth_iou": "depth IoU"}.get(name, "--" + name.replace("_", "-"))  # no flag sets depth IoU
                raise UserError(f"{flag} must be in [0, {hi if hi is not None else 'inf'}], got {value}")


# Reference mask pixels within this of the 0.5 threshold are undecided: flipping them is rounding,
# not disagreement. The mask IoU gate passes when the IoU over the decided pixels meets it.
UNDECIDED_BAND = 0.02

# How a failure of the model's own self-test reads among an export check's failures
# (`selftest.with_self_test`): the check's own verdict is then told apart from it.
SELF_TEST_FAILURE = "its self-test (what serve, stream and doctor run) fails on its golden pairs: "

DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp32": Thresholds(max_abs=1e-4, mask_iou=0.999),
    "fp16": Thresholds(mask_iou=0.99, depth_rmse=0.01),
    "int8": Thresholds(mask_iou=0.97, depth_rmse=0.02),
}


@dataclass
class ParityResult:
    model: str
    backend: str
    precision: str
    pairs: int
    max_abs: dict[str, float]
    mean_abs: dict[str, float]
    mask_iou: float
    mask_dice: float
    depth_iou: float
    depth_rmse: float
    thresholds: Thresholds
    nonfinite: dict[str, int] = field(default_factory=dict)  # NaN/inf values the model produced
    empty_masks: int = 0  # images where both masks are empty (their IoU of 1.0 says little)
    mask_iou_decided: float | None = None  # over reference pixels further than UNDECIDED_BAND from 0.5
    failures: list[str] = field(default_factory=list)
    worst: WorstPair | None = field(default=None, repr=False)
    self_test: str = ""  # an export's check: the model's self-test verdict beside it (`selftest.with_self_test`)

    def __bool__(self) -> bool:
        return not self.failures

    def judge(self) -> ParityResult:
        t, f = self.thresholds, []
        bad = sum(self.nonfinite.values())
        if bad:
            f.append(f"{bad} NaN/inf output values")
        worst = max(self.max_abs.values())
        if t.max_abs is not None and not worst <= t.max_abs:
            f.append(f"max abs diff {worst:.2e} > {t.max_abs:.0e}")
        if t.mask_iou is not None and not self.mask_iou >= t.mask_iou:
            decided = self.mask_iou_decided
            if decided is None or not decided >= t.mask_iou:  # the flips are not all at the threshold
                f.append(f"mask IoU {self.mask_iou:.4f} < {t.mask_iou}"
                         + (f" ({decided:.4f} on pixels the reference decides by > {UNDECIDED_BAND})" if decided is not None else ""))
        if t.depth_iou is not None and not self.depth_iou >= t.depth_iou:
            f.append(f"depth IoU@0.5 {self.depth_iou:.4f} < {t.depth_iou}")
        if t.depth_rmse is not None and not self.depth_rmse <= t.depth_rmse:
            f.append(f"depth RMSE {self.depth_rmse:.4f} > {t.depth_rmse}")
        self.failures = f
        return self

    def figures(self) -> str:
        """'mask IoU 0.9970, depth RMSE 0.0002, max abs 2.5e-03 on 16 pairs' (+ NaN/inf when any)."""
        bad = sum(self.nonfinite.values())
        text = (
            f"mask IoU {self.mask_iou:.4f}, depth RMSE {self.depth_rmse:.4f}, "
            f"max abs {max(self.max_abs.values()):.1e} on {self.pairs} pairs"
        )
        return text + (f", {bad} NaN/inf values" if bad else "")

    @property
    def passed_on_decided(self) -> bool:
        """The mask IoU gate was met only by the IoU over the pixels the reference decides."""
        gate = self.thresholds.mask_iou
        return gate is not None and not self.mask_iou >= gate and self.mask_iou_decided is not None and self.mask_iou_decided >= gate

    def judged(self) -> str:
        """Each figure a threshold judged, beside it: 'mask IoU 0.9981 >= 0.97, depth RMSE 0.0031
        <= 0.02 on 2 pairs'. A mask IoU under its gate that passed over the pixels the reference
        decides says so ('mask IoU 0.9273 < 0.97, but 0.9801 >= 0.97 over the pixels the reference
        decides by > 0.02'): a verdict line names the figure that decided it."""
        t, parts = self.thresholds, []
        if t.max_abs is not None:
            worst = max(self.max_abs.values())
            parts.append(f"max abs diff {worst:.1e} {'<=' if worst <= t.max_abs else '>'} {t.max_abs:.0e}")
        if t.mask_iou is not None:
            parts.append(self._mask_iou_judged(t.mask_iou))
        if t.depth_iou is not None:
            parts.append(f"depth IoU@0.5 {self.depth_iou:.4f} {'>=' if self.depth_iou >= t.depth_iou else '<'} {t.depth_iou}")
        if t.depth_rmse is not None:
            parts.append(f"depth RMSE {self.depth_rmse:.4f} {'<=' if self.depth_rmse <= t.depth_rmse else '>'} {t.depth_rmse}")
        bad = sum(self.nonfinite.values())
        parts += [f"{bad} NaN/inf values"] if bad else []
        return (", ".join(parts) or self.figures().rsplit(" on ", 1)[0]) + f" on {self.pairs} pairs"

    def _mask_iou_judged(self, gate: float) -> str:
        if self.mask_iou >= gate:
            return f"mask IoU {self.mask_iou:.4f} >= {gate}"
        decided = self.mask_iou_decided
        if decided is None:
            return f"mask IoU {self.mask_iou:.4f} < {gate}"
        over = f"over the pixels the reference decides by > {UNDECIDED_BAND}"
        if decided >= gate:
            return f"mask IoU {self.mask_iou:.4f} < {gate}, but {decided:.4f} >= {gate} {over}"
        return f"mask IoU {self.mask_iou:.4f} < {gate}, and {decided:.4f} < {gate} {over}"

    @property
    def own_failures(self) -> list[str]:
        """The failures of this check's own thresholds, without the self-test's."""
        return [f for f in self.failures if not f.startswith(SELF_TEST_FAILURE)]

    @property
    def and_self_test(self) -> str:
        """'; ' and the self-test's verdict line when an export ran it beside this check
        (`selftest.with_self_test`), else '': what every export line appends."""
        return f"; {self.self_test}" if self.self_test else ""

    def verdict(self) -> str:
        """'gate passed: ' or 'gate FAILED: ' and the figures that decided it (`judged`): its own
        thresholds' verdict; a self-test that failed beside it says so in `and_self_test`."""
        return f"gate {'FAILED' if self.own_failures else 'passed'}: {self.judged()}"

    def to_dict(self) -> dict[str, Any]:
        d = _finite_or_none({k: v for k, v in asdict(self).items() if k != "worst"})
        d["passed"] = bool(self)
        d["worst_pair_max_abs"] = _finite_or_none(self.worst.max_abs) if self.worst else None
        return d


@dataclass
class ParityReport:
    reference: str
    pairs: int
    results: list[ParityResult]
    notes: list[str] = field(default_factory=list)  # e.g. halves left out, and why

    def __bool__(self) -> bool:
        return all(self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "note": "mask/depth figures are measured against the reference's outputs; "
            "empty_masks counts images where both masks are empty",
            "reference": self.reference,
            "pairs": self.pairs,
            "passed": bool(self),
            "models": [r.to_dict() for r in self.results],
            "notes": list(self.notes),
        }


@dataclass
class WorstPair:
    """The input pair on which a model differed most from the reference, with both outputs."""

    max_abs: float
    inputs: dict[str, np.ndarray]  # bg, fgbg: [3, H, W]
    got: dict[str, np.ndarray]  # mask, depth: [H, W]
    ref: dict[str, np.ndarray]
    depth_convention: str = ORIGINAL_DEPTH_CONVENTION  # the reference's: what its depth legend says

    def panel(self) -> np.ndarray:
        """bg | fgbg | mask ref | mask model | |diff| | depth ref | depth model | |diff| (uint8 RGB).

        Difference maps are scaled to their own maximum, which the bright end of their colour
        bar names, so that even 1e-6 disagreements show where they are. The numbers sit on the
        legend's own row, never in a label; tiles are at least 128 px so both stay readable.
        """
        from ..render import imageio

        tiles, labels = [imageio.from_nchw(self.inputs[n][None])[0] for n in INPUT_NAMES], list(INPUT_NAMES)
        legends: list[imageio.Legend | None] = [None] * len(INPUT_NAMES)
        for n in OUTPUT_NAMES:
            got, ref = np.nan_to_num(self.got[n], nan=1.0), self.ref[n]
            diff = np.abs(got - ref)
            top = float(diff.max())
            show = imageio.colorize_depth if n == "depth" else np.asarray
            shown = imageio.depth_legend(self.depth_convention) if n == "depth" else None
            tiles += [show(ref), show(got), imageio.colorize_depth(diff / (top or 1.0))]
            labels += [f"{n} ref", f"{n} model", f"{n} |diff|"]
            legends += [shown, shown, imageio.magma_legend("0", f"{top:.1e}")]
        return imageio.make_panel(tiles, labels, legends=legends, min_height=128)


class _Accumulator:
    """Collects a candidate's outputs beside the reference's, batch by batch."""

    def __init__(self) -> None:
        self.max_abs = {n: 0.0 for n in OUTPUT_NAMES}
        self.abs_sum = {n: 0.0 for n in OUTPUT_NAMES}
        self.count = 0
        self.nonfinite = {n: 0 for n in OUTPUT_NAMES}
        self.got: dict[str, list[np.ndarray]] = {n: [] for n in OUTPUT_NAMES}
        self.ref: dict[str, list[np.ndarray]] = {n: [] for n in OUTPUT_NAMES}
        self.worst: WorstPair | None = None

    def add(self, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], feed: dict[str, np.ndarray]) -> None:
        for n in OUTPUT_NAMES:
            if got[n].shape != ref[n].shape:
                raise UserError(f"output {n} has shape {list(got[n].shape)}, the reference {list(ref[n].shape)}")
            bad = int((~np.isfinite(got[n])).sum())
            self.nonfinite[n] += bad
            d = np.abs(got[n].astype(np.float64) - ref[n])
            # NaN compares false with everything: count it as an infinite difference instead.
            worst = float("inf") if bad else (float(d.max()) if d.size else 0.0)
            self.max_abs[n] = max(self.max_abs[n], worst)
            self.abs_sum[n] += float(np.nan_to_num(d, nan=np.inf).sum())
            self.got[n].append(got[n])
            self.ref[n].append(ref[n])
        self.count += int(ref[OUTPUT_NAMES[0]].size)
        per_image = np.max([np.nan_to_num(np.abs(got[n] - ref[n]), nan=np.inf).reshape(len(ref[n]), -1).max(axis=1)
                            for n in OUTPUT_NAMES], axis=0)
        i = int(per_image.argmax())
        if self.worst is None or per_image[i] > self.worst.max_abs:
            self.worst = WorstPair(float(per_image[i]), {n: feed[n][i] for n in INPUT_NAMES},
                                   {n: got[n][i, 0] for n in OUTPUT_NAMES}, {n: ref[n][i, 0] for n in OUTPUT_NAMES})

    def result(self, runner: Runner, pairs: int, thresholds: Thresholds) -> ParityResult:
        got = {n: np.concatenate(v) for n, v in self.got.items()}
        ref = {n: np.concatenate(v) for n, v in self.ref.items()}
        return ParityResult(
            model=runner.label,
            backend=runner.backend_used,
            precision=runner.precision,
            pairs=pairs,
            max_abs=dict(self.max_abs),
            mean_abs={n: self.abs_sum[n] / max(self.count, 1) for n in OUTPUT_NAMES},
            mask_iou=metrics.mask_iou(got["mask"], ref["mask"]),
            mask_dice=metrics.mask_dice(got["mask"], ref["mask"]),
            mask_iou_decided=metrics.decided_iou(got["mask"], ref["mask"], UNDECIDED_BAND),
            depth_iou=metrics.depth_iou(got["depth"], ref["depth"]),
            depth_rmse=metrics.rmse(got["depth"], ref["depth"]),
            thresholds=thresholds,
            nonfinite=dict(self.nonfinite),
            empty_masks=metrics.both_empty_count(got["mask"], ref["mask"]),
            worst=None if self.worst is None else replace(self.worst, depth_convention=runner.spec.depth_convention),
        ).judge()


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def judge_outputs(runner: Runner, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], feed: dict[str, np.ndarray],
                  thresholds: Thresholds) -> ParityResult:
    """One batch of a runner's outputs beside reference outputs, judged as `compare_runners`
    judges them (the self-test's golden outputs are such a reference)."""
    acc = _Accumulator()
    acc.add(got, ref, feed)
    return acc.result(runner, int(next(iter(feed.values())).shape[0]), thresholds)


def thresholds_for(precision: str, overrides: Thresholds | None = None, *, strict: bool = False) -> Thresholds:
    """The pass conditions of a model of `precision` (its metadata's), with the values that
    `overrides` sets replacing the defaults. An unknown precision is judged as fp32 (the
    strictest), or, with `strict` (an export checking what it just made), refused."""
    defaults = DEFAULT_THRESHOLDS.get(precision)
    if defaults is None:
        if strict:
            raise UserError(f"unknown precision {precision!r} in the model's metadata (known: {', '.join(DEFAULT_THRESHOLDS)})")
        defaults = DEFAULT_THRESHOLDS["fp32"]
    if overrides is None:
        return defaults
    return replace(defaults, **{k: v for k, v in asdict(overrides).items() if v is not None})


def compare_runners(
    reference: Runner,
    candidates: list[Runner],
    feeds: Iterable[dict[str, np.ndarray]],
    overrides: Thresholds | None = None,
    *,
    strict: bool = False,
) -> ParityReport:
    """Run the reference, then each candidate, on every feed (one model loaded at a time); judge
    each candidate by `thresholds_for` its precision, with `overrides` (see there for `strict`)."""
    feeds = list(feeds)
    if not sum(int(feed[INPUT_NAMES[0]].shape[0]) for feed in feeds):
        raise UserError("parity: no input pairs to compare on")
    with reference:  # one model loaded at a time: the reference's outputs are kept, not its session
        refs = [reference.infer(feed) for feed in feeds]
    judged_by = [thresholds_for(r.precision, overrides, strict=strict) for r in candidates]
    return compare_to_outputs(str(reference.path), refs, candidates, feeds, judged_by)


def compare_to_outputs(reference: str, refs: list[dict[str, np.ndarray]], candidates: list[Runner],
                       feeds: list[dict[str, np.ndarray]], judged_by: list[Thresholds]) -> ParityReport:
    """Each candidate on every feed beside the reference's outputs `refs` for it (from a runner,
    or stored: `toolkit parity --golden`), judged by its own thresholds."""
    pairs = sum(int(feed[INPUT_NAMES[0]].shape[0]) for feed in feeds)
    if pairs == 0:
        raise UserError("parity: no input pairs to compare on")
    accs = [_Accumulator() for _ in candidates]
    for runner, acc in zip(candidates, accs):
        with runner:
            for feed, ref in zip(feeds, refs):
                acc.add(runner.infer(feed), ref, feed)
    results = [acc.result(runner, pairs, t) for runner, acc, t in zip(candidates, accs, judged_by)]
    return ParityReport(reference, pairs, results)


def check_model(
    reference: str | Path,
    candidate: str | Path | Runner,
    feeds: Iterable[dict[str, np.ndarray]],
    overrides: Thresholds | None = None,
    *,
    size: tuple[int, int] | None = None,
) -> ParityResult:
    """One model file (or an opened runner: the halves) beside a reference file on the CPU,
    judged as `toolkit parity` judges it: the check every export runs before it writes a file
    (fp32 ONNX vs the PyTorch checkpoint, fp16 and int8 vs the fp32 ONNX). A model of unknown
    precision is refused here."""
    ref = open_at(reference, size)
    runner = candidate if isinstance(candidate, Runner) else open_runner(candidate)
    return compare_runners(ref, [runner], feeds, overrides, strict=True).results[0]


def batches(pairs: dict[str, np.ndarray], size: int = 8) -> list[dict[str, np.ndarray]]:
    """Arrays of the same length `N` (`{"bg", "fgbg"}` `[N, 3, H, W]`, or one half's inputs)
    cut into feeds of at most `size` samples."""
    n = int(next(iter(pairs.values())).shape[0])
    return [{k: np.ascontiguousarray(v[i : i + size], dtype=np.float32) for k, v in pairs.items()} for i in range(0, n, size)]


def dataset_feeds(
    data: str | Path, size: tuple[int, int], *, limit: int = 16, batch_size: int = 8
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of (bg, fgbg) at the model's size from a data set (folder or zip), evenly sampled."""
    from ..data.holdout import evenly
    from ..data.reader import open_dataset

    ds = open_dataset(data)
    picks = evenly(len(ds), limit)
    for i in range(0, len(picks), batch_size):
        batch = ds.load_batch(picks[i : i + batch_size], size)
        yield {k: batch[k] for k in INPUT_NAMES}


def open_at(path: str | Path, size: tuple[int, int] | None, **options: Any) -> Runner:
    """`open_runner`, with a checkpoint run at `size` (None: its training size; an exported file has its own, fixed)."""
    if Path(path).suffix.lower() == ".pt":
        options["size"] = size
    return open_runner(path, **options)
