"""Walking the data set's sources: folders and zip files, every file classified by folder and name.

Zip members are untrusted names: absolute paths, `..` components and drive letters are never
opened (listed in `unsafe`), nor are members whose compression ratio says "zip bomb". Files are
never read here: the reader opens what the scan found.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from .info import INFO_NAME
from .names import (
    PairName,
    is_image_name,
    kind_of_path,
    looks_like_background,
    parse_background_name,
    parse_pair_name,
)

PAIR_KINDS = ("fgbg", "mask", "depth")

# Zip-bomb guard: a member over MAX_BOMB_BYTES uncompressed that inflates more than
# MAX_COMPRESSION_RATIO times is refused; so is anything over MAX_MEMBER_BYTES (no image of
# this data set comes near either: a 160 x 160 JPEG is ~5 kB).
MAX_COMPRESSION_RATIO = 200
MAX_BOMB_BYTES = 50 * 1024 * 1024
MAX_MEMBER_BYTES = 1024 * 1024 * 1024

# Operating-system litter that is not data and not worth reporting as "odd".
_IGNORED_DIRS = {"__macosx"}
_IGNORED_FILES = {"thumbs.db", "desktop.ini"}
_DRIVE_RE = re.compile(r"^[A-Za-z]:")

@dataclass(frozen=True)
class FileRef:
    """Where one image lives: a plain file (`member` None) or a member of a zip file."""

    container: str
    member: str | None = None

    @property
    def in_zip(self) -> bool:
        return self.member is not None

    def __str__(self) -> str:
        return f"{self.container}:{self.member}" if self.member is not None else self.container


@dataclass(frozen=True)
class Sample:
    """One training example: its key, ids, and where its four images live (`refs[kind]`)."""

    key: str
    bg: int
    fg: int
    it: int
    refs: Mapping[str, FileRef] = field(hash=False)


def unsafe_member_reason(name: str) -> str | None:
    """Why a zip member name must never be opened (it could point outside), or None."""
    n = name.replace("\\", "/")
    if "\x00" in n:
        return "NUL in name"
    if n.startswith("/"):
        return "absolute path"
    if _DRIVE_RE.match(n):
        return "drive letter"
    if ".." in n.split("/"):
        return "'..' in path"
    return None


def bomb_reason(info: zipfile.ZipInfo) -> str | None:
    size, packed = info.file_size, max(info.compress_size, 1)
    if size > MAX_MEMBER_BYTES:
        return f"{size} bytes uncompressed"
    if size > MAX_BOMB_BYTES and size / packed > MAX_COMPRESSION_RATIO:
        return f"compression ratio {size // packed}:1, a zip bomb?"
    return None


def _hidden(component: str) -> bool:
    c = component.lower()
    return c.startswith(".") or c in _IGNORED_DIRS or c in _IGNORED_FILES


class Scanner:
    """Walks sources, classifies every file by folder and name, and remembers the first of each."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.bgs: dict[int, FileRef] = {}
        self.pairs: dict[str, dict[PairName, FileRef]] = {k: {} for k in PAIR_KINDS}
        self.all_files: list[tuple[str, FileRef]] = []
        self.duplicates: Counter[str] = Counter()
        self.odd: list[str] = []
        self.unsafe: list[str] = []
        self.unreadable: list[tuple[str, str]] = []
        self.infos: list[Path] = []  # each source folder's `dataset.json` (`toolkit.data.info`)

    def _bad(self, where: str, why: str) -> None:
        if self.strict:
            raise UserError(f"{where}: {why}")
        self.unreadable.append((where, why))

    def scan(self, source: str | os.PathLike) -> None:
        path = Path(source)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        root_name = Path(os.path.abspath(path)).name
        if path.is_dir():
            self._scan_folder(path, (root_name,))
        elif path.is_file():
            self._scan_zip(path, ())
        else:
            raise UserError(f"{path}: not a folder or a zip file")

    def _scan_folder(self, root: Path, base: tuple[str, ...]) -> None:
        def onerror(e: OSError) -> None:
            self._bad(str(e.filename or root), f"cannot read folder ({e.strerror or e})")

        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            rel = Path(dirpath).relative_to(root).parts
            for fn in sorted(filenames):
                if _hidden(fn):
                    continue
                full = Path(dirpath) / fn
                if fn == INFO_NAME and not rel:
                    self.infos.append(full)
                elif fn.lower().endswith(".zip"):
                    self._scan_zip(full, base + rel)
                else:
                    self._classify(base + rel, fn, FileRef(str(full)))

    def _scan_zip(self, path: Path, base: tuple[str, ...]) -> None:
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            why = getattr(e, "strerror", None) or str(e) or type(e).__name__
            self._bad(str(path), f"not a readable zip file ({why})")
            return
        parts = base + (path.name,)
        for info in sorted(infos, key=lambda i: i.filename):
            if info.is_dir():
                continue
            name = info.filename
            reason = unsafe_member_reason(name) or bomb_reason(info)
            if reason:
                self.unsafe.append(f"{path}:{name} ({reason})")
                continue
            comps = [c for c in name.replace("\\", "/").split("/") if c not in ("", ".")]
            if not comps or any(_hidden(c) for c in comps):
                continue
            self._classify(parts + tuple(comps[:-1]), comps[-1], FileRef(str(path), name))

    def _classify(self, dirs: tuple[str, ...], filename: str, ref: FileRef) -> None:
        if not is_image_name(filename):
            self.odd.append(str(ref))
            return
        kind = kind_of_path(dirs)
        if kind == "bg" or (kind is None and looks_like_background(filename)):
            k = parse_background_name(filename)
            if k is None:
                self.odd.append(str(ref))
            elif k in self.bgs:
                self.duplicates["duplicate bg name"] += 1
                self.all_files.append(("bg", ref))
            else:
                self.bgs[k] = ref
                self.all_files.append(("bg", ref))
            return
        pn = parse_pair_name(filename) if kind is not None else None
        if kind is None or pn is None:
            self.odd.append(str(ref))
            return
        self.all_files.append((kind, ref))
        if pn in self.pairs[kind]:
            self.duplicates[f"duplicate {kind} name"] += 1
        else:
            self.pairs[kind][pn] = ref
