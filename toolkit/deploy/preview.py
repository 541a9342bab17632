"""`stream --preview PORT`: what the camera sees and what the model says, live, in a browser.

A small HTTP server (the standard library's: the edge install needs nothing more) on 127.0.0.1
(or `--preview-host ADDR`: then, as for `serve`, every page needs the key, toolkit.deploy.auth)
serves the newest panel (frame | mask overlay | depth) while the stream runs:

* `/` a page that shows it and the stream's figures, refreshing itself;
* `/frame.jpg` the newest panel as one JPEG; `/stream.mjpg` the panels as MJPEG
  (`multipart/x-mixed-replace`), for viewers that play it (VLC, ffplay, browsers);
* `/metrics` the stream's figures in Prometheus' text format (frames, drops, reconnects,
  latency histogram, fps, self-test).

Panels are JPEG-encoded on request, at most once each. Every connection ends when the stream does.
"""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from .auth import Access, check_auth_options
from .metrics import CONTENT_TYPE, LATENCY_BUCKETS_S, Histogram

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>toolkit stream</title>
<style>body{font:14px sans-serif;margin:1em;background:#111;color:#eee}img{max-width:100%;display:block}</style></head>
<body><h1>toolkit stream: <span id="source"></span></h1><img id="panel" alt="frame | mask | depth">
<p id="status" data-status="waiting">waiting for the first frame</p>
<script>
const img = document.getElementById("panel"), status = document.getElementById("status");
async function tick() {
  try {
    const r = await fetch("/frame.jpg", {cache: "no-store"});
    if (r.status === 200) {
      const url = URL.createObjectURL(await r.blob());
      img.onload = () => { URL.revokeObjectURL(url);
        status.textContent = `live: panel ${img.naturalWidth}x${img.naturalHeight}, frame ${r.headers.get("X-Frame")}`;
        status.dataset.status = "live"; };
      img.src = url;
    }
  } catch (e) { status.textContent = "the stream has ended"; status.dataset.status = "ended"; return; }
  setTimeout(tick, 200);
}
document.getElementById("source").textContent = document.title;
tick();
</script></body></html>
"""


def check_preview_options(preview: int | None, host: str | None, key_file: Path | None, auth: bool | None) -> None:
    """`--preview-host`, `--key-file` and `--auth/--no-auth` are the preview's: refused without it."""
    given = [flag for flag, value in (("--preview-host", host), ("--key-file", key_file), ("--auth/--no-auth", auth)) if value is not None]
    if preview is None and given:
        raise UserError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --preview PORT (the live page)")
    check_auth_options(key_file, auth)


class Preview:
    """The newest panel and the stream's figures, served on `port` (0: any free one) of `host`
    (127.0.0.1 by default). `access`: the key its pages need (toolkit.deploy.auth; None: open),
    as for `serve`: required beyond loopback."""

    def __init__(self, port: int, host: str = "127.0.0.1", access: Access | None = None):
        if not 0 <= port <= 65535:
            raise UserError(f"--preview must be a port in 0..65535, got {port}")
        self.access = access or Access()
        self.refused = 0
        self._panel: np.ndarray | None = None
        self._jpeg: tuple[int, bytes] | None = None  # (frame number, its JPEG)
        self.frame = 0
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.figures: dict[str, float] = {}  # received, dropped, reconnects, fps, self_test_passed
        self.ended = threading.Event()
        self._cond = threading.Condition()
        server_class = _IPv6Server if ":" in host else http.server.ThreadingHTTPServer
        try:
            self.server = server_class((host.strip("[]"), port), _handler(self))
        except OSError as e:
            raise UserError(f"--preview: cannot listen on {host}:{port} ({e.strerror or e})") from None
        self.server.daemon_threads = True
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, name="toolkit-preview", daemon=True)
        self._thread.start()

    def publish(self, panel: np.ndarray, latency_s: float) -> None:
        """The stream wrote this panel (the encode thread)."""
        with self._cond:
            self._panel, self.frame = panel, self.frame + 1
            self._cond.notify_all()
        self.latency.observe(latency_s)

    def jpeg(self) -> tuple[int, bytes] | None:
        """(frame number, JPEG) of the newest panel, encoded once per frame."""
        from PIL import Image

        with self._cond:
            panel, frame, cached = self._panel, self.frame, self._jpeg
        if panel is None:
            return None
        if cached is None or cached[0] != frame:
            buf = io.BytesIO()
            Image.fromarray(panel).save(buf, format="JPEG", quality=85)
            cached = self._jpeg = (frame, buf.getvalue())
        return cached

    def wait_for_frame(self, after: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.frame > after or self.ended.is_set(), timeout=timeout) and not self.ended.is_set()

    def metrics(self) -> str:
        lines = ["# HELP toolkit_stream_frames_total Panels written.", "# TYPE toolkit_stream_frames_total counter",
                 f"toolkit_stream_frames_total {self.frame}"]
        for name, kind, text in (("received", "counter", "Frames the source delivered."),
                                 ("dropped", "counter", "Frames a newer one replaced before inference (live mode)."),
                                 ("reconnects", "counter", "Times the network stream was reopened.")):
            lines += [f"# HELP toolkit_stream_{name}_total {text}", f"# TYPE toolkit_stream_{name}_total {kind}",
                      f"toolkit_stream_{name}_total {int(self.figures.get(name, 0))}"]
        lines += ["# HELP toolkit_stream_latency_seconds From a frame leaving the source to its panel written.",
                  "# TYPE toolkit_stream_latency_seconds histogram", *self.latency.lines("toolkit_stream_latency_seconds"),
                  "# HELP toolkit_stream_fps Frames per second over the last frames.", "# TYPE toolkit_stream_fps gauge",
                  f"toolkit_stream_fps {self.figures.get('fps', 0.0):.3f}"]
        if "self_test_passed" in self.figures:
            lines += ["# HELP toolkit_self_test_passed 1 when the model passed its self-test at start.",
                      "# TYPE toolkit_self_test_passed gauge", f"toolkit_self_test_passed {int(self.figures['self_test_passed'])}"]
        lines += ["# HELP toolkit_auth_refused_total Requests turned away without the key (answered 401).",
                  "# TYPE toolkit_auth_refused_total counter", f"toolkit_auth_refused_total {self.refused}"]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.ended.set()
        with self._cond:
            self._cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


class _IPv6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(preview: Preview) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path, _, query = self.path.partition("?")
            if not self._let_in(path, query):
                return
            if path == "/":
                self._send(200, "text/html; charset=utf-8", PAGE.encode())
            elif path == "/frame.jpg":
                got = preview.jpeg()
                if got is None:
                    self._send(503, "text/plain; charset=utf-8", b"no frame yet\n")
                else:
                    self._send(200, "image/jpeg", got[1], {"X-Frame": str(got[0]), "Cache-Control": "no-store"})
            elif path == "/stream.mjpg":
                self._mjpeg()
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE, preview.metrics().encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _let_in(self, path: str, query: str) -> bool:
            """The key check (`Access.answer`): a browser's ?key= login, else 401 without the key."""
            reply = preview.access.answer(self.command, path, query, {k.lower(): v for k, v in self.headers.items()})
            if reply is None:
                return True
            if reply.refused:
                preview.refused += 1
            headers = dict(reply.headers)
            self._send(reply.status, headers.pop("content-type", "text/plain; charset=utf-8"), reply.body, headers)
            return False

        def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _mjpeg(self) -> None:
            """One part per new panel until the stream ends or the viewer leaves."""
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen = 0
            while not preview.ended.is_set():
                if not preview.wait_for_frame(seen, timeout=1.0):
                    continue
                got = preview.jpeg()
                if got is None:
                    continue
                seen = got[0]
                try:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(got[1])).encode()
                                     + b"\r\n\r\n" + got[1] + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return

        def log_message(self, *args: Any) -> None:
            return None

    return Handler


def wait_until(predicate: Any, timeout: float) -> bool:
    """Poll `predicate` every 20 ms for up to `timeout` seconds (tests and the CLI's first frame)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
