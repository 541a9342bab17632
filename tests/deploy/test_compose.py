"""The stream's pictures in uint8 (`toolkit.deploy.compose`) against the float formula they replaced."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.deploy.compose import OVERLAY_ALPHA, OVERLAY_RGB, PANEL_LABELS, Composer, compose_panel
from toolkit.deploy.footage import walking_frames
from toolkit.render import imageio


def float_panel(frame: np.ndarray, mask: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """What `stream` drew before: the maps resized as float, the tint blended in float, the
    band drawn by `make_panel` (kept here as the reference the uint8 path is held to)."""
    h, w = frame.shape[:2]
    mask = np.clip(imageio.resize(mask, (h, w)), 0.0, 1.0)
    depth = np.clip(imageio.resize(depth, (h, w)), 0.0, 1.0)
    a = (OVERLAY_ALPHA * mask)[:, :, None]
    overlay = (frame.astype(np.float32) * (1.0 - a) + np.array(OVERLAY_RGB, np.float32) * a + 0.5).astype(np.uint8)
    return imageio.make_panel([frame, overlay, imageio.colorize_depth(depth)], list(PANEL_LABELS),
                              legends=[None, None, imageio.depth_legend()])


def _outputs(size: int = 32):
    yy, xx = np.mgrid[0:size, 0:size]
    mask = np.clip(1.5 - np.hypot(yy - size / 2, xx - size / 3) / (size / 6), 0, 1).astype(np.float32)
    return mask, (xx / (size - 1)).astype(np.float32)


@pytest.mark.parametrize("hw", [(48, 64), (45, 80), (120, 90)])
def test_the_panel_is_the_float_formulas_within_a_grey_level_or_two(hw):
    frame = walking_frames(3, *hw)[2]
    mask, depth = _outputs()
    old = float_panel(frame, mask, depth)
    new = Composer("panel", hw).compose(frame, mask, depth)
    assert new.shape == old.shape
    diff = np.abs(old.astype(int) - new)
    assert diff.max() <= 3 and diff.mean() < 0.5, (diff.max(), diff.mean())
    band = Composer("panel", hw).band_height
    assert np.array_equal(new[:band], old[:band])  # the labels and the depth legend, pixel for pixel
    assert np.array_equal(new[band:, : hw[1]], frame)  # the frame tile is the frame


def test_the_overlay_layout_is_the_panels_middle_tile_at_the_cameras_size():
    frame = walking_frames(2, 48, 64)[1]
    mask, depth = _outputs()
    panel = Composer("panel", (48, 64))
    overlay = Composer("overlay", (48, 64)).compose(frame, mask, depth)
    assert overlay.shape == (48, 64, 3) and Composer("overlay", (48, 64)).out_size == (48, 64)
    whole = panel.compose(frame, mask, depth)
    assert np.array_equal(whole[panel.band_height :, 66:130], overlay)


def test_a_composer_reuses_its_canvas_and_compose_panel_returns_a_copy():
    frame = walking_frames(2, 24, 32)[1]
    mask, depth = _outputs(16)
    c = Composer("panel", (24, 32))
    first = c.compose(frame, mask, depth)
    assert c.compose(np.zeros_like(frame), mask, depth) is first  # one canvas per stream, overwritten
    a, exact_mask = compose_panel(frame, mask, depth)
    b, _ = compose_panel(frame, mask, depth)
    assert a is not b and np.array_equal(a, b) and exact_mask.shape == (24, 32)
    with pytest.raises(ValueError, match="frame is"):
        c.compose(np.zeros((10, 10, 3), np.uint8), mask, depth)


def test_nan_outputs_draw_as_zero():
    frame = walking_frames(2, 24, 32)[1]
    mask, depth = _outputs(16)
    zeroed = Composer("panel", (24, 32)).compose(frame, *(np.where(np.arange(16)[:, None] < 4, 0.0, m) for m in (mask, depth)))
    mask[:4], depth[:4] = np.nan, np.nan
    assert np.array_equal(Composer("panel", (24, 32)).compose(frame, mask, depth), zeroed)


@pytest.mark.parametrize("size", [(720, 1280), (45, 80), (16, 20)])
def test_the_overlay_blends_only_around_the_person_with_the_same_pixels(size):
    """The crop the overlay blends gives the pixels a whole-picture blend gives, at any scale
    (within one level: Pillow's resize of a box rounds its weights apart from the whole's)."""
    from PIL import Image

    from toolkit.deploy.compose import ALPHA_LUT, grey

    frame = walking_frames(2, *size)[1]
    mask, _ = _outputs()
    whole = np.asarray(Image.composite(Image.new("RGB", size[::-1], OVERLAY_RGB), Image.fromarray(frame),
                                       grey(mask, size).point(ALPHA_LUT)))
    crop = Composer("overlay", size).overlay(frame, mask)
    assert np.abs(crop.astype(int) - whole).max() <= 1
    tinted = np.abs(whole.astype(int) - frame).max(axis=-1) > 1
    assert tinted.any() and (np.abs(crop.astype(int) - frame).max(axis=-1) > 0)[tinted].all()  # no tinted pixel left out
    assert Composer("overlay", size).overlay(frame, np.zeros_like(mask)) is frame  # no person: nothing to blend
