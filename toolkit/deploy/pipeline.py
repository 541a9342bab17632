"""Decode -> infer -> encode as three threads with small bounded queues between them.

Why threads: decoding (FFmpeg), inference (ONNX Runtime, PyTorch, TensorRT) and encoding
(FFmpeg, Pillow, numpy) all release the GIL for their heavy parts, so on a device with a few
cores they overlap, and the slowest stage sets the frame rate instead of the sum of all three.
The queues are bounded (a few frames) so memory stays flat and a slow encoder slows the decoder
down instead of buffering the whole video.

Priorities: the decode and encode threads (and the threads they start: the encoder's) run at
a lower priority than the model (`HELPER_NICE`, Linux). On a box whose cores the model fills,
a helper that the scheduler runs in the middle of one of the model's parallel steps stalls the
model's other threads, which wait for it; at a lower priority the helpers take the cores when
the model waits instead. Measured at 720p on 2 cores (interleaved A/B, medians of 3;
benchmarks/README.md): --no-video 32.6 -> 40.3 frames/s, the overlay 23.8 -> 26.0, the panel
16.3 -> 17.6. The helpers still get the cores whenever the model is not running, so they keep
up; the queues between the stages stay bounded either way. FFmpeg's decoder threads, started
when the source was opened, and a live source's reader keep the caller's priority: a camera's
frames must be read as they come.

Batching is opportunistic: the infer stage takes one frame (waiting for it), then whatever else
is already queued, up to `batch`. A file that decodes faster than the model runs fills the
batches (better throughput where the runner gains from it); a camera delivering frames one by
one gets batches of one (no added latency).

Stopping: setting `stop` (the SIGINT handler does) ends decoding after the current frame; the
frames already decoded (at most the queue sizes) are still inferred and encoded, then every
stage ends normally, so the caller closes its output as after a complete run. An exception in
any stage sets `abort`: every stage quits at its next queue operation and `run_pipeline` raises
that exception in the calling thread.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()
_POLL_S = 0.05
HELPER_NICE = 10  # the decode/encode threads' niceness above the caller's (see the module docstring)


def lower_this_threads_priority(by: int = HELPER_NICE) -> None:
    """Make the calling thread (and threads it starts later) yield the cores to the others.

    Linux only: there a thread has its own niceness (setpriority on its thread id); elsewhere the
    same call would renice a whole process, so nothing is done. Raising niceness needs no
    privilege and cannot be undone by the thread, which is why only threads the pipeline owns
    (and ends) call this."""
    if not sys.platform.startswith("linux") or by <= 0:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError:  # a sandbox that forbids it: the stream runs, only slower
        pass


class _Aborted(Exception):
    """Raised inside a stage when another stage failed: quit without touching the queues."""


def run_pipeline(
    items: Iterable[T],
    infer_batch: Callable[[Sequence[T]], Sequence[R]],
    emit: Callable[[T, R], None],
    *,
    batch: int = 1,
    queue_size: int = 8,
    stop: threading.Event | None = None,
    pipelined: bool = True,
) -> int:
    """Feed `items` through `infer_batch` (lists of up to `batch`) into `emit`; return how many were emitted.

    `items` is consumed in the decode thread (a generator's own work — decoding, resizing —
    runs there). `pipelined=False` runs the same three steps one after another in this thread,
    in fixed batches of `batch`: the baseline the benchmark compares against.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    stop = stop or threading.Event()
    if not pipelined:
        return _run_sequential(items, infer_batch, emit, batch, stop)
    return _Threaded(items, infer_batch, emit, batch, queue_size, stop).run()


class _Threaded(Generic[T, R]):
    """One pipelined run: the three stages, the two queues between them, and what they share.

    Every queue operation polls `abort` (set when any stage fails), so a stage blocked on a full
    or empty queue still notices another stage's failure and quits instead of hanging.
    """

    def __init__(self, items: Iterable[T], infer_batch: Callable[[Sequence[T]], Sequence[R]], emit: Callable[[T, R], None],
                 batch: int, queue_size: int, stop: threading.Event):
        self.items = items
        self.infer_batch = infer_batch
        self.emit = emit
        self.batch = batch
        self.stop = stop
        self.abort = threading.Event()
        self.errors: list[BaseException] = []
        self.inbox: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self.outbox: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self.emitted = 0

    def run(self) -> int:
        """Start the three stage threads, wait for all of them, and raise the first stage's error.

        Waiting is on events, not Thread.join: a KeyboardInterrupt that lands inside join() marks
        the joined thread as finished although it still runs (CPython < 3.13), and the caller
        would then close the video under a running encoder.
        """
        dones = [threading.Event() for _ in range(3)]
        for stage, done in zip((self.decode, self.infer, self.encode), dones):
            threading.Thread(target=self._guarded, args=(stage, done), name=f"toolkit-{stage.__name__}", daemon=True).start()
        try:
            for done in dones:
                while not done.wait(0.1):  # in slices: the main thread must stay free to run signal handlers
                    pass
        except BaseException:
            self.abort.set()  # a second Ctrl-C (KeyboardInterrupt) here: stop everything now...
            for done in dones:  # ...but let each stage leave its current step, so the caller can close its output safely
                done.wait(30)
            raise
        if self.errors:
            raise self.errors[0]
        return self.emitted

    def decode(self) -> None:
        lower_this_threads_priority()
        for item in self.items:
            self._put(self.inbox, item)
            if self.stop.is_set():
                break
        self._put(self.inbox, _END)

    def infer(self) -> None:
        finished = False
        while not finished:
            first = self._get(self.inbox)
            if first is _END:
                break
            group, finished = self._take_waiting([first])
            results = self.infer_batch(group)
            if len(results) != len(group):
                raise RuntimeError(f"infer_batch returned {len(results)} results for {len(group)} items")
            for item, result in zip(group, results):
                self._put(self.outbox, (item, result))
        self._put(self.outbox, _END)

    def _take_waiting(self, group: list[T]) -> tuple[list[T], bool]:
        """`group` plus the items already queued, up to `batch` (never waiting: that is the
        opportunistic batching), and whether the end of the items was among them."""
        while len(group) < self.batch:
            try:
                more = self.inbox.get_nowait()
            except queue.Empty:
                break
            if more is _END:
                return group, True
            group.append(more)
        return group, False

    def encode(self) -> None:
        lower_this_threads_priority()
        while True:
            entry = self._get(self.outbox)
            if entry is _END:
                return
            self.emit(*entry)
            self.emitted += 1

    def _guarded(self, stage: Callable[[], None], done: threading.Event) -> None:
        """Run one stage in its thread: an error is kept for the calling thread and aborts the others."""
        try:
            stage()
        except _Aborted:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the calling thread
            self.errors.append(e)
            self.abort.set()
        finally:
            done.set()

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self.abort.is_set():
                raise _Aborted
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            if self.abort.is_set():
                raise _Aborted
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue


def _run_sequential(items: Iterable[T], infer_batch: Callable[[Sequence[T]], Sequence[R]], emit: Callable[[T, R], None],
                    batch: int, stop: threading.Event) -> int:
    emitted = 0
    group: list[T] = []

    def flush() -> int:
        results = infer_batch(group)
        for item, result in zip(group, results):
            emit(item, result)
        n = len(group)
        group.clear()
        return n

    for item in items:
        group.append(item)
        if len(group) >= batch:
            emitted += flush()
        if stop.is_set():
            break
    if group:
        emitted += flush()
    return emitted
