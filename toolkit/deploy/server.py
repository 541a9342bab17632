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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import imageio
from ..errors import MissingDependency, UserError
from ..runtime import Runner
from .batcher import Batcher, QueueFull

log = logging.getLogger("toolkit.serve")
PAGE = Path(__file__).with_name("page.html")
WARNING_HEADER = "X-Toolkit-Warning"
DRAIN_FACTOR = 4  # an oversized body up to this many times the limit is read before the 413 (see read_body)
MAX_PIXELS = 16_000_000  # per image: 4K video is 8.3 Mpx; a 10 MB PNG could otherwise inflate to gigabytes


def require_serve() -> None:
    """Starlette, uvicorn and python-multipart, or one line naming the extra."""
    import importlib.util

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401

        if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
            raise ImportError("python-multipart")  # Starlette parses uploads with it (module renamed in 0.0.13)
    except ImportError as e:
        raise MissingDependency("Starlette, uvicorn and python-multipart (the HTTP server)", "serve") from e


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    max_queue: int = 256


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def model_info(runner: Runner, settings: ServeSettings) -> dict[str, Any]:
    """What `GET /v1/model` answers (the batcher's live figures are added per request)."""
    from ..fsutil import sha256_file

    assert runner.spec is not None
    meta = dict(runner.metadata)
    source = meta.get("toolkit.checkpoint_sha256") or (sha256_file(runner.path) if runner.path.suffix == ".pt" else None)
    return {
        "model": runner.path.name,
        "backend": runner.backend,
        "precision": runner.precision,
        "input_size": list(runner.spec.size),
        "iospec": runner.spec.to_dict(),
        "source_checkpoint_sha256": source,
        "toolkit_version": meta.get("toolkit.version"),
        "metadata": meta,
        "max_batch": settings.max_batch,
        "max_upload_bytes": settings.max_upload_bytes,
    }


def decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """An uploaded image as float32 HxWx3; 413 over `max_pixels`, 400 when it is not an image."""
    from PIL import Image

    w = h = 0
    with contextlib.suppress(Exception):  # a header Pillow cannot parse is reported by read_rgb below
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    if w * h > max_pixels:
        raise HttpError(413, f"{name}: {w}x{h} pixels is over the server's {max_pixels} pixel limit")
    try:
        return imageio.read_rgb(data, name=name)
    except UserError as e:
        raise HttpError(400, str(e)) from None


def prepare_pair(bg_bytes: bytes, fgbg_bytes: bytes, size: tuple[int, int], max_pixels: int):
    """Decode both images, reconcile their sizes, and make the model-size inputs."""
    bg = decode_upload(bg_bytes, "bg", max_pixels)
    fgbg = decode_upload(fgbg_bytes, "fgbg", max_pixels)
    warnings = []
    if bg.shape != fgbg.shape:
        warnings.append(f"bg is {bg.shape[1]}x{bg.shape[0]} and fgbg {fgbg.shape[1]}x{fgbg.shape[0]}: bg resized to the fgbg's size")
        bg = imageio.resize(bg, fgbg.shape[:2])
    return bg, fgbg, imageio.resize(bg, size), imageio.resize(fgbg, size), warnings


def render(bg: np.ndarray, fgbg: np.ndarray, mask: np.ndarray, depth: np.ndarray, fmt: str, warnings: list[str]) -> tuple[bytes, str]:
    """The response body and media type: JSON with base64 PNGs, or one PNG panel."""
    h, w = fgbg.shape[:2]
    bad = int((~np.isfinite(mask)).sum() + (~np.isfinite(depth)).sum())
    if bad:
        warnings.append(f"the model produced {bad} NaN/inf values (shown as 0)")
    mask = np.clip(imageio.resize(np.nan_to_num(mask), (h, w)), 0.0, 1.0)
    depth = np.clip(imageio.resize(np.nan_to_num(depth), (h, w)), 0.0, 1.0)
    if fmt == "panel":
        panel = imageio.make_panel([bg, fgbg, mask, imageio.colorize_depth(depth)], ["bg", "fgbg", "mask", "depth"])
        return imageio.encode_png(panel), "image/png"
    body = {
        "width": w,
        "height": h,
        "mask_png": base64.b64encode(imageio.encode_png(mask)).decode("ascii"),
        "depth_png": base64.b64encode(imageio.encode_png(depth)).decode("ascii"),
        "warnings": warnings,
    }
    return json.dumps(body).encode("utf-8"), "application/json"


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise HttpError(400, f"JSON field {name!r} must be a base64 string")
    if value.startswith("data:") and "," in value:  # a data: URL as browsers make them
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, f"JSON field {name!r} is not valid base64") from None


def create_app(runner: Runner, settings: ServeSettings = ServeSettings()):  # noqa: B008 - frozen dataclass
    """The ASGI app around an activated `runner`; its lifespan starts and stops the batcher."""
    require_serve()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    assert runner.spec is not None
    size = runner.spec.size
    batcher = Batcher(runner, settings.max_batch, settings.max_wait_ms / 1000.0, settings.max_queue)
    info = model_info(runner, settings)
    limit = settings.max_upload_bytes

    def error(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    async def read_body(request: Request) -> bytes:
        """The body, up to `limit` bytes. A larger one is a 413; up to DRAIN_FACTOR x the limit it
        is read (and dropped) first, because a client that sends the whole body before reading
        the answer (urllib, most scripts) gets a broken pipe instead of the 413 otherwise."""
        header = request.headers.get("content-length", "")
        declared = int(header) if header.isdigit() else None
        too_large = f"the upload is {f'{declared} bytes, ' if declared else ''}over the server's {limit} byte limit"
        if declared is not None and declared > DRAIN_FACTOR * limit:
            raise HttpError(413, too_large)
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total <= limit:
                chunks.append(chunk)
            elif total > DRAIN_FACTOR * limit:
                break
        if total > limit:
            raise HttpError(413, too_large)
        return b"".join(chunks)

    async def read_pair(request: Request, body: bytes) -> tuple[bytes, bytes]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise HttpError(400, "the body is not valid JSON") from None
            if not isinstance(doc, dict) or not {"bg", "fgbg"} <= doc.keys():
                raise HttpError(400, "the JSON body needs the fields 'bg' and 'fgbg' (base64 images)")
            return _b64(doc["bg"], "bg"), _b64(doc["fgbg"], "fgbg")
        if ctype != "multipart/form-data":
            raise HttpError(415, f"send multipart/form-data with files 'bg' and 'fgbg', or application/json (got {ctype or 'no content type'})")

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=2, max_fields=8, max_part_size=limit)
        except Exception as e:  # noqa: BLE001 - Starlette/python-multipart parse errors
            raise HttpError(400, f"the multipart body does not parse ({e})") from None
        try:
            parts = []
            for name in ("bg", "fgbg"):
                part = form.get(name)
                if part is None:
                    raise HttpError(400, f"missing the form field {name!r} (send files 'bg' and 'fgbg')")
                parts.append(await part.read() if hasattr(part, "read") else str(part).encode())
            return parts[0], parts[1]
        finally:
            await form.close()

    async def infer(request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        try:
            if fmt not in ("json", "panel"):
                raise HttpError(400, f"format must be 'json' or 'panel', got {fmt!r}")
            body = await read_body(request)
            bg_bytes, fgbg_bytes = await read_pair(request, body)
            bg, fgbg, bg_in, fgbg_in, warnings = await run_in_threadpool(prepare_pair, bg_bytes, fgbg_bytes, size, settings.max_pixels)
            try:
                future = batcher.submit(bg_in, fgbg_in)
            except QueueFull as e:
                raise HttpError(503, f"the server is busy ({e}); retry later") from None
            try:
                mask, depth = await asyncio.wrap_future(future)
            except Exception as e:  # noqa: BLE001 - this request's inference failed; the server goes on
                first = " ".join(str(e).split())[:200] or type(e).__name__
                raise HttpError(500, f"inference failed: {first}") from None
            content, media = await run_in_threadpool(render, bg, fgbg, mask, depth, fmt, warnings)
        except HttpError as e:
            return error(e.status, str(e))
        headers = {WARNING_HEADER: "; ".join(warnings)} if warnings else {}
        return Response(content, media_type=media, headers=headers)

    async def model(request: Request) -> Response:
        return JSONResponse(info | {"batching": batcher.stats()})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if runner.active and batcher.running:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)  # in-flight jobs finish first

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/v1/infer", infer, methods=["POST"]),
        Route("/v1/model", model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.batcher = batcher
    return app


def serve(runner: Runner, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings = ServeSettings(),  # noqa: B008
          say=print, graceful_s: float = 30.0) -> None:
    """Bind `host:port`, then serve until SIGINT/SIGTERM; in-flight requests finish first.

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
    app = create_app(runner, settings)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=graceful_s, lifespan="on")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    say(f"serving {runner.name} on http://{shown}:{bound}/ (max batch {settings.max_batch}; Ctrl-C or SIGTERM stops it)")
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
