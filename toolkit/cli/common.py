"""Small helpers shared by the command modules (consoles, option checks)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console

from ..errors import UserError

# Piped output (CI logs, `| tee`) would otherwise be cut to Rich's 80-column default, hiding
# table cells and wrapping one-line messages; a terminal keeps its own width.
_PIPE_WIDTH = 200


def _console(stderr: bool) -> Console:
    # No `file=`: Rich looks up sys.stdout/sys.stderr at each print, so captured streams work.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else _PIPE_WIDTH
    # markup=False: paths and messages print as they are (a "[gpu]" in them is not a style tag);
    # styled text is built explicitly with rich.text.Text.from_markup.
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width, markup=False)


console = _console(stderr=False)
err_console = _console(stderr=True)


def existing_path(path: Path, what: str = "file") -> Path:
    """Check a path given on the command line exists, with a one-line error when not."""
    if not path.exists():
        raise UserError(f"{path}: no such {what}")
    return path


def positive(value: int, name: str) -> int:
    if value <= 0:
        raise UserError(f"{name} must be a positive number, got {value}")
    return value


def image_size(value: int, name: str = "--image-size") -> int:
    if value <= 0 or value % 4:
        raise UserError(f"{name} must be a positive multiple of 4, got {value}")
    return value
