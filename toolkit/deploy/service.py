"""What one `toolkit serve` request does, without Starlette: the settings, the errors a request
can end in, decoding and reconciling the uploaded pair, and rendering the answer.

Kept apart from the app (`server.py`) and its handlers (`routes.py`, which imports Starlette) so
both can use it and neither imports the other back.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MissingDependency, UserError
from ..core.spec import ORIGINAL_DEPTH_CONVENTION
from ..render import imageio
from ..runtime import Runner

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
        raise MissingDependency("Starlette, uvicorn and python-multipart (the HTTP server)", "serve", plural=True) from e


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


def model_info(runner: Runner, settings: ServeSettings, background: str | None = None) -> dict[str, Any]:
    """What `GET /v1/model` answers (the batcher's live figures are added per request).
    `background`: the fixed camera's background image, when the server has one (`--bg`)."""
    from ..core.fsutil import sha256_file
    from ..runtime.fixed import HalvesRunner

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
        "fixed_camera": None if background is None else {
            "background": background,
            "mode": "halves" if isinstance(runner, HalvesRunner) else "whole network",
        },
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


def prepare_frame(fgbg_bytes: bytes, background: np.ndarray, size: tuple[int, int], max_pixels: int,
                  uploaded_bg: bool) -> tuple[np.ndarray, np.ndarray, None, np.ndarray, list[str]]:
    """A fixed camera's request: the frame decoded and made the model's size; the server's
    background (at the frame's size, for the panel) stands in for the pair's `bg`."""
    fgbg = decode_upload(fgbg_bytes, "fgbg", max_pixels)
    warnings = ["this server has a fixed background (--bg): the uploaded bg is not used"] if uploaded_bg else []
    if background.shape != fgbg.shape:
        warnings.append(f"the fixed background is {background.shape[1]}x{background.shape[0]} and fgbg "
                        f"{fgbg.shape[1]}x{fgbg.shape[0]}: is this frame from the camera the server was started for?")
    return imageio.resize(background, fgbg.shape[:2]), fgbg, None, imageio.resize(fgbg, size), warnings


def render(bg: np.ndarray, fgbg: np.ndarray, mask: np.ndarray, depth: np.ndarray, fmt: str, warnings: list[str],
           depth_convention: str = ORIGINAL_DEPTH_CONVENTION) -> tuple[bytes, str]:
    """The response body and media type: JSON with base64 PNGs, or one PNG panel."""
    h, w = fgbg.shape[:2]
    bad = int((~np.isfinite(mask)).sum() + (~np.isfinite(depth)).sum())
    if bad:
        warnings.append(f"the model produced {bad} NaN/inf values (shown as 0)")
    mask = np.clip(imageio.resize(np.nan_to_num(mask), (h, w)), 0.0, 1.0)
    depth = np.clip(imageio.resize(np.nan_to_num(depth), (h, w)), 0.0, 1.0)
    if fmt == "panel":
        panel = imageio.make_panel([bg, fgbg, mask, imageio.colorize_depth(depth)], ["bg", "fgbg", "mask", "depth"],
                                   legends=[None, None, None, imageio.depth_legend(depth_convention)])
        return imageio.encode_png(panel), "image/png"
    body = {
        "width": w,
        "height": h,
        "mask_png": base64.b64encode(imageio.encode_png(mask)).decode("ascii"),
        "depth_png": base64.b64encode(imageio.encode_png(depth)).decode("ascii"),
        "warnings": warnings,
    }
    return json.dumps(body).encode("utf-8"), "application/json"
