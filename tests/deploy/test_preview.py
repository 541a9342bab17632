"""`stream --preview`: the live panel over HTTP on 127.0.0.1, as JPEG, MJPEG and a page, and /metrics."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from toolkit.deploy.footage import walking_frames
from toolkit.deploy.preview import Preview, wait_until
from toolkit.deploy.video import FrameSource

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class SlowCamera(FrameSource):
    kind = "camera"

    def __init__(self, n: int, every_s: float):
        super().__init__("slow camera", 1 / every_s, None)
        self.frames, self.every_s = walking_frames(n, 48, 64), every_s

    def _frames(self) -> Iterator[np.ndarray]:
        for f in self.frames:
            time.sleep(self.every_s)
            yield f


def get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


@pytest.fixture
def streaming(exported_onnx, tmp_path):
    """A stream of a slow camera running in a thread with a preview; yields the preview."""
    from PIL import Image as PilImage

    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    PilImage.fromarray(walking_frames(1, 48, 64)[0]).save(tmp_path / "bg.png")
    preview = Preview(0)
    done = threading.Event()
    result = {}

    def run():
        try:
            result["report"] = stream(exported_onnx, SlowCamera(120, 0.05), tmp_path / "out", StreamOptions(bg=tmp_path / "bg.png", batch=1),
                                      preview=preview)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: preview.frame > 0, 30), "no panel within 30 s"
        yield preview
    finally:
        done.wait(60)
        preview.close()
        thread.join(10)


def test_the_newest_panel_is_a_jpeg_the_stream_an_mjpeg_and_metrics_follow(streaming):
    status, headers, body = get(streaming.url + "frame.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and int(headers["X-Frame"]) >= 1
    with Image.open(io.BytesIO(body)) as im:
        assert im.format == "JPEG" and im.size[0] > 2 * 64  # frame | mask | depth side by side
    with urllib.request.urlopen(streaming.url + "stream.mjpg", timeout=10) as r:
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        head = r.read(200)
    assert head.startswith(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ")
    _, headers, body = get(streaming.url + "metrics")
    text = body.decode()
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    frames = int(re.search(r"^toolkit_stream_frames_total (\d+)$", text, re.M).group(1))
    assert frames >= 1 and re.search(r'^toolkit_stream_latency_seconds_bucket\{le="\+Inf"\} \d+$', text, re.M)
    assert re.search(r"^toolkit_self_test_passed 1$", text, re.M)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_the_page_shows_the_live_panel_in_a_headless_browser(streaming, tmp_path):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", streaming.url]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    status = re.search(r'<p id="status" data-status="(\w+)">([^<]*)</p>', dom)
    assert status and status.group(1) == "live", dom[:2000]
    assert re.fullmatch(r"live: panel \d+x\d+, frame \d+", status.group(2))


def test_a_port_in_use_is_one_line():
    import socket

    from toolkit.core.errors import UserError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UserError, match=r"--preview: cannot listen on 127.0.0.1:\d+"):
            Preview(busy.getsockname()[1])
