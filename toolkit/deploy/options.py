"""What `toolkit stream` and `toolkit serve` were asked for, checked in one place:
`StreamOptions` and `ServeOptions` (frozen, checked when made, like `ExportOptions`).

The rules live here, not in the command line, so a Python caller of `stream(...)` or
`serve_model(...)` gets the same one-line errors as the CLI (`--bg` with `--bg-frames`,
`--no-bg-cache` on a server without `--bg`, a batch of 0, a port out of range, ...), before a
model is opened or a port bound. Checks that need the file system (an output that cannot be
written) run when the command starts, as they depend on the moment, not on the options.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError, positive
from .adapt import Adaptation
from .auth import check_auth_options
from .compose import check_layout
from .live import LiveOptions
from .service import ServeSettings
from .temporal import Smoother

DEFAULT_BG_FRAMES = 30  # frames whose per-pixel median is the background when no --bg is given
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _as_path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def parse_out_size(text: str) -> tuple[int, int]:
    """'640x360' (width x height, as video sizes are written) to (h, w); one line when it is not."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--out-size must be WIDTHxHEIGHT (e.g. 640x360), got {text!r}") from None
    return h, w


@dataclass(frozen=True)
class StreamOptions:
    """`bg`: an image of the empty scene, or else the median of the first `bg_frames` frames
    (default 30); `masks_dir`: the raw masks too; `batch`: the largest batch of frames per
    inference (default 4, 1 for live sources); `fps`: the output's frame rate (default the
    source's); `max_frames`: stop after this many; `bg_cache` False: the whole network on every frame even beside the halves;
    `smooth`: the previous frame's weight in a moving average; `adapt`: the background follows
    the scene (`Adaptation`); `live`: how the source is read (`LiveOptions`); `self_test`: the
    model proves itself before the first frame; `pipelined`: decode, infer and encode overlap.
    What is written: `layout` "panel" (frame | overlay | depth) or "overlay" (the frame with the
    person tinted: `toolkit.deploy.compose`); `out_size` (h, w): the camera picture's size in
    it (default the camera's); `video` False: no video at all (masks, events, the summary, the
    preview, which still shows the layout); `events`: a JSON line per frame to this file or "-" (`toolkit.deploy.events`);
    `preset`: the H.264 encoder's speed (default ultrafast with zero latency for live sources,
    veryfast for files, superfast for files of pictures of 2 MP and more); `match_infer`: the
    model's copy of each frame and of the background made as `toolkit infer` makes it (the
    float resize of the RGB picture: masks equal to infer's on the same frames, at 12 ms a 720p
    frame instead of 3; `decoded.model_input`)."""

    bg: Path | None = None
    bg_frames: int | None = None  # None: DEFAULT_BG_FRAMES (refused beside `bg`)
    masks_dir: Path | None = None
    batch: int | None = None  # None: 4 for files and folders, 1 for live sources (`batch_for`)
    provider: str = "cpu"
    fps: float | None = None
    max_frames: int | None = None
    bg_cache: bool = True
    smooth: float = 0.0
    adapt: Adaptation | None = None
    live: LiveOptions = field(default_factory=LiveOptions)
    self_test: bool = True
    pipelined: bool = True
    layout: str = "panel"
    out_size: tuple[int, int] | None = None
    video: bool = True
    events: str | Path | None = None
    preset: str | None = None
    match_infer: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "bg", _as_path(self.bg))
        object.__setattr__(self, "masks_dir", _as_path(self.masks_dir))
        self._check_outputs()
        if self.bg is not None and self.bg_frames is not None:
            raise UserError("give --bg IMAGE or --bg-frames N, not both")
        positive(self.batch, "--batch")
        positive(self.bg_frames, "--bg-frames")
        positive(self.max_frames, "--max-frames")
        if self.fps is not None and not self.fps > 0:
            raise UserError(f"--fps must be positive, got {self.fps}")
        Smoother(self.smooth)  # its range, one line
        if self.adapt is not None and not isinstance(self.adapt, Adaptation):
            raise UserError("stream: adapt must be a toolkit.deploy.adapt.Adaptation (or None)")
        if not isinstance(self.live, LiveOptions):
            raise UserError("stream: live must be a toolkit.deploy.live.LiveOptions")

    def _check_outputs(self) -> None:
        check_layout(self.layout)
        if self.out_size is not None:
            try:
                size = tuple(operator.index(v) for v in self.out_size)
            except TypeError:
                size = ()
            if len(size) != 2 or not all(2 <= v <= 8192 for v in size):
                raise UserError(f"--out-size must be two whole numbers in 2..8192 (WIDTHxHEIGHT; out_size=(height, width) "
                                f"from Python), got {self.out_size}")
            object.__setattr__(self, "out_size", size)
        if self.preset is not None and self.preset not in X264_PRESETS:
            raise UserError(f"--preset must be one of {', '.join(X264_PRESETS)} (H.264's), got {self.preset!r}")
        if not self.video and self.preset is not None:
            raise UserError("--preset sets the video's encoder, and --no-video writes none: drop one of them")

    def batch_for(self, live: bool) -> int:
        """The largest batch: as given, else 1 for a live source (a frame never waits for others:
        at 1280x720 on 2 cores batch 4 tripled the median latency, benchmarks/README.md) and 4
        for a file (throughput)."""
        return self.batch if self.batch is not None else (1 if live else 4)

    @property
    def background_frames(self) -> int:
        return DEFAULT_BG_FRAMES if self.bg_frames is None else self.bg_frames


@dataclass(frozen=True)
class ServeOptions:
    """`host`/`port`: where to listen (port 0: any free one); `max_batch`/`max_wait_ms`: the
    dynamic batcher; `max_upload_mb`: the largest request body; `bg`: a server for one fixed
    camera (requests send `fgbg` only), `bg_cache` False: the whole network even beside the
    halves; `log_level`: a line per request (debug, info) or failures only (warning, error);
    `self_test`: the model proves itself before the port opens; `key_file`/`auth`: who may use
    it (toolkit.deploy.auth: a key beyond loopback); `tls_cert`/`tls_key`: HTTPS."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_upload_mb: float = 10.0
    provider: str = "cpu"
    bg: Path | None = None
    bg_cache: bool = True
    log_level: str = "info"
    self_test: bool = True
    key_file: Path | None = None
    auth: bool | None = None  # None: a key beyond loopback; True: on loopback too; False: --no-auth
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        for name in ("bg", "key_file", "tls_cert", "tls_key"):
            object.__setattr__(self, name, _as_path(getattr(self, name)))
        check_auth_options(self.key_file, self.auth, self.tls_cert, self.tls_key)
        positive(self.max_batch, "--max-batch")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port must be in 0..65535, got {self.port}")
        if not self.max_upload_mb > 0 or not self.max_wait_ms >= 0:
            raise UserError("--max-upload-mb must be positive and --max-wait-ms not negative")
        if not self.bg_cache and self.bg is None:
            raise UserError("--no-bg-cache only applies with --bg IMAGE (a server for one fixed camera)")
        if self.log_level not in LOG_LEVELS:
            raise UserError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")

    @property
    def tls(self) -> tuple[Path, Path] | None:
        return (self.tls_cert, self.tls_key) if self.tls_cert is not None and self.tls_key is not None else None

    @property
    def settings(self) -> ServeSettings:
        """The batcher's and the request reader's limits."""
        return ServeSettings(max_batch=self.max_batch, max_wait_ms=self.max_wait_ms,
                             max_upload_bytes=int(self.max_upload_mb * 1024 * 1024))
