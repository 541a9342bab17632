"""Crash safety: `toolkit train` killed with SIGKILL, at a random moment and in the middle of a
checkpoint write, then resumed, ends with exactly the weights of a run that never stopped.

Real processes and real signals (SIGKILL: no handler, no `finally`, no flush). The moments are
drawn from a seeded RNG relative to the run's own pace (the time between two checkpoints it
writes), so the schedule is reproducible whatever the machine's speed. The kill during a write
watches the run folder for the temporary file `toolkit.core.fsutil.atomic_path` writes beside
`last.pt` and kills as soon as it appears; the previous `last.pt` must then still load (hash
checked) and the resumed run must ignore the half-written file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.train.test_resume import assert_same
from toolkit.net.checkpoint import load_checkpoint

EPOCHS = 5  # 3 steps per epoch on the tiny set at batch 4: 15 steps
SEED = 20240607  # the kill schedule


def _train(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = "import sys\nfrom toolkit.cli import main\nmain(sys.argv[1:])\n"
    return subprocess.Popen([sys.executable, "-c", code, "train", *args, "--device", "cpu", "--workers", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)


def _fresh(data: Path, out: Path) -> subprocess.Popen:
    return _train("--data", str(data), "--out", str(out), "--epochs", str(EPOCHS), "--batch-size", "4",
                  "--image-size", "32", "--seed", "0", "--deterministic", "--log-every", "1")


def _finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino  # os.replace gives last.pt a new inode at every write
    except FileNotFoundError:
        return None


def _wait(proc: subprocess.Popen, until, timeout: float = 120, poll: float = 0.0005):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = until()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before the moment to kill it came")
        time.sleep(poll)
    pytest.fail("timed out waiting for the moment to kill the run")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _temp_of(run: Path, name: str) -> list[Path]:
    return [run / n for n in os.listdir(run) if n.startswith(f".{name}.") and n.endswith(".tmp")]


def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_weights(tiny_data, tmp_path):
    rnd = random.Random(SEED)
    full, run = tmp_path / "full", tmp_path / "run"
    reference = _fresh(tiny_data, full)  # the run that never stops, beside the one that is killed
    victim = _fresh(tiny_data, run)
    last = run / "last.pt"

    # 1. a random moment inside an epoch: after two checkpoints, at a seeded fraction of the
    #    time between them (so mid-epoch, between steps or inside one: wherever that falls).
    first = _wait(victim, lambda: _inode(last))
    t1 = time.monotonic()
    _wait(victim, lambda: _inode(last) not in (None, first))
    epoch_seconds = time.monotonic() - t1
    time.sleep(rnd.uniform(0.1, 0.9) * epoch_seconds)
    _kill(victim)
    stopped_at = load_checkpoint(last)["training"]["position"]["step"]
    assert 0 < stopped_at < 3 * EPOCHS

    # 2. during a checkpoint write: the resumed run is killed the moment its temporary file for
    #    last.pt appears (so torch.save has started, the rename has not happened).
    before = last.read_bytes()
    stale = set(_temp_of(run, "last.pt"))
    victim = _train("--resume", str(run))
    _wait(victim, lambda: set(_temp_of(run, "last.pt")) - stale)
    _kill(victim)
    assert set(_temp_of(run, "last.pt")) - stale, "killed after the write finished: not a kill mid-write"
    assert last.read_bytes() == before  # the half-written checkpoint never replaced the good one
    assert load_checkpoint(last)["training"]["position"]["step"] == stopped_at  # and it still verifies

    # 3. resume to the end.
    _finish(_train("--resume", str(run)))
    _finish(reference)

    want, got = load_checkpoint(full / "last.pt"), load_checkpoint(last)
    assert got["training"]["position"]["step"] == want["training"]["position"]["step"] == 3 * EPOCHS
    assert_same(want["model"], got["model"], "model")  # torch.equal, tensor by tensor
    for key in ("optimizer", "scheduler", "rng"):
        assert_same(want["training"][key], got["training"][key], key)
    for i, (a, b) in enumerate(zip(want["training"]["history"], got["training"]["history"], strict=True)):
        if float(a["epoch"]).is_integer():  # whole epochs: the same losses, to the last bit
            assert a["train_loss"] == b["train_loss"], i


class _Killed(BaseException):
    """Stands for SIGKILL at one exact point (between two writes): no except clause catches it."""


def test_a_kill_between_best_and_last_keeps_best_pt_right(tiny_data, tmp_path, small_config, monkeypatch):
    """Deterministic: an epoch that improves writes best.pt, then last.pt. The kill lands between
    the two, in an epoch after the first (so an earlier last.pt exists). The resumed run redoes
    that epoch and must end with the uninterrupted run's best.pt and last.pt."""
    from train import checkpointer, loop

    real, writes = checkpointer.save_checkpoint, []

    def spy(path, ckpt):
        writes.append(Path(path).name)
        return real(path, ckpt)

    monkeypatch.setattr(checkpointer, "save_checkpoint", spy)
    # tail per_head: a run on this tiny set that improves after its first epoch (the joint tail's
    # does not, and the kill needs an improving epoch after one that wrote last.pt)
    loop.run(small_config(tiny_data, tmp_path / "full", epochs=3, recipe="improved", tail="per_head"), progress=False)
    # the write positions where a kill is "between best.pt and last.pt, with an earlier last.pt"
    points = [i for i in range(1, len(writes)) if writes[i] == "last.pt" and writes[i - 1] == "best.pt"
              and "last.pt" in writes[:i - 1]]
    assert points, f"this run never improved after its first epoch: {writes}"
    kill_at = points[-1]

    writes.clear()

    def dies_between(path, ckpt):
        if len(writes) == kill_at:
            raise _Killed
        return spy(path, ckpt)

    monkeypatch.setattr(checkpointer, "save_checkpoint", dies_between)
    run = tmp_path / "run"
    with pytest.raises(_Killed):
        loop.run(small_config(tiny_data, run, epochs=3, recipe="improved", tail="per_head"), progress=False)
    monkeypatch.setattr(checkpointer, "save_checkpoint", real)
    loop.run(small_config(tiny_data, None, epochs=3, resume=run, recipe="improved", tail="per_head"), progress=False)
    for name in ("best.pt", "last.pt"):
        want, got = load_checkpoint(tmp_path / "full" / name), load_checkpoint(run / name)
        assert (got["epoch"], got["step"]) == (want["epoch"], want["step"]), name
        assert_same(want["model"], got["model"], f"{name} model")
