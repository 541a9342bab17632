"""A live source: the newest frame, never a backlog, and a stream that comes back after a drop.

A camera or network stream runs at its own pace; when inference is slower, keeping every frame
builds a queue, and the output falls further behind the scene each second (what users of RTSP
cameras with other tools report as "lag that grows"). `LiveFrames` reads the source in a thread
of its own and keeps only the newest frame: the consumer always gets the latest, the ones it
could not take are counted as dropped. `stride` N keeps every N-th frame the source delivers.

A network stream that ends, errors, or delivers nothing for `stall_s` is reopened with backoff
(0.5 s, doubling to 8 s), up to `reconnect` times (None: forever), each event one line in
`notes`; the frame size must stay the same (the background and the output video have one). Files
are not wrapped: they keep every frame, and their end is the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..core.errors import UserError, positive
from .decoded import Frame
from .video import TRANSPORTS, FrameSource, is_network, open_source

LIVE_KINDS = ("camera", "network")  # live by default: they run at their own pace

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class LiveFrames(FrameSource):
    """Newest-frame-wins view of a source made by `open_source` (called again to reconnect)."""

    kind = "live"

    def __init__(self, open_source: Callable[[], FrameSource], *, stride: int = 1, stall_s: float = 10.0,
                 reconnect: int | None = 0, network: bool = False):
        positive(stride, "--stride")
        if stall_s <= 0:
            raise UserError(f"--stall-s must be positive, got {stall_s}")
        self._open, self.stride, self.stall_s = open_source, stride, stall_s
        self.reconnect_budget, self.network = reconnect, network
        self.source = open_source()
        super().__init__(self.source.label, self.source.fps, None)
        self.kind = f"{self.source.kind}, live"
        self.received = self.dropped = self.reconnects = 0
        self._slot: Frame | None = None
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="toolkit-live-reader", daemon=True)
        self._started = False

    def _read(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            ended_by = None
            try:
                for index, frame in enumerate(self._watched(self.source)):
                    attempt = 0
                    self.received += 1
                    if index % self.stride:
                        continue
                    with self._cond:
                        if self._slot is not None:
                            self.dropped += 1  # the consumer did not take the previous one in time
                        self._slot = frame
                        self._cond.notify_all()
                    if self._stop.is_set():
                        return
                ended_by = "the stream ended"
            except UserError as e:  # a stall, a size change, an unreadable stream
                ended_by = str(e)
            except Exception as e:  # noqa: BLE001 - FFmpeg's network errors: reconnect, never crash the reader
                ended_by = f"{type(e).__name__}: {e}"
            if not self.network or self._stop.is_set() or not self._may_reconnect():
                with self._cond:
                    if self.network and ended_by != "the stream ended":
                        self.notes.append(f"{self.label}: {ended_by}; not reconnecting (--reconnect {self.reconnect_budget})")
                    self._done = True
                    self._cond.notify_all()
                return
            wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            self.reconnects += 1
            self.notes.append(f"{self.label}: {ended_by}: reconnecting in {wait:g} s (reconnect {self.reconnects})")
            if self._stop.wait(wait):
                return
            try:
                self.source.close()
                self.source = self._open()
            except UserError as e:
                self.notes.append(f"{self.label}: reconnect {self.reconnects} failed ({e})")

    def _may_reconnect(self) -> bool:
        return self.reconnect_budget is None or self.reconnects < self.reconnect_budget

    def _watched(self, source: FrameSource) -> Iterator[Frame]:
        """The source's frames; a UserError when none comes for `stall_s` (checked between frames:
        the source's own read timeout, set from `stall_s`, ends a read that hangs)."""
        last = time.monotonic()
        for frame in source.decoded():
            now = time.monotonic()
            if now - last > self.stall_s:
                raise UserError(f"no frame for {now - last:.1f} s (over --stall-s {self.stall_s:g})")
            last = now
            yield frame

    def _frames(self) -> Iterator[Frame]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            with self._cond:
                while self._slot is None and not self._done:
                    self._cond.wait(timeout=0.5)
                if self._slot is None:
                    return
                frame, self._slot = self._slot, None
            yield frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._started:
            self._thread.join(timeout=self.stall_s + 10)
        self.source.close()


@dataclass(frozen=True)
class LiveOptions:
    """How `stream` reads its source (the CLI's --latest/--all-frames, --stride, --stall-s,
    --reconnect, --rtsp-transport)."""

    latest: bool | None = None  # None: cameras and network streams live, files and folders every frame
    stride: int = 1
    stall_s: float = 10.0
    reconnect: int | None = None  # network streams: None reconnects forever
    transport: str = "tcp"

    def __post_init__(self) -> None:
        positive(self.stride, "--stride")
        if not self.stall_s > 0:
            raise UserError(f"--stall-s must be positive, got {self.stall_s}")
        if self.reconnect is not None and self.reconnect < 0:
            raise UserError(f"--reconnect must be a number of tries (or -1: forever), got {self.reconnect}")
        if self.transport not in TRANSPORTS:
            raise UserError(f"--rtsp-transport must be tcp or udp, got {self.transport!r}")


class StridedFrames(FrameSource):
    """Every `stride`-th frame of a source that keeps every frame (a file, a folder)."""

    def __init__(self, source: FrameSource, stride: int):
        super().__init__(source.label, source.fps / stride, -(-source.expected // stride) if source.expected else None)
        self.source, self.stride, self.kind = source, stride, source.kind
        self.notes = source.notes

    def _frames(self) -> Iterator[Frame]:
        for index, frame in enumerate(self.source.decoded()):
            if index % self.stride == 0:
                yield frame

    def close(self) -> None:
        self.source.close()


def open_live(source: str | FrameSource, fps: float | None, options: LiveOptions) -> FrameSource:
    """The stream's source as `options` ask: live (newest frame wins) for cameras and network
    streams unless `latest` says otherwise, every frame (every `stride`-th) for files."""
    network = isinstance(source, str) and is_network(source)
    if isinstance(source, FrameSource):
        given = [source]
        make: Callable[[], FrameSource] = lambda: given.pop() if given else _gone(source)  # noqa: E731
        kind = source.kind
    else:
        make = lambda: open_source(str(source), fps, transport=options.transport, stall_s=options.stall_s)  # noqa: E731
        kind = ""
    latest = options.latest
    if latest is False or (latest is None and not network and kind not in LIVE_KINDS and not _is_camera(source)):
        src = make()
        return StridedFrames(src, options.stride) if options.stride > 1 else src
    reconnect = options.reconnect if network else 0
    return LiveFrames(make, stride=options.stride, stall_s=options.stall_s, reconnect=reconnect, network=network)


def _is_camera(source: str | FrameSource) -> bool:
    return isinstance(source, str) and (source.isdigit() or source.startswith("/dev/video"))


def _gone(source: FrameSource) -> FrameSource:
    raise UserError(f"{source.label}: cannot be reopened (a source given as an object is read once)")
