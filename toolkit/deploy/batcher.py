"""Dynamic batching: concurrent requests share one model instance and run as one batch.

Why: a runner is faster per image at larger batches (ONNX Runtime on a CPU a little, a GPU a
lot), and one model instance uses the memory of one. Requests are queued; a single worker thread
takes the first, waits up to `max_wait_s` for more (up to `max_batch`), and runs them together.
The worker is the only thread that calls the runner, so runners need not be thread-safe, and the
event loop never blocks on inference: it awaits the job's future.

A batch that raises is re-run one request at a time, so the request that makes the model fail
gets the error (a 500) and the others in its batch still get their results.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..runtime import Runner

log = logging.getLogger("toolkit.serve")


class JobFuture(Future):
    """A request's (mask HxW, depth HxW) float32, and the size of the batch it ran in (what the
    server's request log reports)."""

    batch_size: int = 0


@dataclass
class Job:
    bg: np.ndarray | None  # float32 HxWx3 at the model's size; None: the runner's fixed background
    fgbg: np.ndarray
    future: JobFuture = field(default_factory=JobFuture)


_WAKE = object()  # Batcher.drain(): wakes the worker so it stops waiting for more jobs


class QueueFull(Exception):
    """More requests are waiting than the server accepts (it answers 503)."""


class Batcher:
    def __init__(self, runner: Runner, max_batch: int = 8, max_wait_s: float = 0.005, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None):
        """`on_batch(size)` is called after each inference call that succeeded (the metrics' histogram)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.runner = runner
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_queue = max_queue
        self._queue: queue.Queue[Job | object | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.submitted = 0
        self.requests = 0
        self.batches = 0
        self.failures = 0
        self.largest_batch = 0
        self.on_batch = on_batch

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="toolkit-batcher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Finish every queued job, then stop the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def drain(self) -> None:
        """Stop waiting for more jobs: what is queued runs now, and later jobs run as they come
        (a server that is shutting down answers its last requests without their batch window)."""
        self.max_wait_s = 0.0
        self._queue.put(_WAKE)

    def submit(self, bg: np.ndarray | None, fgbg: np.ndarray) -> JobFuture:
        """Queue one pair (`bg` None: a frame against the background set on the runner)."""
        if not self.running:
            raise RuntimeError("the batcher is not running")
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self._queue.qsize()} requests are already waiting")
        job = Job(bg, fgbg)
        with self._lock:
            self.submitted += 1
        self._queue.put(job)
        return job.future

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {
                "requests": self.requests,
                "batches": self.batches,
                "mean_batch": round(self.requests / self.batches, 3) if self.batches else 0.0,
                "largest_batch": self.largest_batch,
                "failures": self.failures,
                "queued": self._queue.qsize(),
                "pending": self.submitted - self.requests - self.failures,  # accepted, not answered yet
            }

    def _loop(self) -> None:
        closing = False
        while not closing:
            job = self._queue.get()
            if job is None:
                break
            if job is _WAKE:
                continue
            assert isinstance(job, Job)
            group = [job]
            deadline = time.monotonic() + self.max_wait_s
            while len(group) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    closing = True
                    break
                if nxt is _WAKE:  # drain(): run what there is now
                    break
                assert isinstance(nxt, Job)
                group.append(nxt)
            self._run([j for j in group if j.future.set_running_or_notify_cancel()])
        # close(): anything queued behind the sentinel (none in practice) is still answered
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, Job) and job.future.set_running_or_notify_cancel():
                self._run([job])

    def _run(self, group: list[Job]) -> None:
        if not group:
            return
        try:
            frames = np.ascontiguousarray(np.stack([j.fgbg for j in group]).transpose(0, 3, 1, 2))
            if any(j.bg is None for j in group):  # a fixed camera: every job is a frame
                result = self.runner.infer_frames(frames)
            else:
                result = self.runner.infer({"bg": np.ascontiguousarray(np.stack([j.bg for j in group]).transpose(0, 3, 1, 2)),
                                            "fgbg": frames})
        except Exception as e:  # noqa: BLE001 - one bad request must not fail its neighbours
            if len(group) > 1:
                for job in group:
                    self._run([job])
                return
            log.error("inference failed: %s", e, exc_info=True)
            with self._lock:
                self.failures += 1
            group[0].future.set_exception(e)
            return
        with self._lock:
            self.requests += len(group)
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(group))
        if self.on_batch is not None:
            self.on_batch(len(group))
        for i, job in enumerate(group):
            job.future.batch_size = len(group)
            job.future.set_result((result["mask"][i, 0], result["depth"][i, 0]))
