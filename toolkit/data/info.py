"""What a data set says about itself: `dataset.json` at its top folder.

Why: a depth map's grey can run either way, and nothing in a JPEG says which. The original set's
depth is bright = far (dataset.md); the toolkit's synthetic set writes that too by default and
records it here, with how its grey maps to metres. A set without the file (the original as its
users hold it, a zip given alone) is the original's convention. A user's own set that runs the
other way says so with one line: `{"depth_convention": "near-bright"}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.fsutil import write_text_atomic
from ..core.spec import ORIGINAL_DEPTH_CONVENTION, check_depth_convention

INFO_NAME = "dataset.json"
FORMAT = "toolkit.dataset"
MAX_INFO_BYTES = 64 * 1024


def write_info(folder: str | Path, *, depth_convention: str, **extra: Any) -> Path:
    check_depth_convention(depth_convention)
    body = {"format": FORMAT, "depth_convention": depth_convention, **extra}
    return write_text_atomic(Path(folder) / INFO_NAME, json.dumps(body, indent=2, sort_keys=True) + "\n")


def read_info(path: str | Path) -> dict[str, Any]:
    """The file's fields, checked; one line naming the file when it is not what it should be."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_INFO_BYTES:
            raise UserError(f"{path}: over {MAX_INFO_BYTES // 1024} KiB: not a data set description")
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable data set description ({e})") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: a data set description is a JSON object")
    try:
        check_depth_convention(str(info.get("depth_convention", ORIGINAL_DEPTH_CONVENTION)))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    return info


def depth_convention_of(infos: Mapping[str, Mapping[str, Any]]) -> str:
    """The one convention of the sources' descriptions (path -> fields); the original's when
    none says; sources that disagree are refused (their depth cannot be read as one)."""
    said = {p: str(i.get("depth_convention", ORIGINAL_DEPTH_CONVENTION)) for p, i in infos.items()}
    if len(set(said.values())) > 1:
        listed = ", ".join(f"{p}: {c}" for p, c in sorted(said.items()))
        raise UserError(f"data sets whose depth runs different ways cannot be read together ({listed})")
    return next(iter(said.values()), ORIGINAL_DEPTH_CONVENTION)
