"""The per-frame work of one `stream`: prepare (decode thread), infer (infer thread), emit (encode thread).

Each stage does only what an output needs, at that output's size:
  * prepare: the model's copy of the frame, from the decoder's planes when it has them
    (`decoded.model_input`: half a grey level from the float resize `infer` uses), and the
    camera-size picture only when a video or the preview will show it (resized to
    `--out-size` here, off the encode thread);
  * infer: a batch against the fixed background (features once, on the halves);
  * emit: smoothing, flicker, the background's adaptation, then each output asked for: the
    layout's picture to the video (on the decoder's planes, `compose_yuv.YuvComposer`, when the
    video is the only picture) or to the preview and PNG frames (`compose.Composer`, uint8 RGB),
    the raw mask at the camera's size (`--masks-dir`, as before), and the frame's event
    (`--events`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..core.fsutil import ensure_dir
from ..render import imageio
from ..runtime import Runner
from ..runtime.fixed import HalvesRunner
from .adapt import BackgroundTracker
from .compose import Composer, mask_at
from .compose_yuv import YuvComposer
from .decoded import DecodedFrame, Frame, Planes, model_input, picture_at
from .events import EventLog, frame_event
from .pipeline import run_pipeline
from .report import StreamReport
from .temporal import FlickerMeter, Smoother
from .video import DEFAULT_FPS, VideoWriter

if TYPE_CHECKING:
    from .options import StreamOptions
    from .preview import Preview
    from .video import FrameSource

ASPECT_TOLERANCE = 0.05


class FpsMeter:
    """Frames per second over the last `window` frames: what the stream does *now*."""

    def __init__(self, window: int = 30):
        self.times: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self.times.append(time.perf_counter())
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


class Item(NamedTuple):
    shown: np.ndarray | Planes | None  # at the output's size, when a picture is drawn: uint8 RGB or the decoder's planes
    small: np.ndarray  # float32 HxWx3 in [0, 1] at the model's size
    taken: float  # perf_counter when it left the source: the latency's start


@dataclass
class Outputs:
    """Where a frame goes: the writer (None: --no-video), the picture's composer (None: no
    picture at all), the masks folder, the event log, the preview."""

    writer: Any = None
    composer: Composer | None = None
    yuv: dict[str, YuvComposer] | None = None  # per matrix, when the pictures are drawn on the planes
    masks: Any = None
    events: EventLog | None = None
    preview: Preview | None = None


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


class Annotator:
    """One stream's frames through the model into its outputs (see the module docstring)."""

    def __init__(self, runner: Runner, background: np.ndarray, report: StreamReport, options: StreamOptions,
                 source: FrameSource | None = None, *, on_frame: Callable[[int, float], None] | None = None,
                 smoother: Smoother | None = None, preview: Preview | None = None):
        self.runner, self.size, self.frame_hw = runner, runner.spec.size, background.shape[:2]
        start = model_input(background, self.size, match_infer=options.match_infer)
        runner.set_background(imageio.to_nchw([start]))
        self.tracker = BackgroundTracker(start, options.adapt) if options.adapt is not None else None
        self._next_background: np.ndarray | None = None  # handed from the encode thread to the infer thread
        self._lock = threading.Lock()
        report.fixed_camera = "halves" if isinstance(runner, HalvesRunner) else "whole network"
        note = aspect_note(self.frame_hw, self.size)
        if note:
            report.notes.append(note)
        self.report, self.options = report, options
        self.out = Outputs(masks=ensure_dir(options.masks_dir) if options.masks_dir is not None else None, preview=preview)
        self.tile = options.out_size or self.frame_hw
        if options.video or preview is not None:  # a picture is drawn
            self.out.composer = Composer(options.layout, self.tile, runner.spec.depth_convention)
        self.live = source is not None and "live" in source.kind
        self.on_frame, self.meter = on_frame, FpsMeter()
        self.smoother = smoother or Smoother(0.0)
        self.latencies: list[float] = []  # ms per frame, source to outputs written
        self.source, self.flicker = source, FlickerMeter()
        self.done, self.started = 0, time.perf_counter()

    def run(self, writer: Any, frames: Iterator[Frame], events: EventLog | None, stop: threading.Event) -> int:
        """Every frame through the model into `writer` (None: no video) and the other outputs;
        returns how many frames were run."""
        self.out.writer, self.out.events = writer, events
        # the decoder's planes straight to the encoder: only a video takes them (the preview and PNGs are RGB)
        composer = self.out.composer
        on_planes = (isinstance(writer, VideoWriter) and writer.takes_planes and self.out.preview is None
                     and composer is not None and YuvComposer.fits(composer))
        self.out.yuv = {} if on_planes else None
        self.started = time.perf_counter()
        batch = self.options.batch_for(self.live)
        # A live source drops what the model cannot take: short queues, so frames are dropped at
        # the source (newest wins) instead of waiting in line and adding their wait to the latency.
        queue = batch if self.live else 2 * batch + 2
        return run_pipeline((self.prepare(f) for f in frames), self.infer_batch, self.emit,
                            batch=batch, queue_size=queue, stop=stop, pipelined=self.options.pipelined)

    @property
    def picture_size(self) -> tuple[int, int] | None:
        """(h, w) of the pictures drawn (None: none are)."""
        return self.out.composer.out_size if self.out.composer is not None else None

    def prepare(self, frame: Frame) -> Item:
        taken = time.perf_counter()
        small = model_input(frame, self.size, match_infer=self.options.match_infer)
        shown: np.ndarray | Planes | None = None
        if self.out.yuv is not None and isinstance(frame, DecodedFrame):
            shown = frame.planes_at(self.tile)
        if shown is None and self.out.composer is not None:
            shown = picture_at(frame, self.tile)
        return Item(shown, small, taken)

    def infer_batch(self, group: Sequence[Item]) -> list[tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            background, self._next_background = self._next_background, None
        if background is not None:  # the runner is only touched from this thread
            self.runner.set_background(imageio.to_nchw([background]))
        x = np.ascontiguousarray(np.stack([g.small for g in group]).transpose(0, 3, 1, 2))
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

    def emit(self, item: Item, result: tuple[np.ndarray, np.ndarray]) -> None:
        mask, depth = self.smoother(*result)  # in frame order: emit runs in the one encode thread
        flicker = self.flicker.add(item.small, mask)
        if self.tracker is not None:
            self._follow_background(item.small, mask)
        picture = self._draw(item.shown, mask, depth)
        if self.out.writer is not None:
            self.out.writer.write(picture)
        if self.out.masks is not None:
            imageio.save_png(self.out.masks / f"mask_{self.report.masks:06d}.png", mask_at(mask, self.frame_hw))
            self.report.masks += 1
        latency = time.perf_counter() - item.taken
        if self.out.events is not None:
            when = item.taken - self.started if self.live else self.done / self.fps
            self.out.events.write(frame_event(self.done, when, mask, depth, self.frame_hw, flicker, latency * 1000))
        self.latencies.append(latency * 1000)
        self.done += 1
        rate = self.meter.tick()
        if self.out.preview is not None:
            self.out.preview.figures.update(fps=rate, **{k: float(getattr(self.source, k, 0)) for k in ("received", "dropped", "reconnects")})
            assert picture is not None  # a preview is drawn for
            self.out.preview.publish(picture.copy(), latency)
        if self.on_frame is not None:
            self.on_frame(self.done, rate)

    def _draw(self, shown: np.ndarray | Planes | None, mask: np.ndarray, depth: np.ndarray) -> np.ndarray | Planes | None:
        """The layout's picture, on the planes when `shown` is planes; None when nothing is drawn."""
        composer = self.out.composer
        if composer is None or shown is None:
            return None
        if isinstance(shown, Planes):
            assert self.out.yuv is not None  # planes are only prepared for a YUV drawing
            if shown.matrix not in self.out.yuv:
                self.out.yuv[shown.matrix] = YuvComposer(composer, shown.matrix)
            return self.out.yuv[shown.matrix].compose(shown, mask, depth)
        return composer.compose(shown, mask, depth)

    @property
    def fps(self) -> float:
        return self.source.fps if self.source is not None else DEFAULT_FPS
