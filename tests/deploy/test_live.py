"""Live sources: newest frame first (drops counted), stride, network streams over 127.0.0.1, reconnects."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from toolkit.deploy.live import LiveFrames, LiveOptions, StridedFrames, open_live
from toolkit.deploy.video import FrameSource


class Ticking(FrameSource):
    """`n` frames, one every `every_s`, frame i filled with i (a camera faster than the model)."""

    kind = "camera"

    def __init__(self, n: int, every_s: float):
        super().__init__("ticking", 1 / every_s if every_s else 25.0, None)
        self.n, self.every_s = n, every_s

    def _frames(self) -> Iterator[np.ndarray]:
        for i in range(self.n):
            time.sleep(self.every_s)
            yield np.full((4, 4, 3), i, np.uint8)


class Released(FrameSource):
    """A camera that delivers frames only when the test releases them (frame i filled with i):
    what a busy model misses is then decided by the test, not by the machine's speed."""

    kind = "camera"

    def __init__(self, n: int):
        super().__init__("released", 25.0, None)
        self.n = n
        self.allowed = threading.Semaphore(0)

    def release(self, k: int) -> None:
        for _ in range(k):
            self.allowed.release()

    def _frames(self) -> Iterator[np.ndarray]:
        for i in range(self.n):
            assert self.allowed.acquire(timeout=60), "the test never released the next frame"
            yield np.full((4, 4, 3), i, np.uint8)


def test_a_slow_consumer_gets_the_newest_frame_and_the_rest_are_counted_as_dropped():
    """Frames arrive in bursts while the model is busy; each time it takes one: the newest."""
    camera = Released(60)
    live = LiveFrames(lambda: camera)
    taken: list[int] = []

    def burst(k: int, dropped_after: int) -> None:
        camera.release(k)
        deadline = time.monotonic() + 60
        while live.dropped < dropped_after:  # the burst's last frame has replaced the ones before it
            assert time.monotonic() < deadline, "the reader never caught up"
            time.sleep(0.005)
        taken.append(int(next(frames)[0, 0, 0]))

    with live:
        frames = iter(live)
        burst(1, 0)  # the first frame starts the reader
        for i in range(5):
            burst(10, 9 * (i + 1))  # ten frames, nine of them replaced before the model is free
        burst(9, 45 + 8)
        assert next(frames, None) is None  # the camera ended: nothing more
    assert taken == [0, 10, 20, 30, 40, 50, 59]  # always the newest frame
    assert live.received == 60 and live.dropped == 53 and len(taken) + live.dropped == 60


def test_stride_keeps_every_nth_frame_live_and_from_a_file():
    live = LiveFrames(lambda: Ticking(12, 0.001), stride=3)
    with live:
        got = [int(f[0, 0, 0]) for f in live]
    assert set(got) <= {0, 3, 6, 9} and got[-1] == 9
    strided = StridedFrames(Ticking(7, 0.0), 2)
    assert [int(f[0, 0, 0]) for f in strided] == [0, 2, 4, 6]


def test_a_camera_object_is_live_by_default_a_folder_is_not(tmp_path):
    from PIL import Image

    assert isinstance(open_live(Ticking(2, 0.0), None, LiveOptions()), LiveFrames)
    (tmp_path / "f").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "f" / "0.png")
    assert not isinstance(open_live(str(tmp_path / "f"), None, LiveOptions()), LiveFrames)
    assert isinstance(open_live(str(tmp_path / "f"), None, LiveOptions(latest=True)), LiveFrames)


@pytest.fixture(scope="module")
def ts_clip(tmp_path_factory):
    """A 24-frame H.264 MPEG-TS clip (a format that streams: readable from any byte on)."""
    av = pytest.importorskip("av")
    from toolkit.deploy.footage import walking_frames

    path = tmp_path_factory.mktemp("clip") / "clip.ts"
    with av.open(str(path), mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for f in walking_frames(24, 48, 64):
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def serve_clip(clip, cut_first: bool):
    """An HTTP server on 127.0.0.1 sending `clip`; with `cut_first` the first answer stops half-way
    (a dropped connection). Returns (server, url, requests served)."""
    data = clip.read_bytes()
    served = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            served.append(self.path)
            body = data[: len(data) // 2] if cut_first and len(served) == 1 else data
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/clip.ts", served


def test_a_network_stream_is_read_live_and_comes_back_after_a_drop(ts_clip, exported_onnx, tmp_path):
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    server, url, served = serve_clip(ts_clip, cut_first=True)
    try:
        report = stream(exported_onnx, url, tmp_path / "out", StreamOptions(bg_frames=2, batch=1, self_test=False,
                        live=LiveOptions(reconnect=1, stall_s=5.0)))
    finally:
        server.shutdown()
    assert len(served) == 2 and report.reconnects == 1  # the cut connection, then the whole clip
    assert any("reconnecting in 0.5 s (reconnect 1)" in n for n in report.notes)
    assert report.received > 24 and report.frames + report.dropped <= report.received
    assert report.frames > 0 and report.latency_ms_p50 is not None and report.latency_ms_p99 >= report.latency_ms_p50


def test_a_url_label_never_shows_the_password():
    from toolkit.deploy.video import is_network, public_label

    assert public_label("rtsp://user:p@ss@10.0.0.7:554/stream1") == "rtsp://10.0.0.7:554/stream1"
    assert public_label("http://127.0.0.1:8080/clip.ts") == "http://127.0.0.1:8080/clip.ts"
    assert is_network("RTSP://cam/1") and not is_network("/dev/video0")


def test_an_unreachable_url_is_one_line(tmp_path):
    pytest.importorskip("av")
    import socket

    from toolkit.core.errors import UserError
    from toolkit.deploy.video import open_network

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=rf"http://127.0.0.1:{port}/x.ts: not a readable video"):
        open_network(f"http://127.0.0.1:{port}/x.ts", stall_s=2)
