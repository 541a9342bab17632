"""One reader for the data set as its users hold it: folders, zip files, or both mixed.

Why no extraction: the original set is 400k small files shipped as 12 zips; unzipping them was
the original's pain (hours, and a disk full of inodes). Zip members are read by name with
`zipfile`, straight from the archive. Why pickling matters: a PyTorch DataLoader copies the
dataset into worker processes; a zip handle shared across a fork shares one file offset and
corrupts reads, so handles are opened lazily and cached per process id, and dropped on pickle.

Zip members are untrusted names: `scan.py` never lists those that could point outside, nor zip bombs.

Pairing is by name only (names.py): a sample needs a composite, a mask and a depth map with one
key `combined_s<k>_p<m>_it<it>` and a background `Shelves_<k>`. Anything else is skipped and
counted by reason, never a crash: the original set lost a few thousand files in merging.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..core.fsutil import regular_file_problem
from ..render.imageio import read_gray, read_rgb
from .info import depth_convention_of, read_info
from .names import KINDS, PairName
from .scan import MAX_MEMBER_BYTES, PAIR_KINDS, FileRef, Sample, Scanner, bomb_reason, unsafe_member_reason

SourceArg = str | os.PathLike | Sequence[str | os.PathLike]


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
        infos: dict[str, dict] | None = None,
    ):
        self.samples = samples
        self.skipped = skipped
        self.odd = odd
        self.unsafe = unsafe
        self.sources = sources
        self.found = found
        self.files = files or []
        self.unreadable = unreadable or []
        self.infos = infos or {}  # each source's `dataset.json` fields, by path
        self.depth_convention = depth_convention_of(self.infos)  # which way its depth grey runs
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
            reason = bomb_reason(zf.getinfo(ref.member))
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


def _pair(scanner: Scanner) -> tuple[list[Sample], dict[str, int]]:
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
    scanner = Scanner(strict=strict)
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
        infos={str(p): read_info(p) for p in scanner.infos},
    )


def samples_of(data: PairDataset | Iterable[Sample]) -> list[Sample]:
    """The sample list of a dataset, or the samples themselves (for split and stats helpers)."""
    if isinstance(data, PairDataset):
        return data.samples
    return list(data)
