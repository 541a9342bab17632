"""Procedural library rooms seen through a pinhole camera, with exact per-pixel depth.

Why a module of its own: the geometry (camera, room box, bookcases, ray tracing, the grey <->
metres depth mapping) is what makes the synthetic depth exact, and later code (metric AbsRel,
delta1) needs the mapping without the writer. numpy only; see `synth.py` for the layout.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .rng import make_rng

if TYPE_CHECKING:
    from .figures import Figure

DEPTH_NEAR_M = 0.5
DEPTH_FAR_M = 10.0
_LOG_SPAN = math.log(DEPTH_FAR_M / DEPTH_NEAR_M)
FLOOR, CEILING, BACK_WALL, LEFT_WALL, RIGHT_WALL, BOX = 0, 1, 2, 3, 4, 10  # surface ids


def metres_to_gray(z):
    """Depth in metres -> grey in [0, 1]: ln(FAR / z) / ln(FAR / NEAR), clipped (1 = near)."""
    z = np.maximum(np.asarray(z, np.float64), 1e-9)
    return np.clip(np.log(DEPTH_FAR_M / z) / _LOG_SPAN, 0.0, 1.0)


def gray_to_metres(gray01):
    """Grey in [0, 1] (as read from a depth file) -> metres: FAR * (NEAR / FAR) ** gray."""
    return DEPTH_FAR_M * np.exp(-np.clip(np.asarray(gray01, np.float64), 0.0, 1.0) * _LOG_SPAN)


def _hash01(*ints: np.ndarray) -> np.ndarray:
    """A deterministic per-cell random number in [0, 1] (integer hashing, platform-stable)."""
    h = np.uint64(1469598103934665603)
    for a in ints:
        h = (h ^ np.asarray(a).astype(np.int64).astype(np.uint64)) * np.uint64(1099511628211)
    h = h ^ (h >> np.uint64(29))
    return (h & np.uint64(0xFFFF)).astype(np.float64) / 65535.0


@dataclass(frozen=True)
class Camera:
    size: int
    f: float
    cx: float
    cy: float
    height: float

    def rays(self, ss: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dy) of the rays through the sub-sample centres of an ss x ss grid per pixel."""
        c = (np.arange(self.size * ss) + 0.5) / ss
        dx = (c - self.cx) / self.f
        dy = (self.cy - c) / self.f
        dx[dx == 0], dy[dy == 0] = 1e-12, 1e-12
        n = c.size
        return np.broadcast_to(dx[None, :], (n, n)), np.broadcast_to(dy[:, None], (n, n))


@dataclass
class Box:
    """A bookcase: an axis-aligned box whose `face` (axis, sign of its normal) shows books."""

    lo: np.ndarray
    hi: np.ndarray
    face: tuple[int, int]
    wood: np.ndarray
    row_h: float
    widths: np.ndarray  # (rows, n) book widths in metres
    heights: np.ndarray  # (rows, n) book heights as a share of the shelf height
    colours: np.ndarray  # (rows, n, 3)
    gaps: np.ndarray  # (rows, n) bool: a missing book


_BOOKS = np.array([[.55, .08, .08], [.1, .15, .4], [.1, .35, .15], [.75, .6, .2], [.45, .25, .12],
                   [.12, .12, .12], [.85, .8, .65], [.3, .1, .35], [.8, .35, .1], [.2, .45, .55]])
_WOODS = np.array([[.45, .3, .18], [.6, .45, .28], [.3, .2, .12], [.75, .65, .5], [.85, .85, .82]])
_WALLS = np.array([[.85, .82, .75], [.7, .75, .8], [.8, .7, .6], [.65, .7, .6], [.9, .9, .88],
                   [.6, .42, .36]])
_FLOORS = np.array([[.5, .35, .2], [.7, .55, .35], [.6, .6, .62], [.45, .15, .15], [.2, .3, .25],
                    [.25, .27, .4]])


def _make_box(rng: np.random.Generator, lo, hi, face, wood) -> Box:
    span = (hi[0] - lo[0]) if face[0] == 2 else (hi[2] - lo[2])
    row_h = rng.uniform(0.3, 0.42)
    rows = max(1, int(hi[1] / row_h) + 1)
    n = int(span / 0.016) + 2
    return Box(np.array(lo, float), np.array(hi, float), face, wood, row_h,
               rng.uniform(0.016, 0.055, (rows, n)), rng.uniform(0.55, 0.95, (rows, n)),
               _BOOKS[rng.integers(0, len(_BOOKS), (rows, n))] * rng.uniform(0.7, 1.15, (rows, n, 1)),
               rng.random((rows, n)) < 0.07)


@dataclass
class Scene:
    """One background room: camera, walls, bookcases, materials and light."""

    camera: Camera
    left: float
    right: float
    back: float
    ceiling: float
    wall: np.ndarray
    wainscot: np.ndarray
    floor_style: int
    floor_cols: np.ndarray
    boxes: list[Box] = field(default_factory=list)
    light: np.ndarray = field(default_factory=lambda: np.zeros(3))
    light_tint: np.ndarray = field(default_factory=lambda: np.ones(3))
    ambient: float = 0.5
    exposure: float = 1.0

    def person_range(self, half_width: float) -> tuple[float, float, float, float]:
        """(z_min, z_max, x_min, x_max) where a person stands in full view, clear of furniture."""
        c = self.camera
        z_min = max(2.2, c.f * c.height / (0.93 * c.size - c.cy))
        front = min([b.lo[2] for b in self.boxes if b.face[0] == 2] + [self.back])
        z_max = max(z_min + 0.1, min(front - 0.6, z_min + 1.5))  # keep people a useful size
        side = [b for b in self.boxes if b.face[0] == 0]
        x_lo = -self.left + 0.4 + max([b.hi[0] + self.left for b in side if b.lo[0] < 0] + [0])
        x_hi = self.right - 0.4 - max([self.right - b.lo[0] for b in side if b.lo[0] > 0] + [0])
        return z_min, z_max, x_lo + half_width, x_hi - half_width

    def place(self, fig: Figure, place: tuple[float, float]) -> tuple[float, float]:
        """(x, z) of a figure's feet for a placement (shares of the free depth and width)."""
        c, half = self.camera, fig.half_width
        z0, z1, x0, x1 = self.person_range(half)
        z = z0 + place[0] * (z1 - z0)
        x = x0 + place[1] * (x1 - x0) if x1 > x0 else (x0 + x1) / 2
        view = z * c.cx / c.f * 0.92 - half  # keep the whole figure in view
        return (float(np.clip(x, -view, view)) if view > 0 else 0.0), z

    def render(self, ss: int = 1) -> dict[str, np.ndarray]:
        """Ray-trace the room on an ss x ss sub-sample grid: rgb in [0, 1], depth (m), surface id."""
        c = self.camera
        dx, dy = c.rays(ss)
        inf = np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            planes = np.stack([
                np.where(dy < 0, -c.height / dy, inf), np.where(dy > 0, (self.ceiling - c.height) / dy, inf),
                np.full(dx.shape, self.back), np.where(dx < 0, -self.left / dx, inf),
                np.where(dx > 0, self.right / dx, inf)])
        surf = planes.argmin(0)
        t = planes.min(0)
        table = np.array([[0, 1, 0], [0, -1, 0], [0, 0, -1], [1, 0, 0], [-1, 0, 0]], float)
        normal = table[surf]
        d = np.stack([dx, dy, np.ones_like(dx)])
        origin = np.array([0.0, c.height, 0.0])[:, None, None]
        for i, b in enumerate(self.boxes):
            with np.errstate(divide="ignore", invalid="ignore"):
                t1, t2 = (b.lo[:, None, None] - origin) / d, (b.hi[:, None, None] - origin) / d
            tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
            near, axis = tmin.max(0), tmin.argmax(0)
            hit = (near <= tmax.min(0)) & (near > 1e-9) & (near < t)
            t = np.where(hit, near, t)
            surf = np.where(hit, BOX + i, surf)
            n = np.zeros_like(normal)
            n[np.arange(3)[None, None, :] == axis[..., None]] = 1.0
            normal = np.where(hit[..., None], n * -np.sign(np.moveaxis(d, 0, -1)), normal)
        p = np.stack([t * dx, c.height + t * dy, t], axis=-1)
        rgb = self._albedo(p, surf, normal)
        to_l = self.light - p
        dist2 = (to_l ** 2).sum(-1)
        lam = np.clip((normal * to_l).sum(-1) / np.sqrt(dist2), 0, None)
        shade = self.ambient + 0.8 * lam / (1 + 0.05 * dist2)
        rgb = rgb * (shade * self.exposure)[..., None] * self.light_tint
        return {"rgb": np.clip(rgb, 0, 1), "depth": t, "surface": surf}

    def _albedo(self, p: np.ndarray, surf: np.ndarray, normal: np.ndarray) -> np.ndarray:
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        rgb = np.empty(p.shape)
        m = surf == FLOOR
        if self.floor_style == 0:  # planks along z, staggered
            col, fx = np.floor(x[m] / 0.16), (x[m] / 0.16) % 1
            row = np.floor(z[m] / 1.2 + _hash01(col, 7))
            tone = 0.8 + 0.35 * _hash01(col, row)
            rgb[m] = self.floor_cols[0] * (tone * np.where(fx < 0.05, 0.6, 1.0))[:, None]
        elif self.floor_style == 1:  # tiles
            a, b = x[m] / 0.5, z[m] / 0.5
            odd = (np.floor(a) + np.floor(b)) % 2 == 1
            grout = (a % 1 < 0.04) | (b % 1 < 0.04)
            rgb[m] = np.where(odd[:, None], self.floor_cols[0], self.floor_cols[1])
            rgb[m] *= np.where(grout, 0.55, 1.0)[:, None]
        else:  # carpet with a slow pattern
            wave = 0.9 + 0.1 * np.sin(x[m] * 5.0) * np.sin(z[m] * 4.0)
            rgb[m] = self.floor_cols[0] * wave[:, None]
        m = surf == CEILING
        panel = (np.abs(x[m]) < 0.35) & ((z[m] % 2.0) < 0.7)
        rgb[m] = np.where(panel[:, None], 1.4, 0.92)
        m = (surf >= BACK_WALL) & (surf <= RIGHT_WALL)
        low, trim = y[m] < 0.9, np.abs(y[m] - 0.9) < 0.025
        rgb[m] = np.where(low[:, None], self.wainscot, self.wall) * np.where(trim, 0.6, 1.0)[:, None]
        for i, b in enumerate(self.boxes):
            m = surf == BOX + i
            axis, sign = b.face
            on_face = m & (normal[..., axis] == sign)
            rgb[m] = b.wood
            s = (x - b.lo[0]) if axis == 2 else (z - b.lo[2])
            span = (b.hi[0] - b.lo[0]) if axis == 2 else (b.hi[2] - b.lo[2])
            rgb[on_face] = self._books(b, s[on_face], y[on_face], span)
        return rgb

    @staticmethod
    def _books(b: Box, s: np.ndarray, y: np.ndarray, span: float) -> np.ndarray:
        frame, board = 0.035, 0.025
        rows, n = b.widths.shape
        row = np.clip(np.floor(y / b.row_h), 0, rows - 1).astype(int)
        yin = y - row * b.row_h
        flat = (np.cumsum(b.widths, 1) + np.arange(rows)[:, None] * 1000.0).ravel()
        idx = np.searchsorted(flat, s - frame + row * 1000.0, side="right") - row * n
        ok = idx < n
        idx = np.clip(idx, 0, n - 1)
        tall = (yin - board) < b.heights[row, idx] * (b.row_h - board)
        book = ok & tall & ~b.gaps[row, idx]
        label = np.abs((yin - board) / (b.row_h - board) - 0.6) < 0.06
        col = np.where(book[:, None], b.colours[row, idx] * np.where(label, 1.5, 1.0)[:, None],
                       b.wood * 0.25)
        wood = (s < frame) | (s > span - frame) | (yin < board) | (y > b.hi[1] - frame)
        return np.where(wood[:, None], b.wood, col)


def make_scene(seed: int, k: int, size: int) -> Scene:
    """Background k of a seed: room size, camera, materials, bookcases (its own random stream)."""
    rng = make_rng(seed, 1, k)
    fov = math.radians(rng.uniform(55, 70))
    cam = Camera(size, size / (2 * math.tan(fov / 2)), size / 2, size * rng.uniform(0.38, 0.5),
                 rng.uniform(1.3, 1.7))
    left, right, back, ceil = rng.uniform(1.8, 3.2), rng.uniform(1.8, 3.2), rng.uniform(5.5, 8), rng.uniform(2.6, 3.4)
    wall = _WALLS[rng.integers(len(_WALLS))] * rng.uniform(0.85, 1.1, 3)
    style = int(rng.integers(3))
    floor_cols = _FLOORS[rng.integers(len(_FLOORS), size=2)] * rng.uniform(0.8, 1.15, (2, 3))
    scene = Scene(cam, left, right, back, ceil, wall, wall * rng.uniform(0.6, 0.85), style, floor_cols)
    wood = _WOODS[rng.integers(len(_WOODS))] * rng.uniform(0.85, 1.1, 3)
    depth_back = rng.uniform(0.3, 0.45)
    edges = np.sort(rng.uniform(-left, right, int(rng.integers(1, 4))))
    edges = np.concatenate([[-left], edges, [right]])
    for x0, x1 in itertools.pairwise(edges):  # back wall cases, some gaps
        if x1 - x0 > 0.5 and rng.random() < 0.85:
            h = min(ceil - 0.1, rng.uniform(1.6, 2.6))
            scene.boxes.append(_make_box(rng, [x0 + 0.02, 0, back - depth_back], [x1 - 0.02, h, back], (2, -1), wood))
    for side in (-1, 1):  # cases along the side walls, books facing the room
        if rng.random() < 0.7:
            z0, d, h = rng.uniform(1.5, 3.5), rng.uniform(0.3, 0.4), min(ceil - 0.1, rng.uniform(1.6, 2.4))
            wall_x = -left if side < 0 else right
            lo = [min(wall_x, wall_x - side * d), 0, z0]
            hi = [max(wall_x, wall_x - side * d), h, back - depth_back - 0.05]
            scene.boxes.append(_make_box(rng, lo, hi, (0, -side), wood))
    scene.light = np.array([rng.uniform(-0.5, 0.5), ceil - 0.1, rng.uniform(1.5, back - 1.5)])
    scene.light_tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.06, 0.06) * np.array([1, 0, -1])
    scene.ambient, scene.exposure = rng.uniform(0.45, 0.6), rng.uniform(0.9, 1.15)
    return scene
