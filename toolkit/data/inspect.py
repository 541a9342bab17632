"""What is in a data set: per-channel statistics, and a check that decodes every image.

Why statistics: the network normalises its inputs with per-channel mean/std; a user training on
their own data wants to see theirs beside the original's (spec.py). Why the check decodes every
file: the original set lost thousands of files in merging and some JPEGs were truncated; a name
listing cannot tell, only decoding can, and it is better to learn that before a 10-hour run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.errors import UserError
from ..render.imageio import open_image
from .holdout import evenly
from .reader import PairDataset, SourceArg, open_dataset


def _indices(n: int, limit: int | None) -> list[int]:
    """All indices, or `limit` of them spread evenly (every background, not just the first)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    return evenly(n, limit)


def channel_stats(
    dataset: PairDataset, size: tuple[int, int] | None = None, limit: int | None = None
) -> dict[str, dict[str, list[float]]]:
    """Per kind, per channel mean and std over the samples, in [0, 1] units.

    Returns `{"bg": {"mean": [r, g, b], "std": [...]}, "fgbg": ..., "mask": {"mean": [m], ...},
    "depth": ...}`. Samples are weighted as training sees them (a background counts once per
    composite that uses it). `size=(h, w)` resizes first, as training would; `limit` takes that
    many samples spread evenly over the sorted list.
    """
    idx = _indices(len(dataset), limit)
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: Counter[str] = Counter()
    for i in idx:
        for kind, a in dataset.load(i, size).items():
            a = a.astype(np.float64)
            sums[kind] = sums.get(kind, 0) + a.sum(axis=(1, 2))
            squares[kind] = squares.get(kind, 0) + (a * a).sum(axis=(1, 2))
            counts[kind] += a.shape[1] * a.shape[2]
    out: dict[str, dict[str, list[float]]] = {}
    for kind, total in sums.items():
        mean = total / counts[kind]
        var = np.maximum(squares[kind] / counts[kind] - mean * mean, 0.0)
        out[kind] = {"mean": [float(v) for v in mean], "std": [float(v) for v in np.sqrt(var)]}
    return out


@dataclass
class DataCheckReport:
    """The outcome of `check_dataset`; `ok` is what the `data check` exit code follows."""

    sources: list[str]
    pairs: int
    backgrounds_found: int
    backgrounds_used: int
    found: dict[str, int]
    decoded: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    unpaired: list[str] = field(default_factory=list)  # the fgbg/mask/depth files behind `skipped`
    odd: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No pairs, an unreadable file or an unsafe zip member fail; the rest are notes."""
        return self.pairs > 0 and not self.unreadable and not self.unsafe

    def problems(self) -> list[str]:
        out = []
        if self.pairs == 0:
            out.append("no image pairs")
        if self.unreadable:
            out.append(f"{len(self.unreadable)} unreadable files")
        if self.unsafe:
            out.append(f"{len(self.unsafe)} unsafe zip members")
        return out

    def rows(self) -> list[tuple[str, str, str]]:
        """(item, value, verdict) rows for a table; verdict is "ok", "note" or "FAIL"."""
        def verdict(bad: bool, fail: bool = True) -> str:
            return ("FAIL" if fail else "note") if bad else "ok"

        sizes = "; ".join(
            f"{kind} " + ", ".join(f"{s} ({n})" for s, n in sorted(v.items()))
            for kind, v in self.sizes.items()
        )
        mixed = any(len(v) > 1 for v in self.sizes.values())
        return [
            ("pairs", str(self.pairs), verdict(self.pairs == 0)),
            ("files found", ", ".join(f"{n} {k}" for k, n in self.found.items()), "ok"),
            ("backgrounds in use", f"{self.backgrounds_used} of {self.backgrounds_found}",
             verdict(self.backgrounds_used < self.backgrounds_found, fail=False)),
            ("images decoded", str(self.decoded), "ok"),
            ("unreadable", str(len(self.unreadable)), verdict(bool(self.unreadable))),
            ("unsafe zip members", str(len(self.unsafe)), verdict(bool(self.unsafe))),
            ("skipped (unpaired)", f"{sum(self.skipped.values())}" + (f" ({len(self.unpaired)} files)" if self.unpaired else ""),
             verdict(bool(self.skipped), fail=False)),
            ("odd names", str(len(self.odd)), verdict(bool(self.odd), fail=False)),
            ("image sizes", sizes or "-", verdict(mixed, fail=False)),
        ]

    def details(self, limit: int = 10) -> list[str]:
        """Lines naming the files behind each problem or note (at most `limit` per list)."""
        lines: list[str] = []

        def listing(title: str, items: list[str]) -> None:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {s}" for s in items[:limit])
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")

        listing("unreadable", [f"{n}: {why}" for n, why in self.unreadable])
        listing("unsafe zip members (never opened)", self.unsafe)
        listing("skipped", [f"{why}: {n}" for why, n in self.skipped.items()])
        listing("unpaired files", self.unpaired)
        listing("odd names", self.odd)
        return lines

    def render(self, limit: int = 10) -> str:
        """Plain-text report (the CLI draws a Rich table from `rows()` instead)."""
        head = [f"data check of {', '.join(self.sources)}: {'ok' if self.ok else 'FAILED'}"]
        head += [f"  {item}: {value} [{v}]" for item, value, v in self.rows()]
        return "\n".join(head + self.details(limit))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unreadable"] = [{"file": n, "reason": why} for n, why in self.unreadable]
        d["ok"] = self.ok
        d["problems"] = self.problems()
        return d


def _unpaired(ds: PairDataset) -> list[str]:
    """The fgbg, mask and depth files no sample uses: the names a user needs to fix a pairing,
    where `skipped` only counts the reasons. (An unused background is a note of its own.)"""
    used = {ref for sample in ds.samples for ref in sample.refs.values()}
    return [str(ref) for kind, ref in ds.files if kind != "bg" and ref not in used]


def check_dataset(
    source: SourceArg, progress: Callable[[int, int], None] | None = None
) -> DataCheckReport:
    """Scan `source` like training would, then decode every image file found, paired or not.

    Unreadable zip files and folders are reported, not raised (a missing source still raises
    `UserError`). `progress(done, total)` is called after each file, for a progress bar.
    """
    ds = open_dataset(source, strict=False, allow_empty=True)
    unreadable = list(ds.unreadable)
    sizes: dict[str, Counter[str]] = {}
    total = len(ds.files)
    try:
        for n, (kind, ref) in enumerate(ds.files, start=1):
            name = str(ref)
            try:
                im = open_image(ds.read_bytes(ref), name=name)
                sizes.setdefault(kind, Counter())[f"{im.width}x{im.height}"] += 1
            except UserError as e:
                msg = str(e)
                unreadable.append((name, msg[len(name) + 2:] if msg.startswith(name + ": ") else msg))
            if progress is not None:
                progress(n, total)
    finally:
        ds.close()
    return DataCheckReport(
        sources=ds.sources,
        pairs=len(ds),
        backgrounds_found=ds.found["bg"],
        backgrounds_used=len(ds.backgrounds),
        found=dict(ds.found),
        decoded=total - (len(unreadable) - len(ds.unreadable)),
        unreadable=unreadable,
        skipped=dict(ds.skipped),
        unpaired=_unpaired(ds),
        odd=list(ds.odd),
        unsafe=list(ds.unsafe),
        sizes={k: dict(sorted(v.items())) for k, v in sizes.items()},
    )
