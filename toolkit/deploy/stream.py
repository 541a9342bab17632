"""`toolkit stream`: a fixed camera's frames (or a video, or a folder) through any runner.

Each frame is the `fgbg`; the background is an image of the empty scene or the per-pixel
median of the first frames (`background.py`). The output is a video (or a folder of PNGs)
showing frame | mask overlay | depth colour map at the frame's size, and optionally the raw
masks as grey PNGs. Decoding, inference and encoding overlap (`pipeline.py`).

Output safety: the video is written under a temporary name and renamed when it is closed, so
`--out` is either absent or a complete, playable file. Ctrl-C (SIGINT) stops decoding, finishes
the frames in flight, and closes and renames the video as after a complete run (the partial
video plays); a second Ctrl-C aborts at once and leaves no file. A bad input (a frame of another
size, ...) is an error and leaves no video.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..core.fsutil import atomic_path, check_output_dir, check_output_file, ensure_dir
from ..core.spec import ORIGINAL_DEPTH_CONVENTION
from ..render import imageio
from ..runtime import Runner
from ..runtime.fixed import HalvesRunner, open_fixed_camera
from .adapt import BackgroundTracker
from .background import load_background, median_background
from .live import open_live
from .options import StreamOptions
from .pipeline import run_pipeline
from .preview import Preview
from .temporal import FlickerMeter, Smoother
from .video import FrameSource, PngFolderWriter, VideoWriter, video_format

OVERLAY_RGB = np.array([40, 220, 90], np.float32)  # the mask's tint: green reads on skin and shelves alike
OVERLAY_ALPHA = 0.6
PANEL_LABELS = ("frame", "mask", "depth")
FrameWriter = PngFolderWriter | VideoWriter


@dataclass
class StreamReport:
    frames: int = 0
    seconds: float = 0.0
    source: str = ""
    out: Path | None = None
    codec: str = ""
    background: str = ""
    interrupted: bool = False
    masks: int = 0
    fixed_camera: str = ""  # how the background was run: "halves" (features once) or "whole network"
    self_test: str = ""  # the model's self-test at start (toolkit.verify.selftest)
    flicker: float | None = None  # mean mask change on still pixels between frames (toolkit.deploy.temporal)
    background_events: list[str] = field(default_factory=list)  # relearnt backgrounds (toolkit.deploy.adapt)
    received: int = 0  # frames the source delivered (live: the dropped ones included)
    dropped: int = 0  # live mode: frames a newer one replaced before inference took them
    reconnects: int = 0
    latency_ms_p50: float | None = None  # from a frame leaving the source to its panel written
    latency_ms_p99: float | None = None
    smooth: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """What `stream --json` writes."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        return d | {"fps": round(self.fps, 3)}


class FpsMeter:
    """Frames per second over the last `window` frames: what the stream does *now*."""

    def __init__(self, window: int = 30):
        self.times: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self.times.append(time.perf_counter())
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


def compose_panel(frame: np.ndarray, mask: np.ndarray, depth: np.ndarray,
                  depth_convention: str = ORIGINAL_DEPTH_CONVENTION) -> tuple[np.ndarray, np.ndarray]:
    """frame | mask overlay | depth colour map (under the model's near/far bar) at the frame's size, and the
    mask at that size. The labels and the bar sit above the tiles, so the frame ends the picture."""
    h, w = frame.shape[:2]
    mask = np.clip(imageio.resize(np.nan_to_num(mask), (h, w)), 0.0, 1.0)
    depth = np.clip(imageio.resize(np.nan_to_num(depth), (h, w)), 0.0, 1.0)
    a = (OVERLAY_ALPHA * mask)[:, :, None]
    overlay = (frame.astype(np.float32) * (1.0 - a) + OVERLAY_RGB * a + 0.5).astype(np.uint8)
    panel = imageio.make_panel([frame, overlay, imageio.colorize_depth(depth)], list(PANEL_LABELS),
                               legends=[None, None, imageio.depth_legend(depth_convention)])
    return panel, mask


@contextlib.contextmanager
def sigint_sets(stop: threading.Event) -> Iterator[None]:
    """While inside: the first SIGINT sets `stop`; a second one raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stream(
    model: str | Path | Runner,
    source: str | FrameSource,
    out: str | Path,
    options: StreamOptions | None = None,
    *,
    preview: Preview | None = None,
    stop: threading.Event | None = None,
    on_start: Callable[[StreamReport, int | None], None] | None = None,
    on_frame: Callable[[int, float], None] | None = None,
) -> StreamReport:
    """Run `model` on every frame of `source` and write the annotated output to `out`, as
    `options` say (`StreamOptions`, checked when made: the CLI's rules and lines).

    `on_start(report, expected_frames)` is called once the background is known; `on_frame(done,
    fps)` after each frame is written. `stop` ends the stream early (SIGINT sets it when this
    runs in the main thread). `preview`: a `toolkit.deploy.preview.Preview` that serves each
    panel as it is written. The model's self-test runs before the first frame (as `serve_model`
    runs it before the port opens); a failing model is CheckFailed.
    """
    o = options or StreamOptions()
    out = Path(out)
    fmt = _check_outputs(out, o.masks_dir)
    smoother = Smoother(o.smooth)
    stop = stop or threading.Event()
    runner = model if isinstance(model, Runner) else open_fixed_camera(model, cache=o.bg_cache, provider=o.provider)
    report = StreamReport(out=out, smooth=o.smooth)
    src = open_live(source, o.fps, o.live)
    with src, runner, sigint_sets(stop):
        report.notes = list(runner.notes)  # after activation: a provider that failed to load is noted then
        if o.self_test:  # the model proves itself before the first frame (CheckFailed: exit 1)
            from ..verify.selftest import startup_check

            report.self_test = startup_check(runner)
        report.source = f"{src.label} ({src.kind}, {src.fps:g} fps)"
        frames, background, expected = _open_frames(src, o, report)
        if on_start is not None:
            on_start(report, expected)
        annotator = _Annotator(runner, background, report, o, src, on_frame=on_frame, smoother=smoother, preview=preview)
        if preview is not None and report.self_test:
            preview.figures["self_test_passed"] = 1.0 if report.self_test.startswith("self-test passed") else 0.0
        start = time.perf_counter()
        writer = _write_output(out, fmt, src, report, lambda w: annotator.run(w, frames, o.batch, stop, o.pipelined))
        report.seconds = time.perf_counter() - start
        report.flicker = annotator.flicker.value
        report.codec = writer.codec
        report.interrupted = stop.is_set()
        report.notes += src.notes
        report.received = getattr(src, "received", report.frames)
        report.dropped, report.reconnects = getattr(src, "dropped", 0), getattr(src, "reconnects", 0)
        if annotator.latencies:
            report.latency_ms_p50, report.latency_ms_p99 = (float(np.percentile(annotator.latencies, q)) for q in (50, 99))
    if report.frames == 0:
        raise UserError(f"{src.label}: no frames")
    return report


def _check_outputs(out: Path, masks_dir: Path | None) -> tuple[str, tuple[str, ...]] | None:
    """Refuse unwritable outputs before any work (the model is not even opened); return `out`'s
    video format, None when it is a folder of PNGs."""
    fmt = video_format(out)  # checks the suffix before any work
    if fmt is None:  # a path that can never be written is refused now, not after the model loaded
        check_output_dir(out)
    else:
        check_output_file(out)
    if masks_dir is not None:
        check_output_dir(masks_dir)
    return fmt


def _open_frames(src: FrameSource, options: StreamOptions,
                 report: StreamReport) -> tuple[Iterator[np.ndarray], np.ndarray, int | None]:
    """The frames to run (at most `max_frames`), the background, and how many frames to expect
    (None when neither the source nor `max_frames` says)."""
    frames: Iterator[np.ndarray] = iter(src)
    max_frames = options.max_frames
    if max_frames is not None:
        frames = itertools.islice(frames, max_frames)
    background, frames = _background(frames, src, options.bg, options.background_frames, report)
    expected = min(x for x in (src.expected, max_frames) if x) if (src.expected or max_frames) else None
    return frames, background, expected


ASPECT_TOLERANCE = 0.05


def aspect_note(frame: tuple[int, int], model: tuple[int, int]) -> str | None:
    """One line when frames of `frame` (H, W) are squashed by more than 5 % into the model's
    `model` (H, W), naming an export size of the camera's shape (same height, multiples of 4)."""
    (fh, fw), (mh, mw) = frame, model
    ratio = (fw / fh) / (mw / mh)
    if abs(ratio - 1) <= ASPECT_TOLERANCE:
        return None
    width = max(4, round(mh * fw / fh / 4) * 4)
    return (f"frames are {fw} wide x {fh} high and the model takes {mw} x {mh}: each frame is squashed by {abs(ratio - 1):.0%}; "
            f"export at the camera's shape with `toolkit export CKPT --image-size {mh}x{width}` (H x W)")


class _Annotator:
    """The per-frame work of one stream: resize for the model (decode thread), infer a batch
    against the fixed background (infer thread), compose the panel and write it (encode thread)."""

    def __init__(self, runner: Runner, background: np.ndarray, report: StreamReport, options: StreamOptions,
                 source: FrameSource | None = None, *, on_frame: Callable[[int, float], None] | None = None,
                 smoother: Smoother | None = None, preview: Preview | None = None):
        adapt = options.adapt
        self.runner = runner
        self.size = runner.spec.size
        start = imageio.resize(background.astype(np.float32) / 255.0, self.size)
        runner.set_background(imageio.to_nchw([start]))
        self.tracker = BackgroundTracker(start, adapt) if adapt is not None else None
        self._next_background: np.ndarray | None = None  # handed from the encode thread to the infer thread
        self._lock = threading.Lock()
        report.fixed_camera = "halves" if isinstance(runner, HalvesRunner) else "whole network"
        note = aspect_note(background.shape[:2], self.size)
        if note:
            report.notes.append(note)
        self.report = report
        self.masks = ensure_dir(options.masks_dir) if options.masks_dir is not None else None
        self.on_frame = on_frame
        self.meter = FpsMeter()
        self.smoother = smoother or Smoother(0.0)
        self.latencies: list[float] = []  # ms per frame, source to panel written
        self.preview, self.source = preview, source
        self.flicker = FlickerMeter()

    def run(self, writer: FrameWriter, frames: Iterator[np.ndarray], batch: int, stop: threading.Event, pipelined: bool) -> int:
        """Every frame through the model into `writer`; returns how many were written."""
        return run_pipeline((self.prepare(f) for f in frames), self.infer_batch, functools.partial(self.emit, writer),
                            batch=batch, queue_size=2 * batch + 2, stop=stop, pipelined=pipelined)

    def prepare(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(the frame, its model-size copy, when it left the source: the latency's start)."""
        t0 = time.perf_counter()
        return frame, imageio.resize(frame.astype(np.float32) / 255.0, self.size), t0

    def infer_batch(self, group: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            background, self._next_background = self._next_background, None
        if background is not None:  # the runner is only touched from this thread
            self.runner.set_background(imageio.to_nchw([background]))
        x = np.ascontiguousarray(np.stack([g[1] for g in group]).transpose(0, 3, 1, 2))
        result = self.runner.infer_frames(x)
        return [(result["mask"][i, 0], result["depth"][i, 0]) for i in range(len(group))]

    def _follow_background(self, frame: np.ndarray, mask: np.ndarray) -> None:
        events = len(self.tracker.events)
        new = self.tracker.observe(frame, mask)
        if len(self.tracker.events) > events:
            self.report.background_events += self.tracker.events[events:]
            if new is not None:
                self.smoother.reset()  # a relearnt background: the old outputs no longer apply
        if new is not None:
            with self._lock:
                self._next_background = new

    def emit(self, writer: FrameWriter, item: tuple[np.ndarray, np.ndarray, float], result: tuple[np.ndarray, np.ndarray]) -> None:
        result = self.smoother(*result)  # in frame order: emit runs in the one encode thread
        self.flicker.add(item[1], result[0])
        if self.tracker is not None:
            self._follow_background(item[1], result[0])
        panel, mask = compose_panel(item[0], *result, self.runner.spec.depth_convention)
        writer.write(panel)
        if self.masks is not None:
            imageio.save_png(self.masks / f"mask_{self.report.masks:06d}.png", mask)
            self.report.masks += 1
        latency = time.perf_counter() - item[2]
        self.latencies.append(latency * 1000)
        rate = self.meter.tick()
        if self.preview is not None:
            self.preview.figures.update(fps=rate, **{k: float(getattr(self.source, k, 0)) for k in ("received", "dropped", "reconnects")})
            self.preview.publish(panel, latency)
        if self.on_frame is not None:
            self.on_frame(writer.count, rate)


def _write_output(out: Path, fmt: tuple[str, tuple[str, ...]] | None, src: FrameSource, report: StreamReport,
                  run: Callable[[FrameWriter], int]) -> FrameWriter:
    """`run(writer)` into a folder of PNGs or a video; sets `report.frames` and returns the writer.

    The video is written under a temporary name and renamed only once closed, so an error (or a
    run stopped before its first frame) leaves no file at `out`.
    """
    if fmt is None:
        writer: FrameWriter = PngFolderWriter(out)
        report.frames = run(writer)
        return writer
    with atomic_path(out) as tmp:
        writer = VideoWriter(tmp, fmt[0], fmt[1], src.fps)
        try:
            report.frames = run(writer)
        except BaseException:
            with contextlib.suppress(Exception):
                writer.close()
            raise
        writer.close()
        if report.frames == 0:
            raise UserError(f"{src.label}: stopped before the first frame was written; no video written")
    return writer


def _background(frames: Iterator[np.ndarray], src: FrameSource, bg: str | Path | None, bg_frames: int,
                report: StreamReport) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """The background (uint8 at the frame size) and the frames, with those looked at put back."""
    if bg is not None:
        first = next(frames, None)
        if first is None:
            raise UserError(f"{src.label}: no frames (an empty video or folder)")
        background, report.background = load_background(bg, first.shape[:2])
        return background, itertools.chain([first], frames)
    head = list(itertools.islice(frames, bg_frames))
    if not head:
        raise UserError(f"{src.label}: no frames (an empty video or folder)")
    background, report.background = median_background(head, bg_frames)
    return background, itertools.chain(head, frames)
