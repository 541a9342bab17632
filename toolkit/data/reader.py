"""One reader for the data set as its users hold it: folders, zip files, or both mixed.

Why no extraction: the original set is 400k small files shipped as 12 zips; unzipping them was
the original's pain (hours, and a disk full of inodes). Zip members are read by name with
`zipfile`, straight from the archive. Why pickling matters: a PyTorch DataLoader copies the
dataset into worker processes; a zip handle shared across a fork shares one file offset and
corrupts reads, so handles are opened lazily and cached per process id, and dropped on pickle.

Zip members are untrusted names: absolute paths, `..` components and drive letters are never
opened (listed in `unsafe`), nor are members whose compression ratio says "zip bomb".

Pairing is by name only (names.py): a sample needs a composite, a mask and a depth map with one
key `combined_s<k>_p<m>_it<it>` and a background `Shelves_<k>`. Anything else is skipped and
counted by reason, never a crash: the original set lost a few thousand files in merging.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fsutil import regular_file_problem
from ..imageio import read_gray, read_rgb
from .names import (
    KINDS,
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

SourceArg = str | os.PathLike | Sequence[str | os.PathLike]


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


def _bomb_reason(info: zipfile.ZipInfo) -> str | None:
    size, packed = info.file_size, max(info.compress_size, 1)
    if size > MAX_MEMBER_BYTES:
        return f"{size} bytes uncompressed"
    if size > MAX_BOMB_BYTES and size / packed > MAX_COMPRESSION_RATIO:
        return f"compression ratio {size // packed}:1, a zip bomb?"
    return None


def _hidden(component: str) -> bool:
    c = component.lower()
    return c.startswith(".") or c in _IGNORED_DIRS or c in _IGNORED_FILES


class _Scanner:
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
                if fn.lower().endswith(".zip"):
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
            reason = unsafe_member_reason(name) or _bomb_reason(info)
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


class PairDataset:
    """The paired samples of one or more sources, plus what was skipped and why.

    Picklable (zip handles are per process and never pickled). `load(i, size)` gives the float32
    arrays a training step wants; `read_bytes(ref)` gives raw file bytes (checks, tools).
    """

    def __init__(
        self,
        samples: list[Sample],
        skipped: dict[str, int],
        odd: list[str],
        unsafe: list[str],
        sources: list[str],
        found: dict[str, int],
        files: list[tuple[str, FileRef]] | None = None,
        unreadable: list[tuple[str, str]] | None = None,
    ):
        self.samples = samples
        self.skipped = skipped
        self.odd = odd
        self.unsafe = unsafe
        self.sources = sources
        self.found = found
        self.files = files or []
        self.unreadable = unreadable or []
        self._pid = os.getpid()
        self._zips: dict[str, zipfile.ZipFile] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"PairDataset({', '.join(self.sources)}: {len(self)} samples, "
            f"{len(self.backgrounds)} backgrounds, {sum(self.skipped.values())} skipped)"
        )

    @property
    def backgrounds(self) -> list[int]:
        """Sorted ids of the backgrounds that at least one sample uses."""
        return sorted({s.bg for s in self.samples})

    # -- pickling: never carry a zip handle into another process ------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_zips"] = {}
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def close(self) -> None:
        """Close this process's zip handles (they reopen lazily if used again)."""
        if self._pid == os.getpid():
            for zf in self._zips.values():
                zf.close()
        self._zips = {}

    def __enter__(self) -> PairDataset:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _zip(self, container: str) -> zipfile.ZipFile:
        pid = os.getpid()
        if self._pid != pid:  # forked or unpickled: the parent's handles are not ours
            self._zips, self._pid = {}, pid
        zf = self._zips.get(container)
        if zf is None:
            try:
                zf = zipfile.ZipFile(container)
            except (zipfile.BadZipFile, OSError, ValueError) as e:
                raise UserError(f"{container}: not a readable zip file ({e})") from None
            self._zips[container] = zf
        return zf

    def read_bytes(self, ref: FileRef) -> bytes:
        """The raw bytes of one file or zip member, with a one-line error naming it."""
        if ref.member is None:
            problem = regular_file_problem(ref.container, MAX_MEMBER_BYTES)
            if problem is not None:  # a FIFO named like an image would block the read
                raise UserError(f"{ref}: cannot read ({problem})")
            try:
                return Path(ref.container).read_bytes()
            except OSError as e:
                raise UserError(f"{ref}: cannot read ({e.strerror or e})") from None
        reason = unsafe_member_reason(ref.member)
        if reason:
            raise UserError(f"{ref}: refused zip member ({reason})")
        zf = self._zip(ref.container)
        try:
            reason = _bomb_reason(zf.getinfo(ref.member))
            if reason:
                raise UserError(f"{ref}: refused zip member ({reason})")
            return zf.read(ref.member)
        except UserError:
            raise
        except KeyError:
            raise UserError(f"{ref}: no such member in the zip file") from None
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, OSError, EOFError) as e:
            raise UserError(f"{ref}: cannot read zip member ({e})") from None

    def load(self, i: int, size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Sample `i` as float32 arrays in [0, 1]: bg, fgbg `[3,H,W]`, mask, depth `[1,H,W]`.

        `size=(h, w)` resizes all four bilinearly; with None they take the composite's size.
        The mask is left soft (JPEG noise and all): thresholding is the metric's business.
        """
        s = self.samples[i]

        def rd(kind: str, reader, target):
            ref = s.refs[kind]
            return reader(self.read_bytes(ref), name=str(ref), size=target)

        fgbg = rd("fgbg", read_rgb, size)
        target = tuple(size) if size is not None else fgbg.shape[:2]
        bg = rd("bg", read_rgb, target)
        mask = rd("mask", read_gray, target)
        depth = rd("depth", read_gray, target)
        return {
            "bg": np.ascontiguousarray(bg.transpose(2, 0, 1)),
            "fgbg": np.ascontiguousarray(fgbg.transpose(2, 0, 1)),
            "mask": mask[None].copy(),
            "depth": depth[None].copy(),
        }

    def load_batch(self, indices: Iterable[int], size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Samples `indices` stacked: bg, fgbg `[N, 3, H, W]`, mask, depth `[N, 1, H, W]` (see `load`)."""
        items = [self.load(int(i), size) for i in indices]
        return {k: np.stack([it[k] for it in items]).astype(np.float32) for k in ("bg", "fgbg", "mask", "depth")}

    def iter_files(self) -> Iterator[tuple[str, FileRef]]:
        """Every image file found (paired or not) with its kind, in scan order."""
        return iter(self.files)


def _as_sources(source: SourceArg) -> list[str | os.PathLike]:
    if isinstance(source, (str, os.PathLike)):
        return [source]
    items = list(source)
    if not items:
        raise UserError("no data source given")
    return items


def _pair(scanner: _Scanner) -> tuple[list[Sample], dict[str, int]]:
    skipped: Counter[str] = Counter(scanner.duplicates)
    samples: list[Sample] = []
    keys: set[PairName] = set()
    for kind in PAIR_KINDS:
        keys.update(scanner.pairs[kind])
    for pn in sorted(keys):
        present = [k for k in PAIR_KINDS if pn in scanner.pairs[k]]
        if len(present) < len(PAIR_KINDS):
            missing = [k for k in PAIR_KINDS if k not in present]
            skipped[f"{'+'.join(present)} without {' and '.join(missing)}"] += 1
            continue
        if pn.bg not in scanner.bgs:
            skipped[f"no background for s{pn.bg}"] += 1
            continue
        refs = {"bg": scanner.bgs[pn.bg]}
        refs.update({k: scanner.pairs[k][pn] for k in PAIR_KINDS})
        samples.append(Sample(pn.key, pn.bg, pn.fg, pn.it, {k: refs[k] for k in KINDS}))
    return samples, dict(sorted(skipped.items()))


def open_dataset(source: SourceArg, *, strict: bool = True, allow_empty: bool = False) -> PairDataset:
    """Scan folders and/or zip files and pair their images by name.

    `source`: a folder holding the layout (sub-folders and/or zips, mixed), a zip file, or a
    list of those. Samples are sorted by (s, p, it). `strict` (default) raises `UserError` on an
    unreadable zip or folder; with `strict=False` they are listed in `unreadable` instead (the
    data check reports them). With no pairs at all, `UserError` names the source and what it
    found, unless `allow_empty`.
    """
    sources = _as_sources(source)
    scanner = _Scanner(strict=strict)
    for src in sources:
        scanner.scan(src)
    samples, skipped = _pair(scanner)
    found = {"bg": len(scanner.bgs)}
    found.update({k: len(scanner.pairs[k]) for k in PAIR_KINDS})
    label = ", ".join(str(s) for s in sources)
    if not samples and not allow_empty:
        extra = f", {len(scanner.unsafe)} unsafe zip members" if scanner.unsafe else ""
        raise UserError(
            f"{label}: no image pairs found ({found['fgbg']} fgbg, {found['mask']} mask, "
            f"{found['depth']} depth, {found['bg']} backgrounds, {len(scanner.odd)} other files"
            f"{extra})"
        )
    return PairDataset(
        samples=samples,
        skipped=skipped,
        odd=scanner.odd,
        unsafe=scanner.unsafe,
        sources=[str(s) for s in sources],
        found=found,
        files=scanner.all_files,
        unreadable=scanner.unreadable,
    )


def samples_of(data: PairDataset | Iterable[Sample]) -> list[Sample]:
    """The sample list of a dataset, or the samples themselves (for split and stats helpers)."""
    if isinstance(data, PairDataset):
        return data.samples
    return list(data)
