"""The label band over a picture's tiles: text sized to the tiles, labels that never overrun
their tile, and colour bars that say what a colour means (far/near, 0/max).

Why its own module: every PNG a person looks at (infer's panel, parity's worst pair, the
training samples, stream frames, serve's panel) asks the same layout questions — how big the
text is for a tile this wide, what becomes of a label longer than its tile, where the colour
bar goes — and they are answered once, here. `imageio.make_grid` turns arrays into uint8 tiles
of one height and hands them over; this module only lays out uint8 RGB (numpy + Pillow: it is
part of the edge install).

Layout: one band above the tiles, a cell per column. A label sits at the top of its cell,
wrapped to the cell's width (at most `MAX_LABEL_LINES` lines, shortened with "..." past that);
a legend sits at the bottom of its cell, right above the tile it explains, on rows of its own.
Each cell is drawn on its own canvas and pasted, so no text can reach a neighbour at any tile
size. The band is above, not below, so the tiles end at the picture's bottom edge.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (32, 32, 32)
TEXT = (240, 240, 240)
BAR_EDGE = (150, 150, 150)  # magma's far end is nearly black: the edge shows where the bar starts
PAD = 2  # px around the text of a cell
MAX_LABEL_LINES = 3
MIN_BAR = 12  # px: a bar shorter than this beside its two texts goes on its own row instead
ELLIPSIS = "..."  # ASCII: Pillow's bitmap fallback font has no U+2026


@dataclass(frozen=True)
class Legend:
    """A colour ramp (`colours` [N, 3] uint8, low end first) and what its two ends mean."""

    colours: np.ndarray
    low: str
    high: str


@functools.lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` px: no font files, the edge install has none to count on.
    Pillow 10.0 (no `size` argument) and Pillow without FreeType give the fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def font_for(width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Text grows with the narrowest tile (a tenth of its width, 10 to 24 px): readable on a
    1280 px video frame, and still a size at which short labels fit a 128 px tile."""
    return font(int(np.clip(width // 10, 10, 24)))


def _width(f: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> float:
    return f.getlength(text)


def shorten(text: str, f: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float) -> str:
    """`text` if it fits in `width` px, else as much of it as fits before "..." ("" if none)."""
    if _width(f, text) <= width:
        return text
    for n in range(len(text) - 1, -1, -1):
        short = text[:n].rstrip() + ELLIPSIS
        if _width(f, short) <= width:
            return short
    return ""


def wrap(text: str, f: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float,
         max_lines: int = MAX_LABEL_LINES) -> list[str]:
    """Words greedily into lines no wider than `width` px. A word too long for a line, and the
    last line when there would be more than `max_lines`, are shortened (rather than overlap)."""
    lines: list[str] = []
    for word in str(text).split():
        if lines and _width(f, f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
    return [shorten(line, f, width) for line in lines]


@dataclass(frozen=True)
class _Style:
    """The font of one picture and the heights that follow from it."""

    font: ImageFont.ImageFont | ImageFont.FreeTypeFont
    line: int  # px per line of text
    bar: int  # px: the colour bar's height

    @classmethod
    def for_width(cls, width: int) -> _Style:
        f = font_for(width)
        line = int(f.getbbox("Agjy|")[3]) + 1
        return cls(f, line, max(5, line // 2))


def _legend_rows(legend: Legend, style: _Style, inner: int) -> int:
    """1: `low [bar] high` on one line; 2: the bar, then both texts; 3: the bar, then one
    text a line (the narrowest tiles)."""
    low, high = _width(style.font, legend.low), _width(style.font, legend.high)
    if low + high + 2 * PAD + MIN_BAR <= inner:
        return 1
    return 2 if low + high + 2 * PAD <= inner else 3


def _legend_height(legend: Legend, style: _Style, inner: int) -> int:
    rows = _legend_rows(legend, style, inner)
    return style.line if rows == 1 else style.bar + PAD + (rows - 1) * style.line


def _bar(cell: Image.Image, colours: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """The ramp stretched over `box` (x0, y0, x1, y1, exclusive), low end left, edged."""
    x0, y0, x1, y1 = box
    if x1 - x0 < 3 or y1 - y0 < 3:
        return
    pick = np.linspace(0, len(colours) - 1, x1 - x0).round().astype(int)
    ramp = np.repeat(np.asarray(colours, np.uint8)[pick][None], y1 - y0, axis=0)
    cell.paste(Image.fromarray(np.ascontiguousarray(ramp)), (x0, y0))
    ImageDraw.Draw(cell).rectangle((x0, y0, x1 - 1, y1 - 1), outline=BAR_EDGE)


def _draw_legend(cell: Image.Image, legend: Legend, style: _Style, top: int) -> None:
    """The legend in the cell's full inner width, from row `top` down."""
    draw, inner, f = ImageDraw.Draw(cell), cell.width - 2 * PAD, style.font
    rows = _legend_rows(legend, style, inner)
    low, high = shorten(legend.low, f, inner), shorten(legend.high, f, inner)
    if rows == 1:
        x0 = PAD + int(np.ceil(_width(f, low))) + PAD
        x1 = cell.width - PAD - int(np.ceil(_width(f, high))) - PAD
        mid = top + (style.line - style.bar) // 2
        _bar(cell, legend.colours, (x0, mid, x1, mid + style.bar))
        draw.text((PAD, top), low, fill=TEXT, font=f)
        draw.text((x1 + PAD, top), high, fill=TEXT, font=f)
        return
    _bar(cell, legend.colours, (PAD, top, PAD + inner, top + style.bar))
    y = top + style.bar + PAD
    draw.text((PAD, y), low, fill=TEXT, font=f)
    y += style.line if rows == 3 else 0
    draw.text((cell.width - PAD - _width(f, high), y), high, fill=TEXT, font=f)


def label_band(widths: Sequence[int], labels: Sequence[str], legends: Sequence[Legend | None],
               gap: int = 2) -> np.ndarray:
    """The band (uint8 HxWx3) over columns `widths` px wide, `gap` px apart: labels at the top,
    legends at the bottom, one height for all so the tiles under it line up."""
    style = _Style.for_width(min(widths))
    lines = [wrap(label, style.font, w - 2 * PAD) for w, label in zip(widths, labels, strict=True)]
    label_h = max(1, *(len(x) for x in lines)) * style.line
    legend_h = max((_legend_height(lg, style, w - 2 * PAD) for w, lg in zip(widths, legends, strict=True) if lg),
                   default=0)
    height = PAD + label_h + (PAD + legend_h if legend_h else 0) + PAD
    band = Image.new("RGB", (sum(widths) + gap * (len(widths) - 1), height), BACKGROUND)
    x = 0
    for w, text, legend in zip(widths, lines, legends, strict=True):
        cell = Image.new("RGB", (w, height), BACKGROUND)
        draw = ImageDraw.Draw(cell)
        for i, line in enumerate(text):
            draw.text((PAD, PAD + i * style.line), line, fill=TEXT, font=style.font)
        if legend is not None:
            _draw_legend(cell, legend, style, height - PAD - _legend_height(legend, style, w - 2 * PAD))
        band.paste(cell, (x, 0))
        x += w + gap
    return np.asarray(band).copy()


def compose(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], legends: Sequence[Legend | None],
            gap: int = 2) -> np.ndarray:
    """Rows of uint8 HxWx3 tiles, a column per label, under one `label_band`: a column is as
    wide as its widest tile, rows are `gap` px apart, the first row right under the band."""
    widths = [max(row[c].shape[1] for row in rows) for c in range(len(labels))]
    heights = [max(t.shape[0] for t in row) for row in rows]
    band = label_band(widths, labels, legends, gap)
    canvas = np.empty((band.shape[0] + sum(heights) + gap * (len(rows) - 1), band.shape[1], 3), np.uint8)
    canvas[:] = BACKGROUND
    canvas[: band.shape[0]] = band
    y = band.shape[0]
    for row, h in zip(rows, heights, strict=True):
        x = 0
        for tile, w in zip(row, widths, strict=True):
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
            x += w + gap
        y += h + gap
    return canvas
