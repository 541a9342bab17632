"""Fixtures for the deploy tests: a short synthetic clip, and a real `toolkit serve` process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from toolkit.deploy.footage import walking_frames, write_video

CLIP_FRAMES, CLIP_H, CLIP_W = 12, 48, 64


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """12 frames, 64x48, 10 fps, H.264 in .mp4: a figure walking over a fixed background."""
    return write_video(tmp_path_factory.mktemp("clip") / "walk.mp4", walking_frames(CLIP_FRAMES, CLIP_H, CLIP_W))


def cli_process(*args: str, block_torch: bool = True, block: tuple[str, ...] = ()) -> subprocess.Popen:
    """`python -m toolkit ARGS` as a running process (torch, and any module in `block`, unimportable)."""
    code = "import sys\n"
    for name in (("torch",) if block_torch else ()) + block:
        code += f"sys.modules[{name!r}] = None\n"
    code += "from toolkit.cli import main\nmain(sys.argv[1:])\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("COLUMNS", None)
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


class Server:
    """A `toolkit serve` subprocess on 127.0.0.1 and a free port, with small HTTP helpers."""

    def __init__(self, proc: subprocess.Popen, url: str):
        self.proc = proc
        self.url = url

    def request(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60):
        """(status, headers, body) of one request; HTTP errors are answers too."""
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path: str) -> dict:
        status, _, body = self.request(path)
        assert status == 200, body
        return json.loads(body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@contextlib.contextmanager
def running_server(model: Path, *args: str) -> Iterator[Server]:
    proc = cli_process("serve", "--model", str(model), "--port", "0", *args)
    try:
        line = proc.stdout.readline()  # "serving ... on http://127.0.0.1:PORT/ ..." (https:// with TLS)
        found = re.search(r"(https?://\S+?)/? ", line)
        if found is None:
            proc.kill()
            raise AssertionError(f"the server did not start: {line!r} {proc.stderr.read()}")
        yield Server(proc, found.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


@contextlib.contextmanager
def in_process_server(app) -> Iterator[Server]:
    """The app under uvicorn in a thread on 127.0.0.1 (bounded: 30 s to start, 30 s to stop)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start within 30 s"
        yield Server(None, f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
