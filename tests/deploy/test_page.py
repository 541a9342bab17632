"""The upload page at `/` in a real headless browser (Debian's chromium): it runs a sample end to end."""

import re
import shutil
import subprocess

import pytest

from tests.deploy.conftest import running_server

pytest.importorskip("starlette", reason="the serve extra is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, profile, *extra: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=20000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_page_uploads_a_sample_and_shows_the_panel(exported_onnx, tmp_path):
    with running_server(exported_onnx) as server:
        page = server.request("/")
        assert page[0] == 200 and "text/html" in page[1]["content-type"]
        dom = chromium(server.url + "/?sample=1", tmp_path / "profile", "--dump-dom")
        code, stdout, _ = server.stop()
    status = re.search(r'<p id="status"[^>]*>([^<]*)</p>', dom)
    assert status, dom[:2000]
    # the page drew two images on canvases, POSTed them as multipart, and displayed the PNG it got back
    assert re.fullmatch(r"done: panel \d+x\d+ in \d+ ms", status.group(1)), status.group(1)
    width, height = map(int, re.search(r"panel (\d+)x(\d+)", status.group(1)).groups())
    assert width > 4 * 160 and height > 120  # bg | fgbg | mask | depth of the 160x120 sample
    assert 'data-status="done"' in dom
    assert "model: model.onnx (onnxruntime, fp32, 128x128)" in dom  # it read GET /v1/model too
    assert code == 0 and "stopped (SIGTERM): 1 request(s)" in stdout
