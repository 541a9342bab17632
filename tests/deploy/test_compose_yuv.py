"""The pictures drawn on the decoder's planes are the RGB composer's, within the 4:2:0 encoding
both go through; the video keeps the source's colours."""

import numpy as np
import pytest

from toolkit.deploy.compose import Composer
from toolkit.deploy.compose_yuv import YuvComposer
from toolkit.deploy.decoded import MATRIX_TAG, Planes
from toolkit.deploy.footage import walking_scene
from toolkit.deploy.video import VideoWriter, file_preset

av = pytest.importorskip("av", reason="the video extra (PyAV) is not installed")

H, W = 96, 128


def to_planes(rgb: np.ndarray, matrix: str) -> Planes:
    """FFmpeg's 4:2:0 of an RGB picture, in `matrix`: what the decoder hands over."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace=MATRIX_TAG[matrix], dst_color_range=1)
    out = Planes.blank(*rgb.shape[:2], MATRIX_TAG[matrix])
    for plane, target in zip(frame.planes, (out.y, out.u, out.v)):
        target[:] = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    return out


def to_rgb(planes: Planes) -> np.ndarray:
    """What a player shows of `planes` (FFmpeg's conversion, told the matrix)."""
    frame = av.VideoFrame.from_ndarray(planes.i420, format="yuv420p")
    return frame.reformat(format="rgb24", src_colorspace=MATRIX_TAG[planes.matrix], src_color_range=1).to_ndarray()


def model_outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frames, masks = walking_scene(5, H, W)
    mask = masks[2].astype(np.float32)[::4, ::4]  # the model's size: 24x32
    depth = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)
    return frames[2], mask, depth


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("layout", ["overlay", "panel"])
def test_the_planes_picture_is_the_rgb_picture_after_the_same_encoding(layout, matrix):
    frame, mask, depth = model_outputs()
    composer = Composer(layout, (H, W))
    assert YuvComposer.fits(composer)
    want = to_rgb(to_planes(composer.compose(frame, mask, depth).copy(), matrix))
    got = to_rgb(YuvComposer(composer, matrix).compose(to_planes(frame, matrix), mask, depth))
    assert got.shape == want.shape == (*composer.out_size, 3)
    diff = np.abs(got.astype(int) - want)
    assert diff.mean() < 0.6 and np.percentile(diff, 99.9) <= 6, (diff.mean(), np.percentile(diff, 99.9), diff.max())
    tinted = mask.repeat(4, 0).repeat(4, 1) > 0.5  # the tint is there (the overlay's tile: the last W columns of an overlay)
    tile = got[-H:, :W] if layout == "overlay" else got[-H:, W + 2 : 2 * W + 2]
    assert np.abs(tile[tinted].astype(int) - frame[tinted]).mean() > 20


def test_an_empty_mask_leaves_the_frame_as_decoded():
    frame, mask, depth = model_outputs()
    planes = to_planes(frame, "bt601")
    before = planes.i420.copy()
    out = YuvComposer(Composer("overlay", (H, W)), "bt601").compose(planes, np.zeros_like(mask), depth)
    assert np.array_equal(out.i420, before)


def test_odd_sizes_are_drawn_in_rgb():
    assert not YuvComposer.fits(Composer("overlay", (H + 1, W)))
    assert not YuvComposer.fits(Composer("panel", (H, W - 1)))


def test_large_pictures_get_a_faster_file_preset(tmp_path):
    assert file_preset((720, 1280)) == "veryfast" and file_preset(None) == "veryfast"
    assert file_preset((786, 3844)) == "superfast"  # the panel of a 720p camera
    line = VideoWriter(tmp_path / "x.mp4", "mp4", ("libx264", "mpeg4"), 25, size=(786, 3844)).describe()
    if "libx264" in av.codecs_available:
        assert line.startswith("libx264 (preset superfast, crf 20, frame threads; a file of large pictures: speed)")


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
def test_a_video_of_planes_says_its_matrix_and_plays_in_the_source_colours(tmp_path, matrix):
    colours = np.array([(220, 40, 40), (40, 200, 60), (40, 60, 220), (200, 200, 40)], np.uint8)
    frame = np.ascontiguousarray(np.repeat(colours, W // 4, axis=0)[None].repeat(H, axis=0))  # saturated bands
    writer = VideoWriter(tmp_path / "v.mp4", "mp4", ("libx264", "mpeg4"), 10)
    for _ in range(3):
        writer.write(to_planes(frame, matrix))
    writer.write(frame)  # an RGB picture in the same file: converted in the file's matrix
    writer.close()
    with av.open(str(tmp_path / "v.mp4")) as container:
        decoded = list(container.decode(video=0))
    assert [int(f.colorspace) for f in decoded] == [MATRIX_TAG[matrix]] * 4
    want = to_rgb(to_planes(frame, matrix)).astype(int)  # the source's colours through 4:2:0
    for f in decoded:  # PyAV converts by the file's tag
        assert np.abs(f.to_ndarray(format="rgb24") - want).mean() < 2
    other = "bt601" if matrix == "bt709" else "bt709"  # read in the other matrix, the colours are off
    assert np.abs(to_rgb(Planes(to_planes(frame, matrix).i420, MATRIX_TAG[other])) - want).mean() > 8


def test_planes_in_another_matrix_than_the_files_are_converted_to_it(tmp_path):
    """A live source that comes back in another matrix after a reconnect, or a file that began
    with RGB pictures: every picture plays in its own colours."""
    colours = np.array([(220, 40, 40), (40, 200, 60), (40, 60, 220), (200, 200, 40)], np.uint8)
    frame = np.ascontiguousarray(np.repeat(colours, W // 4, axis=0)[None].repeat(H, axis=0))
    for first, then in (("bt709", "bt601"), ("bt601", "bt709"), (None, "bt709")):
        writer = VideoWriter(tmp_path / "m.mp4", "mp4", ("libx264", "mpeg4"), 10)
        writer.write(frame if first is None else to_planes(frame, first))
        writer.write(to_planes(frame, then))
        writer.close()
        with av.open(str(tmp_path / "m.mp4")) as container:
            shown = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
        assert all(np.abs(s - frame).mean() < 5 for s in shown), (first, then, [np.abs(s - frame).mean() for s in shown])  # unconverted: 9-10


def test_a_bt709_untagged_or_unconvertible_output_keeps_the_sources_tag_or_its_rgb(tmp_path):
    from toolkit.deploy.decoded import DecodedFrame

    frame, _, _ = model_outputs()
    untagged = Planes(to_planes(frame, "bt601").i420, 2)  # a source that says nothing
    writer = VideoWriter(tmp_path / "u.mp4", "mp4", ("libx264", "mpeg4"), 10)
    writer.write(untagged)
    writer.close()
    with av.open(str(tmp_path / "u.mp4")) as container:
        assert int(next(container.decode(video=0)).colorspace) == 2  # still says nothing, as its source
    assert not VideoWriter(tmp_path / "a.avi", "avi", ("mpeg4",), 10).takes_planes  # mpeg4 drops the tag: RGB it is
    assert DecodedFrame.wrap(av.VideoFrame(W - 2, H - 1, "yuv420p")).__class__ is np.ndarray  # odd size: FFmpeg's RGB
