"""Small helpers shared by the command modules (consoles, option checks)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console, ConsoleDimensions

from ..core.errors import UserError

# Piped output (CI logs, `| tee`) would otherwise be cut to Rich's 80-column default, hiding
# table cells and wrapping one-line messages; a terminal keeps its own width.
_PIPE_WIDTH = 200


class _Console(Console):
    """A console whose width is looked up at each print, not once at import: COLUMNS when set,
    else the terminal's, else `_PIPE_WIDTH` when piped. So a COLUMNS set later (a test, a
    caller of `main()`) is the width every table is fitted to (`tables.show_table`)."""

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self._width is not None:  # set explicitly (`console.width = ...`)
            return dims
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            return ConsoleDimensions(int(columns), dims.height)
        tty = getattr(self.file, "isatty", lambda: False)()
        return dims if tty else ConsoleDimensions(_PIPE_WIDTH, dims.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def on_broken_pipe(self) -> None:
        """The reader went away (`toolkit parity ... | head -3`): print nothing more and let the
        command end with its own verdict. Rich's default exits 1, a failure that did not happen."""
        self.quiet = True
        stream = sys.stderr if self.stderr else sys.stdout
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())  # the interpreter's last flush must not fail either
            os.close(devnull)


def _console(stderr: bool) -> Console:
    # No `file=`: Rich looks up sys.stdout/sys.stderr at each print, so captured streams work.
    # markup=False: paths and messages print as they are (a "[gpu]" in them is not a style tag);
    # styled text is built explicitly with rich.text.Text.from_markup.
    out = _Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)
    out._width = None  # Rich read COLUMNS once, here; `_Console.size` reads it at each print
    return out


console = _console(stderr=False)
err_console = _console(stderr=True)


def existing_path(path: Path, what: str = "file") -> Path:
    """Check a path given on the command line exists, with a one-line error when not."""
    if not path.exists():
        raise UserError(f"{path}: no such {what}")
    return path


def image_size(value: int, name: str = "--image-size") -> int:
    if value <= 0 or value % 4:
        raise UserError(f"{name} must be a positive multiple of 4, got {value}")
    return value


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar on stderr for a loop that reports `(done, total)`; Rich draws it only on a terminal,
    and it goes when the loop is done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                   transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
