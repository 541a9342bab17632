"""The background: a photo of the empty scene (resized when needed) or the median of the first frames."""

import numpy as np
import pytest
from PIL import Image

from toolkit.core.errors import UserError
from toolkit.deploy.background import load_background, median_background
from toolkit.deploy.footage import background, walking_frames


def test_median_sees_through_a_moving_person():
    frames = walking_frames(9, 48, 64)
    assert not all(np.array_equal(f, frames[0]) for f in frames)  # the figure moves
    bg, note = median_background(frames, 9)
    assert np.array_equal(bg, background(48, 64))
    assert "median of the first 9 frame(s)" in note


def test_median_says_when_the_stream_had_fewer_frames_than_asked():
    bg, note = median_background(walking_frames(3, 48, 64), 30)
    assert bg.shape == (48, 64, 3) and bg.dtype == np.uint8
    assert "asked for 30" in note and "only 3" in note


def test_median_refuses_no_frames_and_mixed_sizes():
    with pytest.raises(UserError, match="no frames"):
        median_background([], 5)
    with pytest.raises(UserError, match="one size"):
        median_background([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], 2)


def test_background_image_of_another_size_is_resized_and_said(tmp_path):
    Image.fromarray(background(96, 128)).save(tmp_path / "bg.png")  # same aspect, twice the size
    bg, note = load_background(tmp_path / "bg.png", (48, 64))
    assert bg.shape == (48, 64, 3) and bg.dtype == np.uint8
    assert "resized to the frames' 64x48" in note and "aspect" not in note
    Image.fromarray(background(64, 64)).save(tmp_path / "square.png")
    _, note = load_background(tmp_path / "square.png", (48, 64))
    assert "aspect ratio 1.00 vs the frames' 1.33" in note


def test_background_image_at_the_frame_size_is_used_as_is(tmp_path):
    Image.fromarray(background(48, 64)).save(tmp_path / "bg.png")
    bg, note = load_background(tmp_path / "bg.png", (48, 64))
    assert np.array_equal(bg, background(48, 64)) and "resized" not in note


def test_unreadable_background_is_a_user_error(tmp_path):
    (tmp_path / "bg.png").write_text("not an image")
    with pytest.raises(UserError, match="not a readable image"):
        load_background(tmp_path / "bg.png", (48, 64))
