"""Decoded video frames: the model's copy made from the YUV planes agrees with `infer`'s float
resize of FFmpeg's RGB picture; frames the planes path cannot reproduce are plain RGB."""

from pathlib import Path

import numpy as np
import pytest

from toolkit.deploy.decoded import DecodedFrame, model_input, picture_at
from toolkit.deploy.footage import walking_frames
from toolkit.deploy.video import open_source
from toolkit.render import imageio

av = pytest.importorskip("av", reason="the video extra (PyAV) is not installed")

H, W, SIZE = 360, 640, (64, 64)  # a camera frame to a model: 5-10x smaller, as at 720p to 128


def tagged_clip(path: Path, colorspace: int, color_range: int, n: int = 6, h: int = H, w: int = W) -> Path:
    """An H.264 clip of a walking figure whose stream says its colour matrix and range."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.colorspace, stream.codec_context.color_range = colorspace, color_range
        for f in walking_frames(n, h, w):
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def grey_levels_from_infer(frames: list) -> np.ndarray:
    """Per pixel, how far the model's copy is from `infer`'s float resize of the RGB frame (levels)."""
    return np.stack([
        (model_input(f, SIZE) - imageio.resize(np.asarray(f).astype(np.float32) / 255, SIZE)) * 255 for f in frames
    ])


@pytest.mark.parametrize("colorspace", [2, 1], ids=["untagged (BT.601)", "BT.709"])
def test_the_planes_copy_is_within_half_a_grey_level_of_infers_on_average(tmp_path, colorspace):
    with open_source(str(tagged_clip(tmp_path / "c.mp4", colorspace, 1))) as src:
        frames = list(src.decoded())
    assert all(isinstance(f, DecodedFrame) for f in frames)
    off = grey_levels_from_infer(frames)
    assert np.abs(off).mean() < 0.7 and np.abs(off).max() < 6, (np.abs(off).mean(), np.abs(off).max())  # the 8-bit RGB resize: 0.25, 1
    assert np.abs(off.mean(axis=(0, 1, 2))).max() < 0.35  # no colour cast: FFmpeg's rounding is followed
    if colorspace == 1:  # the figure above tells matrices apart: BT.601's on a BT.709 clip is far off
        wrong = [DecodedFrame(f._frame, 6) for f in frames]  # BT.601's tag
        assert np.abs(grey_levels_from_infer(wrong)).mean() > 1.0


def test_a_decoded_frame_is_the_rgb_frame_ffmpeg_gives(clip):
    with open_source(str(clip)) as src:
        decoded = list(src.decoded())
    with open_source(str(clip)) as src:
        rgb = list(src)
    assert all(isinstance(f, np.ndarray) for f in rgb)  # iterating a source still gives arrays
    assert [f.shape for f in decoded] == [f.shape for f in rgb] and decoded[0].dtype == np.uint8
    assert all(np.array_equal(np.asarray(d), r) for d, r in zip(decoded, rgb))
    assert picture_at(decoded[3], (24, 32)).shape == (24, 32, 3)
    assert picture_at(decoded[3], rgb[3].shape[:2]) is decoded[3].rgb()  # at its own size: no copy


def test_full_range_frames_are_converted_by_ffmpeg_as_before(tmp_path):
    with open_source(str(tagged_clip(tmp_path / "full.mp4", 1, 2))) as src:  # yuvj420p: JPEG range
        frames = list(src.decoded())
    assert not any(isinstance(f, DecodedFrame) for f in frames)
    want = imageio.resize_uint8(frames[2], SIZE).astype(np.float32) / 255
    assert np.array_equal(model_input(frames[2], SIZE), want)
