"""Metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.verify import metrics as M


def batch(*images: list[list[float]]) -> np.ndarray:
    """[N, 1, H, W] float32 from nested lists, one per image."""
    return np.asarray(images, dtype=np.float32)[:, None]


# image 0: pred {0,1}, true {1,2} of a 1x4 row -> inter 1, union 3, |A|+|B| = 4
P0, T0 = [[0.9, 0.6, 0.1, 0.0]], [[0.2, 0.7, 1.0, 0.0]]
# image 1: pred {0,1,2,3}, true {0,1} -> inter 2, union 4, |A|+|B| = 6
P1, T1 = [[1.0, 1.0, 0.8, 0.51]], [[1.0, 0.9, 0.0, 0.5]]


def test_iou_and_dice_per_image_then_averaged():
    pred, true = batch(P0, P1), batch(T0, T1)
    assert M.iou_per_image(pred, true) == pytest.approx([1 / 3, 2 / 4])
    assert M.mask_iou(pred, true) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert M.dice_per_image(pred, true) == pytest.approx([2 / 4, 4 / 6])
    assert M.mask_dice(pred, true) == pytest.approx((0.5 + 2 / 3) / 2)
    # Per image, not pooled: pooled would be 3 / 7.
    assert M.mask_iou(pred, true) != pytest.approx(3 / 7)


def test_threshold_is_strictly_greater():
    # 0.5 itself is not foreground (T1 last pixel), 0.51 is.
    assert M.iou_per_image(batch([[0.5]]), batch([[0.5]]))[0] == 1.0  # both empty
    assert M.iou_per_image(batch([[0.51]]), batch([[0.5]]))[0] == 0.0


def test_empty_cases():
    empty = batch([[0.0, 0.1]])
    assert M.mask_iou(empty, empty) == 1.0
    assert M.mask_dice(empty, empty) == 1.0
    full = batch([[1.0, 1.0]])
    assert M.mask_iou(full, empty) == 0.0
    assert M.mask_dice(empty, full) == 0.0


def test_depth_iou_threshold():
    pred, true = batch([[0.3, 0.45, 0.9]]), batch([[0.35, 0.5, 0.8]])
    assert M.depth_iou(pred, true) == 1.0 / 1.0  # only pixel 2 above 0.5 in both
    assert M.depth_iou(pred, true, threshold=0.32) == pytest.approx(2 / 3)  # {1,2} vs {0,1,2}


def test_rmse_mae_over_all_pixels():
    pred, true = batch([[0.0, 0.5]], [[1.0, 1.0]]), batch([[0.0, 0.0]], [[0.0, 1.0]])
    # errors 0, 0.5, 1, 0 -> squared 0, .25, 1, 0
    assert M.rmse(pred, true) == pytest.approx(math.sqrt(1.25 / 4))
    assert M.mae(pred, true) == pytest.approx(1.5 / 4)


def test_absrel_and_delta1():
    pred = batch([[1.0, 2.0, 3.0, 5.0]])
    true = batch([[1.0, 2.5, 2.0, 0.0]])  # last pixel invalid (gt = 0)
    # |p-g|/g: 0, 0.2, 0.5 -> mean 0.7/3; ratios 1, 1.25 (not < 1.25), 1.5 -> 1/3
    assert M.abs_rel(pred, true) == pytest.approx(0.7 / 3)
    assert M.delta1(pred, true) == pytest.approx(1 / 3)
    valid = np.array([[[[True, True, False, True]]]])
    assert M.abs_rel(pred, true, valid=valid) == pytest.approx(0.1)
    assert math.isnan(M.delta1(batch([[1.0]]), batch([[0.0]])))


def test_delta1_zero_prediction_does_not_divide_by_zero():
    assert M.delta1(batch([[0.0, 2.0]]), batch([[1.0, 2.0]])) == pytest.approx(0.5)


def test_seed_iou_thresholds_in_normalised_space():
    stats = M.SEED_MASK_STATS  # threshold 0.079 + 0.5 * 0.254 = 0.206
    pred = batch([[0.20, 0.21, 0.9]], [[0.0, 0.3, 0.0]])
    true = batch([[0.21, 0.21, 0.0]], [[0.0, 0.0, 0.0]])
    # whole batch: A = {(0,1), (0,2), (1,1)}, B = {(0,0), (0,1)} -> inter 1, union 4
    assert M.seed_iou(pred, true, stats) == pytest.approx(1 / 4)
    # depth statistics: threshold 0.35 + 0.104 = 0.454
    assert M.seed_iou(batch([[0.45, 0.46]]), batch([[0.46, 0.46]]), M.SEED_DEPTH_STATS) == pytest.approx(0.5)
    assert M.seed_iou_raw(batch([[0.0]]), batch([[0.2]])) == 1.0  # empty union


def test_seed_dice_loss_raw():
    p, t = batch([[1.0, 2.0]]), batch([[1.0, 0.0]])
    # 1 - (2 * 1 + 1) / (5 + 1 + 1) = 1 - 3/7
    assert M.seed_dice_loss_raw(p, t) == pytest.approx(4 / 7)
    # [0, 1] values mapped with mean 0.5, std 0.5: 1.0 -> 1, 0.5 -> 0, 0 -> -1
    assert M.seed_dice_loss(batch([[1.0, 0.5]]), batch([[1.0, 0.0]]), (0.5, 0.5)) == pytest.approx(1 - 3 / 4)


def test_parity_helpers():
    a = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    b = np.array([[0.5, 1.0], [2.0, 1.0]], np.float32)
    assert M.max_abs_diff(a, b) == 2.0
    assert M.mean_abs_diff(a, b) == pytest.approx(2.5 / 4)
    assert math.isnan(M.max_abs_diff(np.array([np.nan]), np.array([0.0])))
    with pytest.raises(ValueError):
        M.max_abs_diff(a, b[:1])


def test_validation_metrics_one_batch():
    pm, tm = batch(P0, P1), batch(T0, T1)
    pd, td = batch([[0.0, 0.5, 1.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]]), batch([[0.0, 0.0, 1.0, 1.0]], [[1.0] * 4])
    out = M.validation_metrics(pm, pd, tm, td)
    assert out["mask_iou"] == pytest.approx(5 / 12)
    assert out["mask_dice"] == pytest.approx(7 / 12)
    assert out["depth_rmse"] == pytest.approx(math.sqrt(0.25 / 8))
    assert out["depth_mae"] == pytest.approx(0.5 / 8)
    assert out["depth_iou"] == pytest.approx(1.0)  # {2,3} vs {2,3}, all vs all
    assert out["seed_mask_iou"] == pytest.approx(M.seed_iou(pm, tm, M.SEED_MASK_STATS))
    assert out["seed_depth_dice_loss"] == pytest.approx(M.seed_dice_loss(pd, td, M.SEED_DEPTH_STATS))
    assert "depth_absrel" not in out
    raw = np.full_like(pm, 3.0)
    out = M.validation_metrics(pm, pd, tm, td, pred_mask_raw=raw, to_metres=lambda g: 1.0 + g)
    assert out["seed_mask_dice_loss"] == pytest.approx(M.seed_dice_loss_raw(raw, M.normalise(tm, M.SEED_MASK_STATS)))
    # metres: pred 1, 1.5, 2, 2 | 2,2,2,2 vs true 1, 1, 2, 2 | 2,2,2,2 -> one pixel off by 0.5
    assert out["depth_absrel"] == pytest.approx(0.5 / 8)
    assert out["depth_delta1"] == pytest.approx(7 / 8)


def test_accumulator_averages_seed_figures_per_batch_and_the_rest_per_image():
    acc = M.MetricAccumulator()
    acc.update(batch(P0), batch(P0), batch(T0), batch(T0))
    acc.update(batch(P1), batch(P1), batch(T1), batch(T1))
    out = acc.result()
    both = M.validation_metrics(batch(P0, P1), batch(P0, P1), batch(T0, T1), batch(T0, T1))
    for key in ("mask_iou", "mask_dice", "depth_rmse", "depth_mae", "depth_iou"):
        assert out[key] == pytest.approx(both[key])
    s0 = M.seed_iou(batch(P0), batch(T0), M.SEED_MASK_STATS)
    s1 = M.seed_iou(batch(P1), batch(T1), M.SEED_MASK_STATS)
    assert out["seed_mask_iou"] == pytest.approx((s0 + s1) / 2)
    assert M.MetricAccumulator().result() == {}


def test_metrics_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, toolkit.verify.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_decided_iou_ignores_only_pixels_the_reference_leaves_at_the_threshold():
    ref = np.full((2, 1, 4, 4), 0.9, np.float32)
    ref[0, 0, :2] = 0.5 + 1e-4  # undecided: rounding moves them across 0.5
    ref[1, 0, 0, 0] = 0.1
    pred = ref.copy()
    pred[0, 0, :2] = 0.5 - 1e-4  # the undecided half flips
    assert M.mask_iou(pred, ref) == pytest.approx((0.5 + 1.0) / 2)
    assert M.decided_iou(pred, ref, band=0.02) == 1.0
    pred[1, 0, 1, 1] = 0.1  # a decided pixel flips: it counts
    assert M.decided_iou(pred, ref, band=0.02) == pytest.approx((1.0 + 14 / 15) / 2)
    assert M.decided_iou(pred, ref, band=0.0) == pytest.approx(M.mask_iou(pred, ref))
