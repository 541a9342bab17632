"""Was the machine busy while we timed? Other processes' CPU time, where the system counts it;
the load average otherwise."""

import time

from toolkit.tasks.busy import BusyCheck, Reading, machine_reading, others_share


def readings(*values):
    it = iter(values)
    return lambda: next(it)


def test_a_run_with_more_threads_than_cpus_on_an_idle_machine_is_not_busy():
    """A stream keeps its decoder, model and encoder runnable on 2 CPUs: load 3.4 after, but the
    machine's busy time is this process's own."""
    before = Reading(0.3, machine_busy_s=100.0, own_s=1.0, machine_cpus=2, at=0.0)
    after = Reading(3.4, machine_busy_s=219.0, own_s=119.0, machine_cpus=2, at=60.0)  # 1 s of others in 120 CPU-s
    assert others_share(before, after) < 0.01
    assert BusyCheck(readings(before, after), cpus=2).start().note() is None
    assert BusyCheck(readings(0.3, 3.4), cpus=2).start().note() is not None  # the load alone misreads it


def test_other_processes_taking_a_quarter_of_the_cpus_make_a_busy_run():
    before = Reading(0.5, machine_busy_s=100.0, own_s=1.0, machine_cpus=2, at=0.0)
    after = Reading(1.1, machine_busy_s=160.0, own_s=31.0, machine_cpus=2, at=40.0)  # others: 30 of 80 CPU-s
    line = BusyCheck(readings(before, after), cpus=2).start().note("figures")
    assert line is not None and line.startswith("warning: the machine was busy during this run (load average 0.5 before, "
                                                "1.1 after, on 2 CPUs; other processes took 38% of its CPU time)")


def test_without_cpu_times_or_over_a_moment_the_load_rule_decides():
    short = [Reading(0.2, 10.0, 1.0, 2, 0.0), Reading(3.1, 11.0, 1.0, 2, 0.5)]  # half a second: too short to say
    assert others_share(*short) is None
    assert BusyCheck(readings(*short), cpus=2).start().note() is not None  # 3.1 runnable after on 2 CPUs
    assert BusyCheck(readings(None, None), cpus=2).start().note() is None  # no load average, no CPU times


def test_this_machine_reading_counts_this_process():
    first = machine_reading()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn 50 ms of CPU
        pass
    second = machine_reading()
    if first.machine_cpus:  # Linux
        assert second.own_s - first.own_s >= 0.04 and second.machine_busy_s >= first.machine_busy_s
