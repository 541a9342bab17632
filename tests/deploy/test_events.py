"""`stream --events`: a JSON line per frame, readable while the stream runs; `--no-video`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from toolkit.core.errors import UserError
from toolkit.deploy.events import frame_event
from toolkit.deploy.footage import background, walking_frames
from toolkit.deploy.options import StreamOptions
from toolkit.deploy.stream import stream
from toolkit.deploy.video import FrameSource

pytest.importorskip("av", reason="the video extra (PyAV) is not installed")


def test_an_event_says_where_the_person_is_in_the_cameras_pixels():
    mask = np.zeros((8, 8), np.float32)
    mask[2:4, 1:3] = 0.9  # rows 2-3, columns 1-2 of an 8x8 model output
    depth = np.full((8, 8), 0.7, np.float32)
    depth[2, 1] = 0.1
    e = frame_event(5, 0.2, mask, depth, (80, 160), 0.01234567, 12.34)
    assert e == {"frame": 5, "time_s": 0.2, "coverage": 0.0625, "bbox": [20, 20, 60, 40], "depth_median": 0.7,
                 "flicker": 0.01235, "latency_ms": 12.3}
    empty = frame_event(0, 0.0, np.zeros((8, 8)), depth, (80, 160), None, 1.0)
    assert empty["bbox"] is None and empty["depth_median"] is None and empty["coverage"] == 0.0
    json.dumps(empty, allow_nan=False)


class Released(FrameSource):
    """A camera whose frames come only when the test releases them (the walking figure, 48x64)."""

    kind = "camera"

    def __init__(self, n: int):
        super().__init__("released", 25.0, None)
        self.pictures = walking_frames(n, 48, 64)
        self.allowed = threading.Semaphore(0)

    def _frames(self) -> Iterator[np.ndarray]:
        for frame in self.pictures:
            assert self.allowed.acquire(timeout=60), "the test never released the next frame"
            yield frame


def _lines(path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def test_a_reader_sees_each_frames_event_while_the_stream_runs(exported_onnx, tmp_path):
    """Frame k is released only once the reader has read frame k-1's line: the lines come as
    frames finish, in order, not when the stream ends; the latency of each is the live one."""
    Image.fromarray(background(48, 64)).save(tmp_path / "bg.png")
    camera, events, n = Released(5), tmp_path / "events.jsonl", 5
    done: dict = {}
    options = StreamOptions(bg=tmp_path / "bg.png", video=False, events=events, batch=1)
    runner = threading.Thread(target=lambda: done.update(report=stream(exported_onnx, camera, None, options)), daemon=True)
    runner.start()
    seen: list[dict] = []
    for k in range(n):
        camera.allowed.release()
        deadline = time.monotonic() + 60
        while len(seen) <= k and time.monotonic() < deadline:
            seen = _lines(events)
            time.sleep(0.01)
        assert len(seen) == k + 1, f"frame {k}'s line never came while the stream ran"
    runner.join(60)
    report = done["report"]
    assert [e["frame"] for e in seen] == list(range(n)) and report.events == n and report.frames == n
    times = [e["time_s"] for e in seen]
    assert times == sorted(times) and times[0] >= 0  # seconds since the camera's first frame
    assert all(e["latency_ms"] > 0 for e in seen) and 0 < report.latency_ms_p50 <= report.latency_ms_p99
    assert report.layout == "" and report.encoder == ""  # nothing was drawn or encoded


def test_no_video_and_its_refusals_come_before_any_work(exported_onnx, clip, tmp_path):
    with pytest.raises(UserError, match="--no-video writes no video: drop --out"):
        stream(exported_onnx, str(clip), tmp_path / "o.mp4", StreamOptions(video=False))
    with pytest.raises(UserError, match="give --out .* or --no-video"):
        stream(exported_onnx, str(clip), None, StreamOptions())
    with pytest.raises(UserError, match="with --no-video, add --preview or drop them"):
        stream(exported_onnx, str(clip), None, StreamOptions(video=False, layout="overlay"))
    with pytest.raises(UserError, match="--preset sets the video's encoder"):
        StreamOptions(video=False, preset="fast")
    for bad, line in ((dict(layout="sideways"), "--layout must be one of panel, overlay"),
                      (dict(out_size=(0, 64)), "--out-size must be two whole numbers"),
                      (dict(preset="warp"), "--preset must be one of ultrafast")):
        with pytest.raises(UserError, match=line):
            StreamOptions(**bad)
    assert list(tmp_path.iterdir()) == []


def test_events_to_standard_output_are_json_lines_only(exported_onnx, clip, tmp_path):
    r = run_cli("stream", "-m", str(exported_onnx), "-s", str(clip), "--no-video", "--events", "-", "--bg-frames", "4",
                block_torch=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 12 and [json.loads(x)["frame"] for x in lines] == list(range(12))
    assert "12 frame(s) in" in r.stderr and "-> no video" in r.stderr and "12 event line(s) -> standard output" in r.stderr
    (tmp_path / "file").write_text("a file where the events' folder should be")
    bad = run_cli("stream", "-m", str(exported_onnx), "-s", str(clip), "--no-video", "--events", str(tmp_path / "file" / "e.jsonl"),
                  block_torch=True)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "file" in lines[0], bad.stderr  # before any work


def test_a_nan_flicker_is_written_as_null_not_a_crash():
    mask = np.full((8, 8), np.nan, np.float32)
    event = frame_event(1, 0.1, mask, mask, (16, 16), float("nan"), 5.0)
    assert event["flicker"] is None and event["bbox"] is None
    json.dumps(event, allow_nan=False)


def test_a_reader_that_goes_away_stops_the_events_quietly():
    """`stream --events - | head -1`: the write after the reader left stops the stream (as
    Ctrl-C does) instead of failing it, and Python says nothing more at exit."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys\nfrom toolkit.deploy.events import EventLog\n"
            "log = EventLog('-', on_closed=lambda: print('closed', file=sys.stderr))\n"
            "import time\nfor i in range(50):\n    log.write({'frame': i})\n    time.sleep(0.01)\n"
            "print('written', log.count, file=sys.stderr)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    assert proc.stdout.readline().startswith('{"frame": 0')
    proc.stdout.close()  # the reader goes away
    err = proc.stderr.read()
    assert proc.wait(60) == 0, err
    lines = err.strip().splitlines()
    assert lines[0] == "closed" and lines[1].startswith("written ") and len(lines) == 2, err  # no BrokenPipeError at exit
