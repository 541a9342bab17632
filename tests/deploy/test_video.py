"""Frame sources (video, folder) and writers (video, PNG folder) through PyAV."""

import numpy as np
import pytest
from PIL import Image

from tests.deploy.conftest import CLIP_FRAMES, CLIP_H, CLIP_W
from toolkit.core.errors import UserError
from toolkit.deploy.footage import walking_frames, write_video
from toolkit.deploy.video import PngFolderWriter, VideoWriter, open_source, probe_video, video_format

pytest.importorskip("av", reason="the video extra (PyAV) is not installed")


def test_video_source_yields_rgb_frames_close_to_what_was_encoded(clip):
    with open_source(str(clip)) as src:
        frames = list(src)
        assert src.kind == "video" and src.fps == 10 and src.expected == CLIP_FRAMES
    assert len(frames) == CLIP_FRAMES
    assert frames[0].shape == (CLIP_H, CLIP_W, 3) and frames[0].dtype == np.uint8
    original = walking_frames(CLIP_FRAMES, CLIP_H, CLIP_W)
    assert np.abs(frames[5].astype(int) - original[5]).mean() < 12  # H.264 is lossy, not a different picture


def test_folder_source_reads_images_in_name_order(tmp_path):
    frames = walking_frames(3, 16, 24)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"f{i:02d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(str(tmp_path), fps=5) as src:
        got = list(src)
        assert src.fps == 5 and src.expected == 3
    assert all(np.array_equal(a, b) for a, b in zip(got, frames))


def test_frame_size_change_mid_stream_is_refused(tmp_path):
    Image.fromarray(walking_frames(1, 16, 24)[0]).save(tmp_path / "a.png")
    Image.fromarray(walking_frames(1, 20, 24)[0]).save(tmp_path / "b.png")
    with open_source(str(tmp_path)) as src, pytest.raises(UserError, match="frame 1 is 24x20 but the stream started at 24x16"):
        list(src)


def test_unreadable_and_missing_sources(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 100)
    with pytest.raises(UserError, match="bad.mp4: not a readable video"):
        open_source(str(tmp_path / "bad.mp4"))
    with pytest.raises(UserError, match="no such video file, folder or camera"):
        open_source(str(tmp_path / "nope.mp4"))
    with pytest.raises(UserError, match="camera 97"):
        open_source("97")  # no such camera on any test machine


def test_truncated_video_keeps_the_frames_before_the_damage(tmp_path):
    good = write_video(tmp_path / "good.mkv", walking_frames(30, 48, 64))  # Matroska plays from the start, like a cut recording
    data = good.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    with open_source(str(tmp_path / "cut.mkv")) as src:
        n = len(list(src))
    assert 0 < n < 30


@pytest.mark.parametrize("h,w", [(48, 64), (33, 47)])
def test_video_writer_makes_a_playable_file_even_at_odd_sizes(tmp_path, h, w):
    path = tmp_path / "out.mp4"
    writer = VideoWriter(path, "mp4", ("libx264", "mpeg4"), 12.5)
    for f in walking_frames(7, h, w):
        writer.write(f)
    writer.close()
    assert probe_video(path) == (7, w + w % 2, h + h % 2, 12.5)


def test_png_folder_writer(tmp_path):
    writer = PngFolderWriter(tmp_path / "frames")
    for f in walking_frames(3, 16, 24):
        writer.write(f)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]


def test_output_kind_from_the_path(tmp_path):
    assert video_format(tmp_path / "x.mp4")[0] == "mp4"
    assert video_format(tmp_path / "x.MKV")[0] == "matroska"
    assert video_format(tmp_path / "frames") is None  # no suffix: a folder of PNGs
    assert video_format(tmp_path) is None
    with pytest.raises(UserError, match="unknown video suffix '.gif'"):
        video_format(tmp_path / "x.gif")


def test_live_sources_decode_without_frame_threads_which_hold_frames_back(clip):
    """Frame threads delay each frame by the frames decoding beside it: latency for a camera or
    a network stream, throughput for a file."""
    from toolkit.deploy.video import AvSource

    with AvSource(str(clip), "net", "network") as live, AvSource(str(clip), "file", "video") as file:
        assert live.stream.thread_type.name == "SLICE" and file.stream.thread_type.name == "AUTO"
        assert len(list(live)) == len(list(file)) == CLIP_FRAMES
