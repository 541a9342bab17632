"""`toolkit stream`: a fixed camera's frames (or a video, or a folder) through any runner.

Each frame is the `fgbg`; the background is an image of the empty scene or the per-pixel
median of the first frames (`background.py`). The outputs: a video (or a folder of PNGs) in a
layout (`compose.py`: the frame | mask overlay | depth panel, or the overlay alone) at the
camera's size or `--out-size`, or no video at all; the raw masks as grey PNGs; a JSON line per
frame (`events.py`). Decoding, inference and encoding overlap (`pipeline.py`); each stage works
at the size its output needs (`annotate.py`).

Output safety: the video is written under a temporary name and renamed when it is closed, so
`--out` is either absent or a complete, playable file. Ctrl-C (SIGINT) stops decoding, finishes
the frames in flight, and closes and renames the video as after a complete run (the partial
video plays); a second Ctrl-C aborts at once and leaves no file. A bad input (a frame of another
size, ...) is an error and leaves no video.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..core.fsutil import atomic_path, check_output_dir, check_output_file
from ..runtime import Runner
from ..runtime.fixed import open_fixed_camera
from .annotate import Annotator, aspect_note
from .background import load_background, median_background
from .compose import compose_panel
from .decoded import Frame
from .events import EventLog, check_events_target
from .live import open_live
from .options import StreamOptions
from .preview import Preview
from .report import StreamReport
from .temporal import Smoother
from .video import FrameSource, PngFolderWriter, VideoWriter, video_format

__all__ = ["StreamReport", "aspect_note", "compose_panel", "sigint_sets", "stream"]  # aspect_note, compose_panel: their homes' names
FrameWriter = PngFolderWriter | VideoWriter


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
    out: str | Path | None,
    options: StreamOptions | None = None,
    *,
    preview: Preview | None = None,
    stop: threading.Event | None = None,
    on_start: Callable[[StreamReport, int | None], None] | None = None,
    on_frame: Callable[[int, float], None] | None = None,
) -> StreamReport:
    """Run `model` on every frame of `source` and write the outputs `options` ask for
    (`StreamOptions`, checked when made: the CLI's rules and lines): a video or PNG folder at
    `out` (None with `options.video` False), the masks, the events.

    `on_start(report, expected_frames)` is called once the background is known; `on_frame(done,
    fps)` after each frame. `stop` ends the stream early (SIGINT sets it when this runs in the
    main thread). `preview`: a `toolkit.deploy.preview.Preview` that serves each picture as it
    is drawn. The model's self-test runs before the first frame (as `serve_model` runs it before
    the port opens); a failing model is CheckFailed.
    """
    o = options or StreamOptions()
    out = _check_outputs(out, o, preview)
    smoother = Smoother(o.smooth)
    stop = stop or threading.Event()
    runner = model if isinstance(model, Runner) else open_fixed_camera(model, cache=o.bg_cache, **_runner_options(model, o))
    report = StreamReport(out=out, smooth=o.smooth, layout=o.layout if o.video or preview is not None else "")
    src = open_live(source, o.fps, o.live)
    with src, runner, sigint_sets(stop):
        report.notes = list(runner.notes)  # after activation: a provider that failed to load is noted then
        if o.self_test:  # the model proves itself before the first frame (CheckFailed: exit 1)
            from ..verify.selftest import startup_check

            report.self_test = startup_check(runner)
        report.source = f"{src.label} ({src.kind}, {src.fps:g} fps)"
        frames, background, expected = _open_frames(src, o, report)
        annotator = Annotator(runner, background, report, o, src, on_frame=on_frame, smoother=smoother, preview=preview)
        writer = _writer(out, src, o, report, live=annotator.live, size=annotator.picture_size)
        if on_start is not None:
            on_start(report, expected)
        if preview is not None and report.self_test:
            preview.figures["self_test_passed"] = 1.0 if report.self_test.startswith("self-test passed") else 0.0
        start = time.perf_counter()
        with _event_log(o.events, report, stop) as events:
            _run_into(out, writer, src, report, lambda w: annotator.run(w, frames, events, stop))
        report.seconds = time.perf_counter() - start
        report.flicker = annotator.flicker.value
        report.interrupted = stop.is_set()
        report.notes += src.notes
        report.received = getattr(src, "received", report.frames)
        report.dropped, report.reconnects = getattr(src, "dropped", 0), getattr(src, "reconnects", 0)
        if annotator.latencies:
            report.latency_ms_p50, report.latency_ms_p99 = (float(np.percentile(annotator.latencies, q)) for q in (50, 99))
    if report.frames == 0:
        raise UserError(f"{src.label}: stopped before the first frame" if stop.is_set() else f"{src.label}: no frames")
    return report


def _runner_options(model: str | Path, options: StreamOptions) -> dict[str, object]:
    """How the model is opened: on ONNX Runtime its threads sleep between calls instead of
    spinning, since decoding, drawing and encoding need the same cores in between (measured at
    720p on 2 cores: --no-video 38.7 against 37.3 frames/s, the overlay 25.1 against 23.2, though
    the model alone is 10 % faster spinning; benchmarks/README.md)."""
    from ..runtime.onnx_runner import PROVIDER_CHAIN

    spin = not (Path(model).suffix.lower() == ".onnx" and options.provider in PROVIDER_CHAIN)
    return {"provider": options.provider} | ({} if spin else {"spinning": False})


def _check_outputs(out: str | Path | None, options: StreamOptions, preview: Preview | None) -> Path | None:
    """Refuse unwritable or contradictory outputs before any work (the model is not even opened)."""
    if not options.video:
        if out is not None:
            raise UserError("--no-video writes no video: drop --out (or --no-video)")
        if preview is None and (options.layout != "panel" or options.out_size is not None):
            raise UserError("--layout and --out-size shape the video or the preview: with --no-video, add --preview or drop them")
    elif out is None:
        raise UserError("give --out (a video file or a folder for PNG frames), or --no-video")
    if out is not None:
        out = Path(out)
        if video_format(out) is None:  # checks the suffix before any work
            check_output_dir(out)  # a path that can never be written is refused now, not after the model loaded
        else:
            check_output_file(out)
    if options.masks_dir is not None:
        check_output_dir(options.masks_dir)
    check_events_target(options.events)
    return out


def _writer(out: Path | None, src: FrameSource, options: StreamOptions, report: StreamReport, *,
            live: bool, size: tuple[int, int] | None) -> FrameWriter | None:
    """The video or PNG writer for `out` (None: no video), its encoder said in the report;
    `live`: the source runs at its own pace (the encoder is tuned for latency); `size`: the
    pictures' (h, w)."""
    if out is None:
        return None
    fmt = video_format(out)
    if fmt is None:
        writer: FrameWriter = PngFolderWriter(out)
        report.codec = report.encoder = "png"
    else:
        writer = VideoWriter(out, fmt[0], fmt[1], src.fps, live=live, preset=options.preset, size=size)
        report.codec, report.encoder = writer.codec, writer.describe()
    if options.preset is not None and report.codec != "libx264":
        report.notes.append(f"--preset {options.preset} sets H.264's encoder (libx264); {out.name} is written with {report.codec}: ignored")
    return writer


@contextlib.contextmanager
def _event_log(target: str | Path | None, report: StreamReport, stop: threading.Event) -> Iterator[EventLog | None]:
    if target is None:
        yield None
        return
    with EventLog(target, on_closed=stop.set) as log:
        yield log
        report.events = log.count


def _open_frames(src: FrameSource, options: StreamOptions,
                 report: StreamReport) -> tuple[Iterator[Frame], np.ndarray, int | None]:
    """The frames to run (at most `max_frames`), the background, and how many frames to expect
    (None when neither the source nor `max_frames` says)."""
    frames: Iterator[Frame] = src.decoded()
    max_frames = options.max_frames
    if max_frames is not None:
        frames = itertools.islice(frames, max_frames)
    background, frames = _background(frames, src, options.bg, options.background_frames, report)
    expected = min(x for x in (src.expected, max_frames) if x) if (src.expected or max_frames) else None
    return frames, background, expected


def _run_into(out: Path | None, writer: FrameWriter | None, src: FrameSource, report: StreamReport,
              run: Callable[[FrameWriter | None], int]) -> None:
    """`run(writer)`; sets `report.frames`. A video is written under a temporary name and renamed
    only once closed, so an error (or a run stopped before its first frame) leaves no file."""
    if not isinstance(writer, VideoWriter):
        report.frames = run(writer)
        return
    assert out is not None
    with atomic_path(out) as tmp:
        writer.path = tmp
        try:
            report.frames = run(writer)
        except BaseException:
            with contextlib.suppress(Exception):
                writer.close()
            raise
        writer.close()
        if report.frames == 0:
            raise UserError(f"{src.label}: stopped before the first frame was written; no video written")


def _background(frames: Iterator[Frame], src: FrameSource, bg: str | Path | None, bg_frames: int,
                report: StreamReport) -> tuple[np.ndarray, Iterator[Frame]]:
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
