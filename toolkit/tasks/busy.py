"""Was the machine busy while we timed? A figure taken beside other work is not this machine's.

Why: on 2 cores with another job running (load average 2.4-2.9), the PyTorch baseline's batch-1
median read 194 ms, 27 ms and 567 ms in three runs of the same command, so every "vs baseline"
ratio moved by 20x; ONNX Runtime (non-spinning threads) suffered far less than PyTorch's OpenMP
threads, so even same-run ratios lie then. An idle machine holds within 4 %. The figures stay
honest; what was missing is the sentence that says they were taken on a busy machine.

How: the 1-minute load average (runnable tasks, ours included) is read before the timing and
after it, beside the CPUs this process may use. Before the timing our own share is about one
task (the models loading); after it, up to one per CPU (our threads were running). Other work is
what exceeds that: busy when more than half the CPUs were taken by others before, or when more
tasks than CPUs were runnable after. No load average (Windows): nothing is said.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LoadReader = Callable[[], float | None]


def load_average() -> float | None:
    """The 1-minute load average, or None where the system keeps none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return n


@dataclass
class BusyCheck:
    """`start()` before the timing, `note()` after it: a line when other work shared the CPUs."""

    read: LoadReader = load_average
    cpus: int = 0  # 0: `usable_cpus()`
    before: float | None = None

    def start(self) -> BusyCheck:
        self.cpus = self.cpus or usable_cpus()
        self.before = self.read()
        return self

    def note(self, what: str = "times") -> str | None:
        after = self.read()
        if self.before is None or after is None:
            return None
        others_before = self.before - 1.0  # our own process, loading
        busy = others_before > 0.5 * self.cpus or after > self.cpus + 0.5
        if not busy:
            return None
        return (f"warning: the machine was busy during this run (load average {self.before:.1f} before, {after:.1f} after, "
                f"on {self.cpus} CPU{'s' if self.cpus != 1 else ''}): other work shared the cores, so these {what} are not this "
                "machine's, and ratios between runtimes that thread differently (PyTorch's OpenMP, ONNX Runtime) are "
                "unreliable; rerun on an idle machine")
