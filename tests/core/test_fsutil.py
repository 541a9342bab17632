"""Atomic writes and the preflight checks: a full disk or a read-only folder is one clear line
before the work starts, and an output path that can never be written is refused up front."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from tests.conftest import run_python
from toolkit.core import fsutil
from toolkit.core.errors import UserError

# Run in a child without root's permission override (tests/conftest.py: run_python), so a
# read-only folder stops it even where the suite runs as root (CI does); it prints the error.
CHECK_WRITABLE = """
import sys
from toolkit.core import fsutil
from toolkit.core.errors import UserError
try:
    fsutil.check_writable(sys.argv[1])
    print("writable")
except UserError as e:
    print(f"error: {e}")
"""
Usage = namedtuple("Usage", "total used free")


def test_atomic_write_leaves_no_temp_file_and_keeps_the_old_file_on_failure(tmp_path):
    target = fsutil.write_text_atomic(tmp_path / "a.txt", "one")
    with pytest.raises(RuntimeError), fsutil.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_check_writable_passes_and_leaves_nothing(tmp_path):
    assert fsutil.check_writable(tmp_path, need_bytes=1) == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_check_writable_refuses_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(100 * 2**20, 100 * 2**20 - 5 * 2**20, 5 * 2**20))
    with pytest.raises(UserError, match=r"only 5\.0 MiB free, this needs at least 64\.0 MiB") as e:
        fsutil.check_writable(tmp_path, need_bytes=64 * 2**20)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_check_writable_turns_enospc_into_one_line(tmp_path, monkeypatch):
    """A disk with no room for even the probe: the OSError of the real write becomes the message."""
    import errno

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", full)
    with pytest.raises(UserError, match="cannot write here \\(no space left on the device\\)"):
        fsutil.check_writable(tmp_path)


def test_check_writable_refuses_a_read_only_folder(tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    ro.chmod(0o555)
    try:
        refused = run_python(CHECK_WRITABLE, str(ro), without_dac_override=True)
        allowed = run_python(CHECK_WRITABLE, str(rw), without_dac_override=True)  # the same child can write elsewhere
    finally:
        ro.chmod(0o755)
    assert refused.returncode == 0 and refused.stdout.startswith("error: ") and "ro: cannot write here" in refused.stdout, refused
    assert allowed.stdout.strip() == "writable", allowed


def test_check_writable_needs_a_folder(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        fsutil.check_writable(tmp_path / "missing")


def test_output_path_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    assert fsutil.check_output_file(tmp_path / "new" / "deeper" / "r.json")
    assert fsutil.check_output_dir(tmp_path / "new" / "out")
    assert not (tmp_path / "new").exists()  # checks create nothing
    with pytest.raises(UserError, match="dir: is a folder, expected a file path"):
        fsutil.check_output_file(tmp_path / "dir")
    with pytest.raises(UserError, match="file: exists and is not a folder"):
        fsutil.check_output_file(tmp_path / "file" / "r.json")
    with pytest.raises(UserError, match="file: exists and is not a folder"):
        fsutil.check_output_dir(tmp_path / "file")
    with pytest.raises(UserError, match="file: exists and is not a folder"):
        fsutil.check_output_dir(tmp_path / "file" / "sub" / "out")


# --- training's preflight (train.loop.run calls check_writable right after making the run folder) ---


def _config(out: Path, **kw):
    from train.config import TrainConfig

    return TrainConfig(out=out, epochs=1, batch_size=2, image_size=32, device="cpu", workers=0, tensorboard=False,
                       synth={"backgrounds": 2, "foregrounds": 1, "placements": 1, "size": 32}, **kw)


def test_training_refuses_a_full_disk_before_it_starts(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from train import loop

    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(2**30, 2**30 - 2**20, 2**20))
    with pytest.raises(UserError, match=r"run: only 1\.0 MiB free"):
        loop.run(_config(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()  # the folder it made is gone again; no data set was made


def test_training_refuses_a_read_only_run_folder(tmp_path):
    pytest.importorskip("torch")
    code = """
import sys
from pathlib import Path
from tests.core.test_fsutil import _config
from toolkit.core.errors import UserError
from train import loop
try:
    loop.run(_config(Path(sys.argv[1])), progress=False)
    print("trained")
except UserError as e:
    print(f"error: {e}")
"""
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        r = run_python(code, str(run), without_dac_override=True)
    finally:
        run.chmod(0o755)
    assert r.returncode == 0 and r.stdout.startswith("error: ") and "run: cannot write here" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert list(run.iterdir()) == []  # refused before the data set or a log was written
