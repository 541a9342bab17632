"""Accuracy and parity figures for mask + depth predictions (numpy only: part of the edge install).

All functions take numpy arrays shaped `[N, 1, H, W]` (or anything with the batch first) whose
values are in [0, 1] unless a name says otherwise, and return plain Python floats, so the same
numbers come out whichever backend produced the predictions.

Two families live here, on purpose side by side:

* the toolkit's own figures (metrics.md, "What the toolkit reports"): IoU and Dice per image then
  averaged, RMSE/MAE over all pixels, AbsRel and delta1 for metric depth;
* the seed's figures (metrics.md, "The seed's definitions"): IoU thresholded in the normalised
  space over the whole batch and the "Dice loss" on raw normalised values, so that a run can be
  set beside the seed's table. They are kept exactly as the seed defined them, quirks included.

Empty sets: when both the prediction and the target are empty (an image with no person), IoU and
Dice are 1.0 — the prediction is exactly right, and averaging in a 0 or NaN would punish it.
`MetricAccumulator` gathers everything batch by batch, so a validation set never has to fit in
memory at once; `validation_metrics` is the one-shot form of it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# The seed's normalisation statistics of the targets (dataset.md: "the training code used").
SEED_MASK_STATS = (0.079, 0.254)
SEED_DEPTH_STATS = (0.350, 0.208)
DELTA1_RATIO = 1.25
DEPTH_EPS = 1e-6


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _check_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {true.shape}")
    if pred.ndim == 0:
        raise ValueError("expected arrays with a batch axis, got scalars")
    return pred, true


def _per_image_counts(pred: np.ndarray, true: np.ndarray, threshold: float):
    """Intersection, |pred|, |true| per image (batch axis first), after `> threshold`."""
    pred, true = _check_pair(pred, true)
    a = pred.reshape(pred.shape[0], -1) > threshold
    b = true.reshape(true.shape[0], -1) > threshold
    inter = np.logical_and(a, b).sum(axis=1).astype(np.float64)
    return inter, a.sum(axis=1).astype(np.float64), b.sum(axis=1).astype(np.float64)


def iou_per_image(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """|A and B| / |A or B| of each image, with A = pred > threshold, B = true > threshold.

    Both empty -> 1.0 (see the module docstring).
    """
    inter, na, nb = _per_image_counts(pred, true, threshold)
    union = na + nb - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def decided_iou(pred: np.ndarray, true: np.ndarray, band: float, threshold: float = 0.5) -> float:
    """Mean per-image IoU over the pixels `true` decides: those further than `band` from
    `threshold`. For parity, where `true` is the reference backend: a pixel the reference puts at
    0.5 +- rounding flips class under any change of arithmetic (fp16, int8, another GPU kernel),
    and a barely trained model has many such pixels, so the plain IoU of two numerically
    near-identical models can miss a 0.99 gate. Both empty (after exclusion) -> 1.0."""
    pred, true = _check_pair(pred, true)
    t = true.reshape(true.shape[0], -1)
    keep = np.abs(t - threshold) > band
    a = (pred.reshape(pred.shape[0], -1) > threshold) & keep
    b = (t > threshold) & keep
    inter = np.logical_and(a, b).sum(axis=1).astype(np.float64)
    union = a.sum(axis=1) + b.sum(axis=1) - inter
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())


def both_empty_count(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> int:
    """Images where neither prediction nor target has a pixel above `threshold`: their IoU and
    Dice of 1.0 (see the module docstring) say nothing about agreement, so reports count them."""
    _, na, nb = _per_image_counts(pred, true, threshold)
    return int(((na == 0) & (nb == 0)).sum())


def dice_per_image(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """2 |A and B| / (|A| + |B|) of each image (the F1 score); both empty -> 1.0."""
    inter, na, nb = _per_image_counts(pred, true, threshold)
    total = na + nb
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)


def mask_iou(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> float:
    """Mean over images of the per-image IoU at `threshold` on [0, 1] probabilities."""
    return float(iou_per_image(pred, true, threshold).mean())


def mask_dice(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> float:
    """Mean over images of the per-image Dice (F1) at `threshold`."""
    return float(dice_per_image(pred, true, threshold).mean())


def depth_iou(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of the regions above `threshold` (the near regions when the depth is read as nearness,
    1 = near: `toolkit.core.spec.nearness`), per image."""
    return mask_iou(pred, true, threshold)


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared error over all pixels of all images."""
    pred, true = _check_pair(pred, true)
    return float(np.sqrt(np.mean((_f64(pred) - _f64(true)) ** 2)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error over all pixels of all images."""
    pred, true = _check_pair(pred, true)
    return float(np.mean(np.abs(_f64(pred) - _f64(true))))


def _metric_valid(pred: np.ndarray, true: np.ndarray, eps: float, valid: np.ndarray | None):
    pred, true = _check_pair(pred, true)
    p, g = _f64(pred), _f64(true)
    ok = np.isfinite(g) & (g > eps)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    return np.maximum(p, eps), g, ok


def abs_rel(pred: np.ndarray, true: np.ndarray, *, eps: float = DEPTH_EPS,
            valid: np.ndarray | None = None) -> float:
    """mean(|pred - gt| / gt) over valid pixels (gt > eps, and `valid` where given).

    For metric depth (metres). Predictions are clamped to eps so a zero never divides.
    NaN when no pixel is valid: there is nothing to measure.
    """
    p, g, ok = _metric_valid(pred, true, eps, valid)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(p[ok] - g[ok]) / g[ok]))


def delta1(pred: np.ndarray, true: np.ndarray, *, ratio: float = DELTA1_RATIO, eps: float = DEPTH_EPS,
           valid: np.ndarray | None = None) -> float:
    """Share of valid pixels with max(pred/gt, gt/pred) < ratio (1.25): the usual delta1."""
    p, g, ok = _metric_valid(pred, true, eps, valid)
    if not ok.any():
        return float("nan")
    r = np.maximum(p[ok] / g[ok], g[ok] / p[ok])
    return float(np.mean(r < ratio))


# -- the seed's definitions ----------------------------------------------------------------
def normalise(x: np.ndarray, stats: tuple[float, float]) -> np.ndarray:
    """(x - mean) / std: a [0, 1] value in the seed's normalised target space."""
    mean, std = stats
    return (_f64(x) - mean) / std


def seed_iou_raw(pred_raw: np.ndarray, true_raw: np.ndarray) -> float:
    """The seed's IoU on normalised-space values: both `> 0.5`, counted over the whole batch.

    An empty union (nothing above the threshold anywhere) -> 1.0.
    """
    pred_raw, true_raw = _check_pair(pred_raw, true_raw)
    a, b = pred_raw > 0.5, true_raw > 0.5
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def seed_iou(pred: np.ndarray, true: np.ndarray, stats: tuple[float, float]) -> float:
    """The seed's IoU on [0, 1] values: a threshold of mean + 0.5 std, over the whole batch.

    With the seed's mask statistics that is 0.206; with its depth statistics 0.454.
    """
    return seed_iou_raw(normalise(pred, stats), normalise(true, stats))


def seed_dice_loss_raw(pred_raw: np.ndarray, true_raw: np.ndarray) -> float:
    """The seed's "Dice loss": 1 - (2 sum(p t) + 1) / (sum(p^2) + sum(t^2) + 1), whole batch."""
    pred_raw, true_raw = _check_pair(pred_raw, true_raw)
    p, t = _f64(pred_raw), _f64(true_raw)
    return float(1.0 - (2.0 * np.sum(p * t) + 1.0) / (np.sum(p * p) + np.sum(t * t) + 1.0))


def seed_dice_loss(pred: np.ndarray, true: np.ndarray, stats: tuple[float, float]) -> float:
    """`seed_dice_loss_raw` of [0, 1] values mapped into the seed's normalised space."""
    return seed_dice_loss_raw(normalise(pred, stats), normalise(true, stats))


# -- parity ----------------------------------------------------------------------------------
def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| (0.0 for empty arrays); NaN anywhere gives NaN, so it never passes silently."""
    a, b = _check_pair(a, b)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(_f64(a) - _f64(b))))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| (0.0 for empty arrays)."""
    a, b = _check_pair(a, b)
    if a.size == 0:
        return 0.0
    return float(np.mean(np.abs(_f64(a) - _f64(b))))


# -- a whole validation pass -----------------------------------------------------------------
class MetricAccumulator:
    """Validation figures gathered batch by batch.

    Per-image figures (IoU, Dice) are summed and divided by the image count; pixel figures
    (RMSE, MAE, AbsRel, delta1) are summed over pixels; the seed-style figures are computed per
    batch and averaged over batches, as the seed did ("averaged per batch, then over batches").

    `to_metres` maps [0, 1] depth to metres where the depth is metric (the synthetic set); when
    given, `depth_absrel` and `depth_delta1` are reported too.
    """

    def __init__(self, *, depth_threshold: float = 0.5, to_metres: Callable[[np.ndarray], np.ndarray] | None = None,
                 mask_stats: tuple[float, float] = SEED_MASK_STATS,
                 depth_stats: tuple[float, float] = SEED_DEPTH_STATS):
        self.depth_threshold = depth_threshold
        self.to_metres = to_metres
        self.mask_stats, self.depth_stats = mask_stats, depth_stats
        self.images = 0
        self.batches = 0
        self._sums: dict[str, float] = {}

    def _add(self, key: str, value: float) -> None:
        self._sums[key] = self._sums.get(key, 0.0) + float(value)

    def update(self, pred_mask: np.ndarray, pred_depth: np.ndarray, true_mask: np.ndarray,
               true_depth: np.ndarray, *, pred_mask_raw: np.ndarray | None = None,
               pred_depth_raw: np.ndarray | None = None) -> None:
        """Add one batch. `pred_*_raw` are the network's normalised-space outputs, when the
        model was trained in the seed's target space; otherwise the seed figures use the [0, 1]
        predictions mapped into that space."""
        _check_pair(pred_mask, true_mask)
        _check_pair(pred_depth, true_depth)
        n = int(np.asarray(pred_mask).shape[0])
        if n == 0:
            return
        self.images += n
        self.batches += 1
        self._add("mask_iou", iou_per_image(pred_mask, true_mask).sum())
        self._add("mask_dice", dice_per_image(pred_mask, true_mask).sum())
        self._add("depth_iou", iou_per_image(pred_depth, true_depth, self.depth_threshold).sum())
        diff = _f64(pred_depth) - _f64(true_depth)
        self._add("_pixels", diff.size)
        self._add("_sq", np.sum(diff * diff))
        self._add("_abs", np.sum(np.abs(diff)))
        if self.to_metres is not None:
            p, g, ok = _metric_valid(self.to_metres(np.asarray(pred_depth)),
                                     self.to_metres(np.asarray(true_depth)), DEPTH_EPS, None)
            self._add("_valid", ok.sum())
            self._add("_absrel", np.sum(np.abs(p[ok] - g[ok]) / g[ok]))
            self._add("_delta1", np.sum(np.maximum(p[ok] / g[ok], g[ok] / p[ok]) < DELTA1_RATIO))
        mt, dt = normalise(true_mask, self.mask_stats), normalise(true_depth, self.depth_stats)
        mp = _f64(pred_mask_raw) if pred_mask_raw is not None else normalise(pred_mask, self.mask_stats)
        dp = _f64(pred_depth_raw) if pred_depth_raw is not None else normalise(pred_depth, self.depth_stats)
        self._add("seed_mask_iou", seed_iou_raw(mp, mt))
        self._add("seed_depth_iou", seed_iou_raw(dp, dt))
        self._add("seed_mask_dice_loss", seed_dice_loss_raw(mp, mt))
        self._add("seed_depth_dice_loss", seed_dice_loss_raw(dp, dt))

    def result(self) -> dict[str, float]:
        """The figures so far (an empty dict before the first batch)."""
        if not self.images:
            return {}
        s, n, b = self._sums, self.images, self.batches
        out = {
            "mask_iou": s["mask_iou"] / n,
            "mask_dice": s["mask_dice"] / n,
            "depth_rmse": float(np.sqrt(s["_sq"] / s["_pixels"])),
            "depth_mae": s["_abs"] / s["_pixels"],
            "depth_iou": s["depth_iou"] / n,
        }
        if self.to_metres is not None:
            valid = s["_valid"]
            out["depth_absrel"] = s["_absrel"] / valid if valid else float("nan")
            out["depth_delta1"] = s["_delta1"] / valid if valid else float("nan")
        for k in ("seed_mask_iou", "seed_depth_iou", "seed_mask_dice_loss", "seed_depth_dice_loss"):
            out[k] = s[k] / b
        return out


def validation_metrics(pred_mask: np.ndarray, pred_depth: np.ndarray, true_mask: np.ndarray,
                       true_depth: np.ndarray, **kwargs) -> dict[str, float]:
    """All validation figures of one set of `[N, 1, H, W]` arrays (one batch, seed-wise).

    Keyword arguments are those of `MetricAccumulator` and its `update`.
    """
    update_keys = {"pred_mask_raw", "pred_depth_raw"}
    acc = MetricAccumulator(**{k: v for k, v in kwargs.items() if k not in update_keys})
    acc.update(pred_mask, pred_depth, true_mask, true_depth,
               **{k: v for k, v in kwargs.items() if k in update_keys})
    return acc.result()
