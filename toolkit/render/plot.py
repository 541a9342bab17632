"""Scatter panels drawn with Pillow: a figure of figures, on the edge install too.

Why not matplotlib: it comes with the `train` extra, and `toolkit val` must draw its accuracy
against latency picture on a box that has only the edge install (numpy, Pillow). The picture is
small and fixed in form: one panel per figure, a shared x axis (latency), one coloured marker
per model, a legend under the panels naming each marker, axes with round-numbered ticks, and
each panel's title saying which way is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .pictures import font, shorten

# Tableau's ten categorical colours: told apart by most colour-blind readers, and in print.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
MARKERS = ("circle", "square", "triangle", "diamond")
PANEL_W, PANEL_H, MARGIN_L, MARGIN_B, MARGIN_T, MARGIN_R = 420, 300, 64, 48, 34, 16


@dataclass(frozen=True)
class Panel:
    key: str  # the figure each point carries under this name
    title: str  # e.g. "mask IoU vs truth (higher is better)"
    min_span: float = 0.02  # the y axis covers at least this much
    floor: float = float("-inf")  # and never goes below this (0 for figures that cannot)


@dataclass(frozen=True)
class Point:
    label: str  # the legend's entry: model and backend
    x: float
    ys: dict[str, float]  # Panel.key -> value (a NaN or missing value is not drawn)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round-numbered ticks (1, 2 or 5 x 10^k apart) covering [lo, hi]."""
    if not hi > lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _fmt(value: float, step: float) -> str:
    digits = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:.{min(digits, 6)}f}"


def _marker(draw: ImageDraw.ImageDraw, x: float, y: float, kind: str, colour: tuple[int, int, int], r: int = 6) -> None:
    box = (x - r, y - r, x + r, y + r)
    if kind == "circle":
        draw.ellipse(box, fill=colour, outline=(0, 0, 0))
    elif kind == "square":
        draw.rectangle(box, fill=colour, outline=(0, 0, 0))
    elif kind == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=colour, outline=(0, 0, 0))
    else:
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=colour, outline=(0, 0, 0))


def _style(i: int) -> tuple[tuple[int, int, int], str]:
    return PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE)) % len(MARKERS)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x 10^k ticks covering [lo, hi] (both > 0): a log axis for values decades apart."""
    ticks = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0 ** k for m in (1, 2, 5)]
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    first, last = (below[-1] if below else ticks[0]), (above[0] if above else ticks[-1])
    return [t for t in ticks if first <= t <= last]


def _panel(points: Sequence[Point], panel: Panel, x_label: str, x_ticks: list[float], log_x: bool = False) -> Image.Image:
    img = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    draw, small, big = ImageDraw.Draw(img), font(12), font(14)
    values = [p.ys.get(panel.key, float("nan")) for p in points]
    finite = [v for v in values if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    # At least panel.min_span tall: figures equal to 6 digits must not look far apart.
    pad = max((hi - lo) * 0.1, (panel.min_span - (hi - lo)) / 2)
    y_ticks = nice_ticks(max(lo - pad, panel.floor), hi + pad)
    left, top, right, bottom = MARGIN_L, MARGIN_T, PANEL_W - MARGIN_R, PANEL_H - MARGIN_B

    def sx(v: float) -> float:
        if log_x:
            return left + (math.log10(v) - math.log10(x_ticks[0])) / (math.log10(x_ticks[-1]) - math.log10(x_ticks[0])) * (right - left)
        return left + (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)

    draw.text((PANEL_W / 2, 6), panel.title, fill=(0, 0, 0), font=big, anchor="ma")
    for t in x_ticks:
        draw.line([(sx(t), top), (sx(t), bottom)], fill=(230, 230, 230))
        label = f"{t:g}" if log_x else _fmt(t, x_ticks[1] - x_ticks[0])
        draw.text((sx(t), bottom + 4), label, fill=(0, 0, 0), font=small, anchor="ma")
    for t in y_ticks:
        draw.line([(left, sy(t)), (right, sy(t))], fill=(230, 230, 230))
        draw.text((left - 4, sy(t)), _fmt(t, y_ticks[1] - y_ticks[0]), fill=(0, 0, 0), font=small, anchor="rm")
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    draw.text(((left + right) / 2, PANEL_H - 6), x_label, fill=(0, 0, 0), font=small, anchor="md")
    for i, (p, v) in enumerate(zip(points, values)):
        if math.isfinite(v) and math.isfinite(p.x) and (p.x > 0 or not log_x):
            colour, kind = _style(i)
            _marker(draw, sx(p.x), sy(v), kind, colour)
    return img


def scatter_png(points: Sequence[Point], panels: Sequence[Panel], *, title: str, x_label: str) -> np.ndarray:
    """The panels side by side (each point in every panel, same colour and marker), the title
    above and the legend below, as a uint8 RGB array."""
    if not points or not panels:
        raise ValueError("scatter_png: nothing to draw")
    xs = [p.x for p in points if math.isfinite(p.x) and p.x > 0] or [1.0]
    log_x = max(xs) / min(xs) > 20  # PyTorch eager beside int8: decades apart, a linear axis piles the fast ones at 0
    x_ticks = log_ticks(min(xs) / 1.2, max(xs) * 1.2) if log_x else nice_ticks(0.0, max(xs) * 1.1)
    tiles = [_panel(points, panel, x_label + (" (log scale)" if log_x else ""), x_ticks, log_x) for panel in panels]
    width = PANEL_W * len(tiles)
    legend_cols = max(1, width // 300)
    legend_rows = -(-len(points) // legend_cols)
    height = 36 + PANEL_H + 12 + 22 * legend_rows + 8
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((width / 2, 8), title, fill=(0, 0, 0), font=font(16), anchor="ma")
    for i, tile in enumerate(tiles):
        img.paste(tile, (i * PANEL_W, 36))
    col_w = width // legend_cols
    for i, p in enumerate(points):
        colour, kind = _style(i)
        x, y = 16 + (i % legend_cols) * col_w, 36 + PANEL_H + 12 + (i // legend_cols) * 22 + 9
        _marker(draw, x, y, kind, colour, r=5)
        draw.text((x + 12, y), shorten(p.label, font(12), col_w - 36), fill=(0, 0, 0), font=font(12), anchor="lm")
    return np.asarray(img)


def _vertical_text(text: str, size: int) -> Image.Image:
    f = font(size)
    w = int(f.getlength(text)) + 2
    img = Image.new("RGB", (w, size + 4), "white")
    ImageDraw.Draw(img).text((0, 0), text, fill=(0, 0, 0), font=f)
    return img.rotate(90, expand=True)


def series_png(values: Sequence[float], names: Sequence[str], *, threshold: float, marks: dict[int, str], title: str,
               y_label: str, max_names: int = 100) -> np.ndarray:
    """One value per item on a log scale (a bar each, red over `threshold`), the threshold as a
    dashed line, items in `marks` called out above the plot, every k-th name under the axis."""
    n = len(values)
    finite = [v for v in values if math.isfinite(v) and v > 0]
    lo_exp = math.floor(math.log10(min(finite + [threshold]))) if finite else -8
    hi_exp = math.ceil(math.log10(max(finite + [threshold * 10]))) if finite else 0
    lo_exp = max(lo_exp, hi_exp - 10)
    width = max(720, min(1600, 80 + 12 * n))
    left, right, top, plot_h = 80, width - 20, 40 + 18 * max(len(marks), 1), 300
    label_h = 12 + max([int(font(11).getlength(s)) for s in names] + [0])
    img = Image.new("RGB", (width, top + plot_h + label_h + 30), "white")
    draw, small = ImageDraw.Draw(img), font(12)
    draw.text((width / 2, 8), title, fill=(0, 0, 0), font=font(14), anchor="ma")
    bottom = top + plot_h

    def sy(v: float) -> float:
        e = math.log10(v) if v > 0 else lo_exp
        return bottom - (min(max(e, lo_exp), hi_exp) - lo_exp) / (hi_exp - lo_exp) * plot_h

    for e in range(lo_exp, hi_exp + 1):
        draw.line([(left, sy(10.0 ** e)), (right, sy(10.0 ** e))], fill=(230, 230, 230))
        draw.text((left - 4, sy(10.0 ** e)), f"1e{e}", fill=(0, 0, 0), font=small, anchor="rm")
    step = (right - left) / max(n, 1)
    every = max(1, -(-n // max_names))
    for i, v in enumerate(values):
        x0 = left + i * step + step * 0.15
        colour = (214, 39, 40) if not v <= threshold else (31, 119, 180)
        y = top if not math.isfinite(v) else sy(v)
        draw.rectangle((x0, y, max(x0 + 1, x0 + step * 0.7), bottom), fill=colour)
        if i % every == 0 or i in marks:
            tag = _vertical_text(names[i], 11)
            img.paste(tag, (int(x0 + step * 0.35 - tag.width / 2), bottom + 6))
    ty = sy(threshold)
    for x in range(left, right, 10):
        draw.line([(x, ty), (min(x + 5, right), ty)], fill=(0, 0, 0), width=1)
    draw.text((right - 4, ty - 2), f"tolerance {threshold:g}", fill=(0, 0, 0), font=small, anchor="rd")
    for k, (i, text) in enumerate(sorted(marks.items())):
        x = left + (i + 0.5) * step
        yk = 30 + 18 * k
        draw.line([(x, yk + 8), (x, top)], fill=(214, 39, 40))
        draw.text((min(max(x, left + 4), right - 4), yk), text, fill=(214, 39, 40), font=small,
                  anchor="la" if x < width / 2 else "ra")
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    draw.text((8, top - 30), y_label, fill=(0, 0, 0), font=small)
    draw.text((width / 2, img.height - 6), "tensors in graph order (named by the module that made them)", fill=(0, 0, 0),
              font=small, anchor="md")
    return np.asarray(img)
