"""Every table the command line prints, fitted to the console's width (80 columns included).

Why one helper: Rich squeezes a table wider than the console by wrapping its cells and then
cutting them with "…", and at 80 columns what it cut was the verdict. `show_table` draws a table
only when each column fits whole (prose columns may wrap at spaces, but keep `PROSE_MIN`
characters). When one does not fit, the optional columns are left out first, the last first (a
note names them; `--wide` keeps them); when it still does not fit, each row becomes a block: its
key on a line of its own, then its verdict, then every other column as a "header  value" line,
values wrapping under themselves. Nothing is ever cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .common import console as default_console

PROSE_MIN = 24  # narrower than this, a wrapped sentence is a word a line: no longer readable
WIDE_HELP = "Show every column, even those left out to fit the width (rows become blocks when they do not fit)."
Cell = str | Text


@dataclass(frozen=True)
class Col:
    """One column. `right`: numbers. `prose`: its cells may wrap onto more lines. `optional`:
    left out when the table would not fit (and `wide` is not asked). `verdict`: what a row's
    block shows first, under its key."""

    header: str
    right: bool = False
    prose: bool = False
    optional: bool = False
    verdict: bool = False


def _width(cell: Cell) -> int:
    text = cell if isinstance(cell, Text) else Text(cell)
    return max((line.cell_len for line in text.split("\n")), default=0)


def _needed(cols: Sequence[Col], rows: Sequence[Sequence[Cell]], shown: list[int]) -> int:
    """Columns the table takes with `shown` columns: its cells, and 3 per column of rules and padding."""
    total = 1 + 3 * len(shown)
    for i in shown:
        natural = max([_width(cols[i].header), *(_width(row[i]) for row in rows)])
        total += min(natural, PROSE_MIN) if cols[i].prose else natural
    return total


def print_wrapped(text: str, out: Console | None = None) -> None:
    """A title or a note, wrapped at the console's width (the consoles soft-wrap by default, so
    that one-line messages stay one line), not at the table's as a Rich title would be."""
    (out or default_console).print(Text(text, overflow="fold"), soft_wrap=False)


def show_table(title: str, cols: Sequence[Col], rows: Sequence[Sequence[Cell]], *, wide: bool = False,
               out: Console | None = None) -> None:
    """Print `rows` (one cell per column of `cols`) as a table, or as blocks, at `out`'s width."""
    out = out or default_console
    shown = list(range(len(cols)))
    for i in [] if wide else [i for i in reversed(shown) if cols[i].optional]:
        if _needed(cols, rows, shown) <= out.width:
            break
        shown.remove(i)
    if _needed(cols, rows, shown) > out.width:
        _blocks(out, title, cols, rows)
        return
    print_wrapped(title, out)
    table = Table()
    for i in shown:
        table.add_column(cols[i].header, justify="right" if cols[i].right else "left", no_wrap=not cols[i].prose, overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    out.print(table)
    hidden = [c.header for i, c in enumerate(cols) if i not in shown]
    if hidden:
        print_wrapped(f"({', '.join(hidden)} left out to fit {out.width} columns; --wide shows every column)", out)


def _blocks(out: Console, title: str, cols: Sequence[Col], rows: Sequence[Sequence[Cell]]) -> None:
    """Each row as its key, then its verdict, then its other non-empty cells, one a line."""
    print_wrapped(title, out)
    order = sorted(range(1, len(cols)), key=lambda i: not cols[i].verdict)
    for row in rows:
        out.print(Text(row[0], style="bold") if isinstance(row[0], str) else row[0], soft_wrap=False)
        grid = Table.grid(padding=(0, 2, 0, 0))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for i in order:
            if _width(row[i]):
                grid.add_row(cols[i].header, row[i])
        out.print(Padding(grid, (0, 0, 0, 2)))
