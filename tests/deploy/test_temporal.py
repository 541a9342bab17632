"""Flicker (mask change on still pixels) and --smooth (an EMA of mask and depth)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from toolkit.core.errors import UserError
from toolkit.deploy.footage import background, walking_scene
from toolkit.deploy.temporal import FlickerMeter, Smoother


def test_the_smoother_is_an_ema_and_alpha_0_passes_frames_through():
    a, b = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    off = Smoother(0.0)
    assert off(b, b)[0] is b
    ema = Smoother(0.75)
    ema(a, a)
    mask, depth = ema(b, b)
    assert np.allclose(mask, 0.25) and np.allclose(depth, 0.25)
    assert np.allclose(ema(b, b)[0], 0.4375)
    ema.reset()
    assert np.allclose(ema(b, b)[0], 1.0)
    with pytest.raises(UserError, match=r"--smooth must be in \[0, 1\)"):
        Smoother(1.0)


def test_flicker_counts_only_pixels_that_did_not_change():
    frame = np.zeros((4, 4, 3), np.float32)
    moved = frame.copy()
    moved[:2] = 1.0  # the top half changed: its mask change is motion, not flicker
    meter = FlickerMeter()
    meter.add(frame, np.zeros((4, 4), np.float32))
    flick = np.zeros((4, 4), np.float32)
    flick[:2] = 1.0  # changes where the frame changed...
    flick[2:, :2] = 0.5  # ...and on still pixels (half of the still half, by 0.5)
    meter.add(moved, flick)
    assert meter.value == pytest.approx(0.25)
    truth = FlickerMeter()  # with true masks: "still" is where the truth did not change
    truth.add(frame, np.zeros((4, 4), np.float32))
    truth.add(moved, flick, still=np.ones((4, 4), bool))
    assert truth.value == pytest.approx(np.abs(flick).mean())
    assert FlickerMeter().value is None


@pytest.fixture
def jittery_still_scene(tmp_path):
    """A still scene with a person, each frame with noise under the still threshold: the model's
    masks jitter a little though nothing moved."""
    frames, _ = walking_scene(8, 96, 128)
    bg = background(96, 128)
    rng = np.random.default_rng(0)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(10):
        noisy = np.clip(frames[3].astype(np.int16) + rng.integers(-1, 2, frames[3].shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:03d}.png")
    Image.fromarray(bg).save(tmp_path / "bg.png")
    return folder, tmp_path / "bg.png"


def test_smoothing_lowers_the_flicker_of_a_stream(exported_onnx, jittery_still_scene, tmp_path):
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    folder, bg = jittery_still_scene
    plain = stream(exported_onnx, str(folder), tmp_path / "plain", StreamOptions(bg=bg, self_test=False))
    smooth = stream(exported_onnx, str(folder), tmp_path / "smooth", StreamOptions(bg=bg, smooth=0.8, self_test=False))
    assert plain.flicker is not None and plain.flicker > 0  # the noise does move the masks: the test can fail
    assert smooth.flicker < 0.5 * plain.flicker
    with pytest.raises(UserError, match="--smooth must be in"):
        StreamOptions(bg=bg, smooth=1.5)


def test_stream_json_has_the_summary(exported_onnx, jittery_still_scene, tmp_path):
    folder, bg = jittery_still_scene
    r = run_cli("stream", "--model", str(exported_onnx), "--source", str(folder), "--bg", str(bg),
                "--out", str(tmp_path / "out"), "--smooth", "0.5", "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["frames"] == 10 and doc["smooth"] == 0.5 and doc["flicker"] >= 0 and doc["fps"] > 0
    assert doc["self_test"].startswith("self-test passed") and "flicker " in r.stdout
