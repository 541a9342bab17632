"""Ctrl-C during training: the first press stops the run after the step in progress, with a
`last.pt` at that step; a second press aborts at once.

Why a handler rather than Python's KeyboardInterrupt: that exception lands wherever the
interpreter is (inside a step, an evaluation, a checkpoint write), so a run lost every step since
its last epoch boundary and said nothing. The handler only notes the request; the epoch loop ends
the step it is in, writes `last.pt` with the position inside the epoch (the path `--max-steps`
takes, written atomically like every checkpoint) and raises `TrainingInterrupted`, which
`toolkit train` prints as one line with exit code 130 (128 + SIGINT). The second press raises
`KeyboardInterrupt` from the handler: a checkpoint write it cuts short leaves the previous
`last.pt` as it was (`toolkit.core.fsutil.atomic_path`), and the loop re-raises it as
`TrainingAborted`, a KeyboardInterrupt that says what is on disk.

Several processes: a terminal sends SIGINT to the whole process group, so `--nproc` ranks each
get their own (torchrun forwards it to its workers), each at a different moment; the ranks agree
after every step (`Group.any_rank`), so all stop at the same one. DataLoader workers ignore SIGINT
(`ignore_sigint`): the main process decides when to stop, and a worker that died of its own
KeyboardInterrupt would leave the step in progress without its batch.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from toolkit.core.errors import ToolkitError

__all__ = ["StopRequest", "TrainingAborted", "TrainingInterrupted", "aborted_message", "ignore_sigint",
           "interrupted_message", "sigint_stops"]


class TrainingInterrupted(ToolkitError):
    """The run stopped after a step on Ctrl-C; its `last.pt` holds that step (exit code 130)."""

    exit_code = 130


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C: training stopped at once; the message says which `last.pt` is left."""


class StopRequest:
    """Whether Ctrl-C asked the run to stop (set by the handler `sigint_stops` installs)."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextlib.contextmanager
def sigint_stops() -> Iterator[StopRequest]:
    """While inside, the first SIGINT sets `requested` and a second raises KeyboardInterrupt.

    Nothing is installed off the main thread (Python allows handlers only there), nor where SIGINT
    is ignored: a background job started with SIGINT ignored was asked never to stop on it."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield stop
        return
    previous = signal.signal(signal.SIGINT, stop._handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def ignore_sigint(_worker_id: int) -> None:
    """A DataLoader `worker_init_fn`: the worker leaves Ctrl-C to the process that trains."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupted_message(step: int, epoch: int, run: Path) -> str:
    """The one line of a run stopped by Ctrl-C (`epoch`: 1-based, the one step `step` belongs to)."""
    return f"interrupted at step {step} (epoch {epoch}): resume with toolkit train --resume {run}"


def aborted_message(run: Path, step: int | None = None) -> str:
    """The one line of a second Ctrl-C. `step`: that of the `last.pt` left, where known."""
    last = run / "last.pt"
    if not last.exists():
        return f"aborted by a second Ctrl-C: {run} holds no checkpoint to resume"
    left = f"is left at step {step}" if step is not None else "is the last checkpoint written"
    return f"aborted by a second Ctrl-C: {last} {left}; resume with toolkit train --resume {run}"
