"""`toolkit serve`: the network behind HTTP (Starlette app, run by uvicorn).

Endpoints: `POST /v1/infer` (multipart `bg` + `fgbg` files, or JSON `{"bg": base64, "fgbg":
base64}`; answers mask and depth PNGs in JSON as base64, or `?format=panel` one PNG panel),
`GET /v1/model` (I/O spec, precision, source checkpoint hash, batching figures), `GET /healthz`
(the process answers), `GET /readyz` (the model is loaded and the batcher runs), `GET /` (a page
where a person uploads two images).

Why the request path looks like this: reading, decoding, resizing and PNG encoding run in
Starlette's thread pool and inference in the batcher's thread (`batcher.py`), so the event loop
only moves bytes and stays responsive under load. Bad input never reaches the model: a body
over `max_upload_bytes` is a 413 (checked from Content-Length and while reading), an image that
does not decode a 400, all as JSON `{"error": "..."}`; an exception inside inference is a 500
for that request only. Images of different sizes are reconciled (bg resized to the fgbg's size)
and the answer carries an `X-Toolkit-Warning` header.

The route handlers and the request parsing are in `routes.py` (it imports Starlette; this
module does not, so it imports on an install without the `serve` extra); what a request does
apart from HTTP (settings, decoding, rendering) is in `service.py`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UserError
from ..runtime import Runner
from .auth import Access, KeyCheck, resolve_access
from .options import LOG_LEVELS, ServeOptions
from .service import ServeSettings, require_serve

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ServeOptions", "ServeSettings", "configure_request_log", "create_app", "require_serve", "serve", "serve_model"]

log = logging.getLogger("toolkit.serve")


def serve_model(model: str | Path, options: ServeOptions | None = None, *, say: Callable[[str], None] = print,
                tell: Callable[[str], None] | None = None) -> None:
    """`toolkit serve`: open `model` as `options` say (`ServeOptions`, checked when made: the
    CLI's rules and lines), run its self-test (a failing model is CheckFailed before the port
    opens, as `stream` runs it before the first frame), then serve until SIGINT/SIGTERM.
    `say` hears the serving and stopped lines, `tell` the notes and the self-test's line
    (default: stderr)."""
    from ..render import imageio
    from ..runtime import open_runner
    from ..runtime.fixed import open_fixed_camera
    from ..verify.selftest import startup_check

    o = options or ServeOptions()
    tell = tell or (lambda line: print(line, file=sys.stderr, flush=True))
    require_serve()
    if o.tls is not None:
        check_tls(*o.tls)
    access = resolve_access(o.host, key_file=o.key_file, auth=o.auth, tls=o.tls is not None, port=o.port)
    for line in access.lines:  # where the key is (never the key), and warnings
        tell(line)
    configure_request_log(o.log_level)
    background = (o.bg.name, imageio.read_rgb(o.bg)) if o.bg is not None else None
    runner = open_fixed_camera(model, cache=o.bg_cache, provider=o.provider) if o.bg is not None else open_runner(model, provider=o.provider)
    with runner:
        for note in runner.notes:  # after activation: a provider that failed to load is noted then
            tell(f"note: {note}")
        checked = startup_check(runner) if o.self_test else ""  # never ready with a failing model (exit 1)
        if checked:
            tell(checked)
        passed = True if checked and not checked.startswith("note:") else None
        serve(runner, o.host, o.port, o.settings, say=say, background=background, self_test=passed, access=access, tls=o.tls)


def check_tls(cert: Path, key: Path) -> None:
    """The certificate and its private key load (one line when they do not), before the port opens."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise UserError(f"{cert}, {key}: cannot load the TLS certificate and key ({getattr(e, 'strerror', None) or e})") from None


def configure_request_log(level: str) -> None:
    """Send the `toolkit.serve` log (a line per request at INFO, failures at ERROR) to stderr."""
    if level not in LOG_LEVELS:
        raise UserError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


def create_app(runner: Runner, settings: ServeSettings = ServeSettings(),  # noqa: B008 - frozen dataclass
               background: tuple[str, np.ndarray] | None = None, self_test: bool | None = None, access: Access | None = None):
    """The ASGI app around an activated `runner`; its lifespan starts and stops the batcher.
    `background` (its name, the image): a server for one fixed camera (requests send `fgbg` only).
    `access`: the key every route but /healthz and /readyz needs (`toolkit.deploy.auth`; None: open).

    The handlers live in `routes.py`, which imports Starlette at its top: it is imported here,
    after `require_serve()`, so this module imports (and the CLI starts) without the extra.
    """
    require_serve()
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from .routes import RequestLog, ServeApp

    state = ServeApp(runner, settings, background, self_test)
    checks = Middleware(KeyCheck, access=access or Access(), refused=state.metrics.count_refused)
    app = Starlette(routes=state.routes(), lifespan=state.lifespan, middleware=[Middleware(RequestLog), checks])
    app.state.batcher = state.batcher
    return app


def serve(runner: Runner, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings = ServeSettings(),  # noqa: B008
          say=print, graceful_s: float = 30.0, background: tuple[str, np.ndarray] | None = None,
          self_test: bool | None = None, access: Access | None = None, tls: tuple[Path, Path] | None = None) -> None:
    """Bind `host:port`, then serve until SIGINT/SIGTERM; in-flight requests finish first.
    `access`: the key the routes need (None: open); `tls`: (certificate, private key) files.

    The socket is bound here, before uvicorn starts, so a port in use is one clear error line
    and `--port 0` can print the port the system picked.
    """
    require_serve()
    import signal
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts: the URL works once printed
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    bound = sock.getsockname()[1]
    app = create_app(runner, settings, background, self_test, access)
    certs = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls is not None else {}
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=graceful_s, lifespan="on", **certs)

    class DrainingServer(uvicorn.Server):
        """On SIGINT/SIGTERM the batcher stops waiting for more requests, so the ones in flight
        are answered now, not after their batch window (uvicorn waits for them to finish)."""

        def handle_exit(self, sig: int, frame: object) -> None:
            app.state.batcher.drain()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    server = DrainingServer(config)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    camera = f"; fixed background {background[0]}, requests send fgbg only" if background is not None else ""
    scheme = "https" if tls is not None else "http"
    say(f"serving {runner.name} on {scheme}://{shown}:{bound}/ (max batch {settings.max_batch}{camera}; Ctrl-C or SIGTERM stops it)")
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; these
    # handlers receive that re-raise so the command ends normally (exit 0) instead of by the signal.
    stopped: list[str] = []
    previous = {s: signal.signal(s, lambda signum, frame: stopped.append(signal.Signals(signum).name)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    stats = app.state.batcher.stats()
    why = f" ({stopped[0]})" if stopped else ""
    say(f"stopped{why}: {stats['requests']} request(s) in {stats['batches']} batch(es), mean batch {stats['mean_batch']}")
