"""People-like foregrounds for the synthetic set: flat figures with a rounded relief.

Why a module of its own: the figures (head, torso, limbs as ellipses and capsules, clothing and
skin colours, mirrored copies) are independent of the rooms they are pasted into; `synth.py`
stands them in a scene and writes the files. numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .rng import make_rng

_SKINS = np.array([[.98, .8, .67], [.9, .7, .55], [.76, .55, .4], [.55, .38, .26], [.36, .24, .16]])
_HAIRS = np.array([[.08, .06, .05], [.25, .15, .08], [.45, .3, .15], [.85, .7, .4], [.6, .6, .6], [.5, .18, .08]])
_TROUSERS = np.array([[.15, .22, .4], [.1, .1, .1], [.65, .58, .42], [.4, .4, .42], [.35, .22, .12]])


@dataclass(frozen=True)
class Part:
    """One body part in the figure's plane (metres; x to the figure's side, y up from the floor)."""

    shape: str  # "ellipse" (cx, cy, rx, ry) | "capsule" (ax, ay, bx, by, r) | "blob" (cx, cy, a, b)
    geo: tuple  # | "trapezoid" (y_bottom, y_top, half-width at top, half-width at bottom)
    paint: str
    z_off: float  # layer offset along the view axis (negative = nearer the camera)
    thick: float  # how far the part bulges towards the camera at its middle

    def extent(self) -> tuple[float, float, float, float]:
        """Bounding box (x_min, x_max, y_min, y_max)."""
        g = self.geo
        if self.shape in ("ellipse", "blob"):
            return g[0] - g[2], g[0] + g[2], g[1] - g[3], g[1] + g[3]
        if self.shape == "capsule":
            return (min(g[0], g[2]) - g[4], max(g[0], g[2]) + g[4],
                    min(g[1], g[3]) - g[4], max(g[1], g[3]) + g[4])
        return -max(g[2], g[3]), max(g[2], g[3]), g[0], g[1]

    def coverage(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inside, r): r runs 0 on the part's middle line to 1 on its outline."""
        g = self.geo
        if self.shape == "ellipse":
            r = np.hypot((x - g[0]) / g[2], (y - g[1]) / g[3])
            return r <= 1, r
        if self.shape == "capsule":
            vx, vy = g[2] - g[0], g[3] - g[1]
            s = np.clip(((x - g[0]) * vx + (y - g[1]) * vy) / (vx * vx + vy * vy + 1e-12), 0, 1)
            r = np.hypot(x - g[0] - s * vx, y - g[1] - s * vy) / g[4]
            return r <= 1, r
        if self.shape == "blob":  # a rounded rectangle (superellipse), shaded like a cylinder
            inside = ((x - g[0]) / g[2]) ** 4 + ((y - g[1]) / g[3]) ** 4 <= 1
            return inside, np.abs(x - g[0]) / g[2]
        w = g[3] + (g[2] - g[3]) * (y - g[0]) / (g[1] - g[0])
        return (y >= g[0]) & (y <= g[1]) & (np.abs(x) <= w), np.abs(x) / np.maximum(w, 1e-9)


@dataclass
class Figure:
    parts: list[Part]
    colours: dict[str, np.ndarray]
    pattern: int
    period: float
    hairline: float  # head rows above head_y + hairline * head_ry are hair
    head: tuple[float, float]

    @property
    def half_width(self) -> float:
        return max(max(-p.extent()[0], p.extent()[1]) for p in self.parts)

    @property
    def height(self) -> float:
        return max(p.extent()[3] for p in self.parts)

    def paint(self, part: Part, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c = self.colours
        if part.paint == "shirt" and self.pattern:
            a, b = (y / self.period) % 1 < 0.5, (x / self.period) % 1 < 0.5
            two = {1: a, 2: b, 3: a ^ b}[self.pattern]
            return np.where(two[:, None], c["shirt2"], c["shirt"])
        if part.paint == "head":
            return np.where((y > self.head[0] + self.hairline * self.head[1])[:, None], c["hair"], c["skin"])
        return np.broadcast_to(c[part.paint], (x.size, 3))


def make_figure(seed: int, m: int) -> Figure:
    """Foreground m of a seed: a child or adult of varied build, pose, clothes and colours."""
    rng = make_rng(seed, 2, m)
    child = rng.random() < 0.2
    h = rng.uniform(1.0, 1.35) if child else rng.uniform(1.5, 1.9)
    hh = h / (5.5 if child else 7.3)  # head height
    sw = h * 0.115 * rng.uniform(0.85, 1.2)  # half shoulder width
    y_head, rx, ry = h - hh * 0.5, hh * 0.38, hh * 0.5
    y_sh, y_hip = h - hh * 1.3, h * (0.45 if child else 0.52)
    ra, rl, hip, spread = sw * 0.22, sw * 0.3, sw * 0.45, rng.uniform(0, 0.1) * h
    skirt = not child and rng.random() < 0.3
    parts = [Part("capsule", (0, y_sh, 0, h - hh * 0.85, hh * 0.16), "skin", 0.0, 0.05),
             Part("ellipse", (0, y_head, rx, ry), "head", -0.02, rx),
             Part("ellipse", (0, y_head + ry * 0.15, rx * 1.12, ry * 0.97), "hair", 0.01, rx),
             Part("blob", (0, (y_sh + y_hip) / 2 + hh * 0.05, sw * 0.9, (y_sh - y_hip) / 2 + hh * 0.15), "shirt",
                  -0.01, sw * 0.55)]
    if rng.random() < 0.35:  # long hair, behind head and shoulders
        parts.append(Part("capsule", (0, y_head, 0, y_sh - hh * rng.uniform(0, 0.6), rx * 1.15), "hair", 0.08, 0.05))
    for s in (-1, 1):
        foot = s * (hip + spread / 2)
        parts += [Part("capsule", (s * hip, y_hip, foot, rl + 0.06, rl), "legs", 0.0, rl),
                  Part("ellipse", (foot + s * 0.02, 0.045, rl * 1.3, 0.045), "shoes", -0.03, 0.05)]
    if skirt:
        skirt_geo = (y_hip - h * 0.22, y_hip + hh * 0.2, sw * 0.8, sw * 1.15)
        parts.append(Part("trapezoid", skirt_geo, "skirt", -0.03, sw * 0.5))
    raised = int(rng.choice([-1, 1])) if rng.random() < 0.25 else 0
    for s in (-1, 1):
        up = math.radians(rng.uniform(100, 160) if s == raised else rng.uniform(4, 28))
        low = up + math.radians(rng.uniform(-10, 25))
        ax, ay, half = s * (sw - ra * 0.7), y_sh - ra * 0.6, h * 0.21
        ex, ey = ax + s * math.sin(up) * half, ay - math.cos(up) * half
        hx, hy = ex + s * math.sin(low) * half, ey - math.cos(low) * half
        parts += [Part("capsule", (ax, ay, ex, ey, ra), "shirt", -0.05, ra),
                  Part("capsule", (ex, ey, hx, hy, ra * 0.85), "sleeve", -0.06, ra * 0.85),
                  Part("ellipse", (hx, hy, ra * 1.1, ra * 1.25), "skin", -0.065, ra)]
    shirt = rng.uniform(0.08, 0.92, 3)
    skin = _SKINS[rng.integers(len(_SKINS))] * rng.uniform(0.92, 1.05, 3)
    trousers = _TROUSERS[rng.integers(len(_TROUSERS))] * rng.uniform(0.85, 1.15, 3)
    colours = {"skin": skin, "hair": _HAIRS[rng.integers(len(_HAIRS))], "shirt": shirt,
               "shirt2": rng.uniform(0.05, 0.95, 3) if rng.random() < 0.5 else shirt * 0.45,
               "legs": (skin if rng.random() < 0.5 else trousers * 0.4) if skirt else trousers,
               "shoes": rng.uniform(0.02, 0.3) * np.ones(3), "skirt": rng.uniform(0.1, 0.8, 3)}
    colours["sleeve"] = shirt if rng.random() < 0.6 else skin
    hairline = 9.0 if rng.random() < 0.08 else rng.uniform(0.05, 0.4)
    return Figure(parts, colours, int(rng.integers(4)), rng.uniform(0.05, 0.12), hairline, (y_head, ry))


def render_figure(fig: Figure, fx: np.ndarray, fy: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """On the grid of figure-plane columns `fx` x rows `fy`: (depth in metres, inf where empty;
    shaded colour). Each part is evaluated only inside its bounding box (speed)."""
    depth = np.full((fy.size, fx.size), np.inf)
    colour = np.zeros(depth.shape + (3,))
    for part in fig.parts:
        x0, x1, y0, y1 = part.extent()
        ci, ri = np.nonzero((fx >= x0) & (fx <= x1))[0], np.nonzero((fy >= y0) & (fy <= y1))[0]
        if not ci.size or not ri.size:
            continue
        win = (slice(ri[0], ri[-1] + 1), slice(ci[0], ci[-1] + 1))
        x, y = np.meshgrid(fx[win[1]], fy[win[0]])
        inside, r = part.coverage(x, y)
        bulge = np.sqrt(np.clip(1 - r * r, 0, 1))
        d = z + part.z_off - part.thick * bulge
        upd = inside & (d < depth[win])
        depth[win] = np.where(upd, d, depth[win])
        colour[win][upd] = fig.paint(part, x[upd], y[upd]) * (0.55 + 0.45 * bulge[upd])[:, None]
    return depth, colour
