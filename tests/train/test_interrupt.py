"""Ctrl-C during `toolkit train`: the first stops after the step in progress with last.pt at that
step, one line and exit code 130, and the resumed run ends bit-identical to one that never
stopped; a second aborts at once and leaves the previous last.pt; DDP ranks stop together.

The signals are real SIGINTs. The single-process run sends its own from a step callback, to its
whole process group as a terminal does (the DataLoader worker gets one too), so the step is
exact whatever the machine's speed; the DDP run gets one from the test after its first epoch
line. Every child starts with Python's own SIGINT handler, as from an interactive shell: a
background job (CI runners, `cmd &` in a script) inherits SIGINT ignored, and then nothing stops.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT
from tests.train.test_resume import assert_same
from toolkit.net.checkpoint import load_checkpoint
from train import loop

# Run in the child: Python's SIGINT handler, and a Ctrl-C at the steps CTRL_C_AT names.
CHILD = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
at = {int(s) for s in os.environ.get("CTRL_C_AT", "").split(",") if s}
from train.logging import RunLogs
real = RunLogs.step_loss
def step_loss(self, loss, step, every, lr=None):
    real(self, loss, step, every, lr=lr)
    if step in at:
        os.killpg(os.getpgrp(), signal.SIGINT)
RunLogs.step_loss = step_loss
from toolkit.cli import main
main(sys.argv[1:])
"""
SMALL = ("--batch-size", "4", "--image-size", "32", "--recipe", "seed", "--device", "cpu", "--seed", "0")


def _start(*args: str, ctrl_c_at: str = "") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CTRL_C_AT=ctrl_c_at)
    env.pop("COLUMNS", None)
    return subprocess.Popen([sys.executable, "-c", CHILD, "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the run did not stop within {timeout} s:\n{err[-2000:]}")


def _rows(history):
    return [{k: v for k, v in row.items() if k != "images_per_s"} for row in history]  # all but the timing


def test_ctrl_c_saves_the_step_says_one_line_and_the_resume_matches(tiny_data, tmp_path, small_config):
    run = tmp_path / "run"
    proc = _start("--data", str(tiny_data), "--out", str(run), "--epochs", "2", "--workers", "1", *SMALL,
                  ctrl_c_at="4")  # 3 steps per epoch: step 4 is the first of epoch 2
    out, err = _finish(proc)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[-1] == f"interrupted at step 4 (epoch 2): resume with toolkit train --resume {run}", err
    assert sum("interrupted" in line for line in lines) == 1 and "Traceback" not in err and "trained" not in out
    ckpt = load_checkpoint(run / "last.pt")
    position = ckpt["training"]["position"]
    assert (position["step"], position["epoch"], position["batch"]) == (4, 1, 1)
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]

    full = tmp_path / "full"
    loop.run(small_config(tiny_data, full, epochs=2), progress=False)
    resumed = loop.run(small_config(tiny_data, None, epochs=2, resume=run), progress=False)
    assert resumed.steps == 6
    want, got = load_checkpoint(full / "last.pt"), load_checkpoint(run / "last.pt")
    assert_same(want["model"], got["model"], "model")
    for key in ("optimizer", "scheduler", "rng", "position"):
        assert_same(want["training"][key], got["training"][key], key)
    assert _rows(want["training"]["history"]) == _rows(got["training"]["history"])  # no partial row was kept


@contextlib.contextmanager
def _python_sigint():
    """Python's own SIGINT handler for the test (pytest may run with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_ctrl_c_aborts_the_checkpoint_write_and_keeps_the_last_pt(tiny_data, tmp_path, monkeypatch, capsys):
    """The first Ctrl-C at step 4; the second while last.pt for it is being written (its temporary
    complete, not yet renamed): the run stops there, and last.pt stays epoch 1's, intact."""
    import toolkit.cli as cli
    from toolkit.core import fsutil
    from train.logging import RunLogs

    run, sent = tmp_path / "run", []
    real_step_loss, real_replace = RunLogs.step_loss, os.replace

    def step_loss(self, loss, step, every, lr=None):
        real_step_loss(self, loss, step, every, lr=lr)
        if step == 4:
            sent.append(step)
            signal.raise_signal(signal.SIGINT)

    def replace(src, dst):
        if sent and str(dst).endswith("last.pt"):
            signal.raise_signal(signal.SIGINT)
        return real_replace(src, dst)

    monkeypatch.setattr(RunLogs, "step_loss", step_loss)
    monkeypatch.setattr(fsutil.os, "replace", replace)
    with _python_sigint(), pytest.raises(SystemExit) as info:
        cli.main(["train", "--data", str(tiny_data), "--out", str(run), "--epochs", "2", "--workers", "0", *SMALL])
    assert info.value.code == 130
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"aborted by a second Ctrl-C: {run / 'last.pt'} is left at step 3; resume with "
                       f"toolkit train --resume {run}"), err
    assert load_checkpoint(run / "last.pt")["training"]["position"]["step"] == 3  # verified: not half-written
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


@pytest.mark.slow
def test_ctrl_c_stops_every_ddp_rank_at_the_same_step(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    proc = _start("--data", str(tiny_data), "--out", str(run), "--epochs", "200", "--nproc", "2", "--workers", "0",
                  "--batch-size", "2", "--image-size", "32", "--recipe", "seed", "--device", "cpu")
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True).start()
    deadline, seen = time.monotonic() + 120, []
    while not any(line.startswith("epoch 1 step") for line in seen):
        try:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no first epoch line within 120 s:\n" + "".join(seen)[-2000:])
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the launcher and both ranks
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the ranks did not stop within 60 s of Ctrl-C")
    time.sleep(0.5)
    while not lines.empty():
        seen.append(lines.get())
    assert proc.returncode == 130, "".join(seen)[-2000:]
    match = re.fullmatch(rf"interrupted at step (\d+) \(epoch (\d+)\): resume with toolkit train --resume {re.escape(str(run))}",
                         seen[-1].strip())
    assert match, seen[-3:]
    step = int(match.group(1))
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["training"]["position"]["step"] == step < 200 * 3 and ckpt["training"]["world"] == 2
    assert _group_ends(proc.pid, within=15), "a rank of the job is still running"


def _group_ends(pgid: int, within: float) -> bool:
    """Whether every process of the group is gone within `within` s (an exited one lingers until
    whoever adopted it reaps it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
