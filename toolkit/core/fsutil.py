"""Atomic file writes: a reader (or a crash) never sees a half-written output.

Every output the toolkit writes goes to a temporary name in the same folder, is flushed
and fsync'ed, then renamed over the target (rename is atomic on POSIX within a folder).
Beside them, the checks a command makes *before* its work: an output path that can never be
written (`check_output_file` / `check_output_dir`), and a folder that is read-only or full
(`check_writable`), so the error comes first rather than after an hour of training.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create an output folder, with a clear error when a file is in the way."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{p}: exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{p}: cannot create folder ({e.strerror or e})") from e
    return p


def _existing_ancestor(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work is done, an output folder that can never be made: a file is in
    its place or above it. Creates nothing (a failed command leaves no empty folders behind)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{p}: exists and is not a folder")
    above = _existing_ancestor(p)
    if not above.is_dir():
        raise UserError(f"{above}: exists and is not a folder (needed as a folder for {p})")
    return p


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work is done, an output file path that can never be written: a
    folder is in its place, or a file is where one of its folders should be."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder, expected a file path")
    check_output_dir(p.parent if str(p.parent) else Path("."))
    return p


def check_writable(folder: str | os.PathLike[str], need_bytes: int = 0) -> Path:
    """Preflight for a long job: prove `folder` takes a file now, not after hours of work.

    Creates, writes, fsyncs and removes a probe file (a read-only mount, missing permissions or
    a full disk fail here, as `OSError`s would later), then checks `shutil.disk_usage` leaves at
    least `need_bytes` free. Every failure is one `UserError` line naming the folder.
    """
    p = Path(folder)
    if not p.is_dir():
        raise UserError(f"{p}: is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".toolkit-write-probe.", dir=p)
    except OSError as e:
        raise UserError(f"{p}: cannot write here ({_why(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"{p}: cannot write here ({_why(e)})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    if need_bytes > 0:
        free = shutil.disk_usage(p).free
        if free < need_bytes:
            raise UserError(f"{p}: only {_size(free)} free, this needs at least {_size(need_bytes)}; free some space or use another folder")
    return p


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno == errno.EROFS:
        return "read-only file system"
    return e.strerror or str(e)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success fsync it and rename it over `target`.

    On any exception the temporary file is removed and `target` is left untouched.
    """
    target = Path(target)
    if target.is_dir():
        raise UserError(f"{target}: is a folder, expected a file path")
    ensure_dir(target.parent if str(target.parent) else ".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


def regular_file_problem(path: str | os.PathLike[str], max_bytes: int | None = None) -> str | None:
    """Why `path` must not be read as an input file, or None. A FIFO or a device (`/dev/zero`)
    would block or never end, a folder is not a file, and a file over `max_bytes` would be read
    into memory whole: each is refused by name before any read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return e.strerror or str(e)
    if stat.S_ISDIR(st.st_mode):
        return "is a folder"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, socket or device)"
    if max_bytes is not None and st.st_size > max_bytes:
        return f"{st.st_size} bytes is over the {max_bytes} byte limit for this kind of file"
    return None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
