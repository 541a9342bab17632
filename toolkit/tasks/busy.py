"""Was the machine busy while we timed? A figure taken beside other work is not this machine's.

Why: on 2 cores with another job running (load average 2.4-2.9), the PyTorch baseline's batch-1
median read 194 ms, 27 ms and 567 ms in three runs of the same command, so every "vs baseline"
ratio moved by 20x; ONNX Runtime (non-spinning threads) suffered far less than PyTorch's OpenMP
threads, so even same-run ratios lie then. An idle machine holds within 4 %. The figures stay
honest; what was missing is the sentence that says they were taken on a busy machine.

How: where the system counts CPU time (Linux, /proc/stat), the time its CPUs were busy over the
run, less this process's own (all its threads, whatever their number), is what other work
took: busy when that is more than a quarter of the machine's CPU time. Elsewhere, or for a
reader that gives only a load average, the 1-minute load average (runnable tasks, ours
included) before and after the timing, beside the CPUs this process may use: before the
timing our own share is about one task (the models loading), after it up to one per CPU.
Other work is what exceeds that: busy when more than half the CPUs were taken by others
before, or when more tasks than CPUs were runnable after. That rule misreads a run that keeps
more threads runnable than CPUs (a stream's decoder, model and encoder on 2 CPUs: load 3.4
with nothing else running), which is why the CPU times come first. No load average and no CPU
times (Windows): nothing is said.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OTHERS_LIMIT = 0.25  # other work's share of the machine's CPU time above which a run was busy


@dataclass(frozen=True)
class Reading:
    """What the machine looked like at one moment: the load average, and where the system
    counts them, the CPU-seconds its CPUs spent busy since boot and this process's."""

    load: float | None
    machine_busy_s: float = 0.0
    own_s: float = 0.0
    machine_cpus: int = 0  # the CPUs those busy seconds are summed over; 0: no CPU times
    at: float = 0.0  # time.monotonic()


LoadReader = Callable[[], "float | Reading | None"]  # a load average alone, or a whole Reading


def load_average() -> float | None:
    """The 1-minute load average, or None where the system keeps none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_reading() -> Reading:
    """This moment's Reading: the load average, and on Linux the CPU times (/proc/stat)."""
    at, own = time.monotonic(), os.times()
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        fields = [int(v) for v in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        busy_s = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return Reading(load_average(), at=at)
    return Reading(load_average(), busy_s, own.user + own.system, cpus, at)


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

    read: LoadReader = machine_reading
    cpus: int = 0  # 0: `usable_cpus()`
    before: Reading | None = None

    def start(self) -> BusyCheck:
        self.cpus = self.cpus or usable_cpus()
        self.before = _as_reading(self.read())
        return self

    def note(self, what: str = "times") -> str | None:
        before, after = self.before, _as_reading(self.read())
        if before is None or after is None:
            return None
        others = others_share(before, after)
        if others is not None:
            busy, why = others > OTHERS_LIMIT, f"; other processes took {others:.0%} of its CPU time"
        elif before.load is None or after.load is None:
            return None
        else:  # our own process, loading, before; up to one task per CPU after
            busy, why = before.load - 1.0 > 0.5 * self.cpus or after.load > self.cpus + 0.5, ""
        if not busy:
            return None
        return (f"warning: the machine was busy during this run (load average {_load(before)} before, {_load(after)} after, "
                f"on {self.cpus} CPU{'s' if self.cpus != 1 else ''}"
                f"{why}): other work shared the cores, so these {what} are not this machine's, and ratios between "
                "runtimes that thread differently (PyTorch's OpenMP, ONNX Runtime) are unreliable; rerun on an idle machine")


def others_share(before: Reading, after: Reading) -> float | None:
    """The share of the machine's CPU time that other processes took between two readings
    (None without CPU times, or over less than a second)."""
    wall = after.at - before.at
    if not (before.machine_cpus and after.machine_cpus) or wall < 1.0:
        return None
    others = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return max(0.0, others) / (wall * after.machine_cpus)


def _load(reading: Reading) -> str:
    return "?" if reading.load is None else f"{reading.load:.1f}"


def _as_reading(value: float | Reading | None) -> Reading | None:
    return value if isinstance(value, Reading) or value is None else Reading(float(value))
