"""File names and folder names of the data set: the pairing key lives in the name.

The original set (dataset.md) pairs a composite, its mask and its depth map only by file name,
`combined_s<k>_p<m>_it<it>.<ext>`, and finds the background `s<k>` as `Shelves_<k>.<ext>`. The
kind of a file (composite, mask or depth) is not in its name at all: it is the folder (or the
zip file) it sits in. This module is the single place that knows those rules, so the reader,
the checker and the synthetic generator cannot drift apart. Pure Python, no numpy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

KINDS: tuple[str, ...] = ("bg", "fgbg", "mask", "depth")

# Folder names (and zip stems) of the original layout, one per kind.
FOLDER_NAMES: dict[str, str] = {
    "bg": "Background",
    "fgbg": "OverlayedImages",
    "mask": "OverlayedMasks",
    "depth": "DepthImage",
}

IMAGE_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "png", "bmp", "webp"})

# Folder / zip-stem names accepted for each kind, compared after `_normalise` (lower case,
# only letters and digits, trailing digits dropped: "fg_bg", "FG-BG" and "OverlayedImages2"
# all become "fgbg" / "overlayedimages"). The original shipped each kind as four numbered
# zips, hence the trailing digits; the variants are spellings seen in forks of the set.
KIND_ALIASES: dict[str, frozenset[str]] = {
    "bg": frozenset({"background", "backgrounds", "bg", "bgs", "bgimages", "shelves"}),
    "fgbg": frozenset({
        "overlayedimages", "overlayedimage", "overlaidimages", "overlayimages", "overlayed",
        "fgbg", "fgbgs", "fgbgimages", "fgbgimage", "composites", "composite", "combined",
    }),
    "mask": frozenset({
        "overlayedmasks", "overlayedmask", "overlaidmasks", "masks", "mask", "fgbgmasks",
        "fgbgmask", "maskimages", "maskimage",
    }),
    "depth": frozenset({
        "depthimage", "depthimages", "depth", "depths", "depthmaps", "depthmap", "fgbgdepth",
        "fgbgdepths", "depthmasks",
    }),
}

_MAX_DIGITS = 9  # ids are small; this also keeps int() away from huge digit strings
_ID = rf"(\d{{1,{_MAX_DIGITS}}})"
_PAIR_RE = re.compile(rf"combined_s{_ID}_p{_ID}_it{_ID}", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True, order=True)
class PairName:
    """The parsed key of a composite/mask/depth file: background k, foreground m, iteration."""

    bg: int
    fg: int
    it: int

    @property
    def key(self) -> str:
        """`combined_s<k>_p<m>_it<it>`, the same for the three kinds of one sample."""
        return f"combined_s{self.bg}_p{self.fg}_it{self.it}"

    def filename(self, ext: str = "jpg") -> str:
        return f"{self.key}.{ext}"


def format_pair_name(bg: int, fg: int, it: int, ext: str = "jpg") -> str:
    """The file name the original generator wrote for background k, foreground m, iteration."""
    return PairName(bg, fg, it).filename(ext)


def format_background_name(bg: int, ext: str = "jpg") -> str:
    return f"Shelves_{bg}.{ext}"


def _split_ext(filename: str) -> tuple[str, str] | None:
    """(stem, ext) of the last path component when ext is an image extension, else None."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or ext.lower() not in IMAGE_EXTENSIONS:
        return None
    return stem, ext


def is_image_name(filename: str) -> bool:
    """True when the name ends in one of `IMAGE_EXTENSIONS` (case-insensitive)."""
    return _split_ext(filename) is not None


def parse_pair_name(filename: str) -> PairName | None:
    """`combined_s12_p3_it7.jpg` -> PairName(12, 3, 7); anything else -> None (never raises).

    Case-insensitive, leading zeros allowed (`s012` is background 12), any image extension.
    """
    parts = _split_ext(filename)
    if parts is None:
        return None
    m = _PAIR_RE.fullmatch(parts[0])
    if m is None:
        return None
    return PairName(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def parse_background_name(filename: str) -> int | None:
    """`Shelves_12.jpg` -> 12: the number after the last `_` of the stem, as the notebook did.

    The prefix is not checked (the notebook never looked at it); the reader only calls this for
    files in a background folder, or for names that start with `Shelves_` elsewhere.
    """
    parts = _split_ext(filename)
    if parts is None:
        return None
    head, sep, tail = parts[0].rpartition("_")
    if not sep or not head or not tail.isascii() or not tail.isdigit() or len(tail) > _MAX_DIGITS:
        return None
    return int(tail)


def looks_like_background(filename: str) -> bool:
    """A `Shelves_<k>` name, recognisable as a background even outside a background folder."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base.lower().startswith("shelves_") and parse_background_name(base) is not None


def _normalise(component: str) -> str:
    c = component.lower()
    c = c.removesuffix(".zip")
    c = "".join(ch for ch in c if ch.isascii() and ch.isalnum())
    return c.rstrip("0123456789")


def kind_of_component(component: str) -> str | None:
    """The kind a single folder name or zip file name stands for, or None."""
    n = _normalise(component)
    if not n:
        return None
    for kind in KINDS:
        if n in KIND_ALIASES[kind]:
            return kind
    return None


def kind_of_path(parts: Sequence[str]) -> str | None:
    """The kind of a file from the folders (and zip stems) above it; the innermost match wins.

    `parts` are the path components leading to the file, outermost first, without the file
    name (a zip contributes its name, `.zip` optional). Innermost wins because the folder
    nearest the file is the one the generator chose: `datasets/depth-work/OverlayedMasks/0`
    holds masks. Matching is case-insensitive and ignores `_`, `-`, spaces and trailing digits,
    so `fg_bg`, `Masks`, `depth` and `OverlayedImages3.zip` are recognised.
    """
    for component in reversed(list(parts)):
        kind = kind_of_component(component)
        if kind is not None:
            return kind
    return None
