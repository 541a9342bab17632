"""The Pillow scatter `toolkit val --plot` draws (toolkit/render/plot.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.render.plot import PALETTE, Panel, Point, nice_ticks, scatter_png


@pytest.mark.parametrize("lo, hi", [(0.0, 1.0), (0.1607, 0.1609), (0.0, 23.7), (-3.0, 2.0), (5.0, 5.0)])
def test_nice_ticks_cover_the_range_at_round_steps(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6
    assert 2 <= len(ticks) <= 8


def _colour_pixels(img: np.ndarray, colour) -> int:
    return int(np.all(img == np.array(colour, np.uint8), axis=-1).sum())


def test_every_point_is_drawn_in_every_panel_with_its_legend_entry():
    points = [Point("a.onnx (onnxruntime, fp32)", 10.0, {"iou": 0.8, "rmse": 0.03}),
              Point("b.onnx (openvino, int8)", 4.0, {"iou": 0.7, "rmse": 0.05})]
    one = scatter_png(points[:1], [Panel("iou", "IoU"), Panel("rmse", "RMSE")], title="t", x_label="ms")
    two = scatter_png(points, [Panel("iou", "IoU"), Panel("rmse", "RMSE")], title="t", x_label="ms")
    assert one.dtype == np.uint8 and one.shape[2] == 3 and one.shape[1] >= 800
    # the second model's colour appears only when it is drawn: two markers and its legend entry
    assert _colour_pixels(one, PALETTE[1]) == 0
    assert _colour_pixels(two, PALETTE[1]) > 3 * 50


def test_a_missing_figure_is_not_drawn():
    points = [Point("a", 1.0, {"iou": 0.5}), Point("b", 2.0, {"iou": float("nan")})]
    img = scatter_png(points, [Panel("iou", "IoU")], title="t", x_label="ms")
    legend_only = _colour_pixels(img, PALETTE[1])
    drawn = _colour_pixels(img, PALETTE[0])
    assert 0 < legend_only < drawn  # b has its legend marker (smaller) but no point


def test_values_decades_apart_get_a_log_axis_with_every_point_apart():
    from toolkit.render.plot import log_ticks

    assert log_ticks(1.7, 300) == [1, 2, 5, 10, 20, 50, 100, 200, 500]
    points = [Point("fast", 1.5, {"iou": 0.7}), Point("faster", 2.0, {"iou": 0.7}), Point("eager", 300.0, {"iou": 0.7})]
    img = scatter_png(points, [Panel("iou", "IoU")], title="t", x_label="ms")
    panel = img[36:36 + 300]  # the plot area, above the legend
    xs = [np.nonzero(np.all(panel == np.array(PALETTE[i], np.uint8), axis=-1))[1] for i in range(2)]
    assert xs[0].size and xs[1].size and xs[1].mean() - xs[0].mean() > 10  # 1.5 and 2.0 ms stand apart (linear: < 1 px)
