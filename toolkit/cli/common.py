"""Small helpers shared by the command modules (console, option parsing)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ..errors import UserError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


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
