"""The HTTP side of `toolkit serve`: the route handlers and the request parsing (Starlette).

Why a module of its own: it imports Starlette at its top, which the edge install may lack;
`server.create_app` imports it only after `require_serve()` has named the missing extra, so
`toolkit.deploy.server` itself imports without Starlette. The image work (decoding, resizing,
rendering) is in `service.py`; what is here moves bytes and maps failures to statuses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..render import imageio
from ..runtime import Runner
from .batcher import Batcher, QueueFull
from .metrics import CONTENT_TYPE, ServeMetrics
from .service import DRAIN_FACTOR, PAGE, WARNING_HEADER, HttpError, ServeSettings, model_info, prepare_frame, prepare_pair, render

log = logging.getLogger("toolkit.serve")


class ServeApp:
    """What the routes share: the activated runner, the settings, the batcher and the model info.

    The handlers are methods (bound, they are Starlette endpoints like plain functions); the
    batcher is started and stopped by `lifespan`, so it runs exactly while the app serves.
    """

    def __init__(self, runner: Runner, settings: ServeSettings, background: tuple[str, np.ndarray] | None = None,
                 self_test: bool | None = None):
        """`background`: (its name, the image HxWx3 in [0, 1]) for a server of one fixed camera:
        set on the (activated) runner once; requests then send only `fgbg`. `self_test`: whether
        the model passed its self-test at start (None: it holds no golden pairs), for /metrics."""
        self.runner = runner
        self.settings = settings
        self.size = runner.spec.size
        self.background = background[1] if background is not None else None
        if self.background is not None:
            runner.set_background(imageio.to_nchw([imageio.resize(self.background, self.size)]))
        self.metrics = ServeMetrics({"model": runner.path.name, "backend": runner.backend, "precision": runner.precision})
        self.metrics.self_test = self_test
        self.batcher = Batcher(runner, settings.max_batch, settings.max_wait_ms / 1000.0, settings.max_queue,
                               on_batch=self.metrics.batches.observe)
        self.info = model_info(runner, settings, background[0] if background is not None else None)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/v1/infer", self.infer, methods=["POST"]),
            Route("/v1/model", self.model, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any):
        self.batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(self.batcher.close)  # in-flight jobs finish first

    async def infer(self, request: Request) -> Response:
        t0 = time.perf_counter()
        response = await self._infer(request)
        self.metrics.request(response.status_code, time.perf_counter() - t0)
        return response

    async def _infer(self, request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        try:
            if fmt not in ("json", "panel"):
                raise HttpError(400, f"format must be 'json' or 'panel', got {fmt!r}")
            body = await read_body(request, self.settings.max_upload_bytes)
            fixed = self.background is not None
            bg_bytes, fgbg_bytes = await read_pair(request, body, self.settings.max_upload_bytes, need_bg=not fixed)
            if fixed:
                bg, fgbg, bg_in, fgbg_in, warnings = await run_in_threadpool(
                    prepare_frame, fgbg_bytes, self.background, self.size, self.settings.max_pixels, bg_bytes is not None)
            else:
                assert bg_bytes is not None  # read_pair requires it
                bg, fgbg, bg_in, fgbg_in, warnings = await run_in_threadpool(
                    prepare_pair, bg_bytes, fgbg_bytes, self.size, self.settings.max_pixels)
            mask, depth = await self.run_model(bg_in, fgbg_in, request)
            content, media = await run_in_threadpool(render, bg, fgbg, mask, depth, fmt, warnings,
                                                      self.runner.spec.depth_convention)
        except HttpError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        headers = {WARNING_HEADER: "; ".join(warnings)} if warnings else {}
        return Response(content, media_type=media, headers=headers)

    async def run_model(self, bg_in: Any, fgbg_in: Any, request: Request) -> tuple[Any, Any]:
        """One request's (mask, depth) from the batcher: a full queue is a 503, a failure inside
        inference a 500 for this request only (the batcher re-runs its neighbours alone)."""
        try:
            future = self.batcher.submit(bg_in, fgbg_in)
        except QueueFull as e:
            raise HttpError(503, f"the server is busy ({e}); retry later") from None
        request.state.batch = future  # the request log reads the batch it ran in
        try:
            result = await asyncio.wrap_future(future)
        except Exception as e:  # noqa: BLE001 - this request's inference failed; the server goes on
            first = " ".join(str(e).split())[:200] or type(e).__name__
            raise HttpError(500, f"inference failed: {first}") from None
        return result

    async def model(self, request: Request) -> Response:
        return JSONResponse(self.info | {"batching": self.batcher.stats()})

    async def prometheus(self, request: Request) -> Response:
        stats = self.batcher.stats()
        body = self.metrics.render(int(stats["failures"]), int(stats["queued"]))
        return Response(body, media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.runner.active and self.batcher.running:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))


class RequestLog:
    """ASGI middleware: one line per request on the `toolkit.serve` logger at INFO: method,
    path, status, milliseconds, and for inference the size of the batch the request ran in."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]  # what an app that raises answers

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            future = scope.get("state", {}).get("batch")
            batch = getattr(future, "batch_size", None)
            ms = (time.perf_counter() - t0) * 1000
            log.info("%s %s %d %.1f ms%s", scope["method"], scope["path"], status[0], ms, f" batch {batch}" if batch else "")


async def read_body(request: Request, limit: int) -> bytes:
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


async def read_pair(request: Request, body: bytes, limit: int, *, need_bg: bool = True) -> tuple[bytes | None, bytes]:
    """The `bg` and `fgbg` image bytes of a JSON (base64 fields) or multipart body; 400 or 415
    otherwise. `need_bg` False (a fixed camera): only `fgbg` is required, `bg` is None when absent."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    wanted = ("bg", "fgbg") if need_bg else ("fgbg",)
    fields = " and ".join(f"'{n}'" for n in wanted)
    if ctype == "application/json":
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "the body is not valid JSON") from None
        if not isinstance(doc, dict) or not set(wanted) <= doc.keys():
            raise HttpError(400, f"the JSON body needs the field{'s' if need_bg else ''} {fields} (base64 images)")
        return (_b64(doc["bg"], "bg") if "bg" in doc else None), _b64(doc["fgbg"], "fgbg")
    if ctype != "multipart/form-data":
        raise HttpError(415, f"send multipart/form-data with {fields}, or application/json (got {ctype or 'no content type'})")
    return await _read_form(request, body, limit, wanted)


async def _read_form(request: Request, body: bytes, limit: int, wanted: tuple[str, ...]) -> tuple[bytes | None, bytes]:
    """The two files of a multipart body. The body is already read (and size-checked) by
    `read_body`, so Starlette's parser is handed it again through a replaying `receive`."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=2, max_fields=8, max_part_size=limit)
    except Exception as e:  # noqa: BLE001 - Starlette/python-multipart parse errors
        raise HttpError(400, f"the multipart body does not parse ({e})") from None
    try:
        parts: dict[str, bytes] = {}
        for name in ("bg", "fgbg"):
            part = form.get(name)
            if part is None:
                if name in wanted:
                    raise HttpError(400, f"missing the form field {name!r} (send {' and '.join(repr(n) for n in wanted)})")
                continue
            parts[name] = await part.read() if hasattr(part, "read") else str(part).encode()
        return parts.get("bg"), parts["fgbg"]
    finally:
        await form.close()


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise HttpError(400, f"JSON field {name!r} must be a base64 string")
    if value.startswith("data:") and "," in value:  # a data: URL as browsers make them
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, f"JSON field {name!r} is not valid base64") from None
