"""A synthetic data set in the original layout, with exact depth (numpy + Pillow only).

Why: the original 9 GB set is not downloadable here, yet training, export and parity must run on
a fresh machine. So this writes the same folders and names as dataset.md (`Background/`,
`OverlayedImages/<it>/`, `OverlayedMasks/<it>/`, `DepthImage/<it>/`, or one zip per kind), and
one reader serves both. Unlike the original (depth estimated by a network), the depth here is
exact: each room is a box seen through a pinhole camera, ray-traced per pixel.

Geometry: camera at (0, Hc, 0) looking along +z, y up, focal length f pixels, principal point
(cx, cy). Pixel centre (u + 0.5, v + 0.5) has ray (dx, dy, 1) with dx = (u + 0.5 - cx) / f and
dy = (cy - v - 0.5) / f, so the ray parameter t is the depth along the optical axis. Room: floor
y = 0, ceiling y = Hr, back wall z = Zb, side walls x = -Xl and x = Xr; bookcases are boxes.
A floor pixel therefore has depth Hc * f / (v + 0.5 - cy); a back-wall pixel has depth Zb.

People are flat figures (head, torso, limbs as ellipses and capsules) standing upright on the
floor at depth Z, given a rounded relief (each part bulges towards the camera by up to its
half-thickness), so their depth is nearest-surface too; the composite is a true z-test.

Depth files: 8-bit grey, log-spaced between DEPTH_NEAR_M and DEPTH_FAR_M (`metres_to_gray`,
`gray_to_metres` map metres to "nearness", 1 = near), so each grey level is the same ~1.2 % of
the distance; written in the original's convention, bright = far (grey = 1 - nearness), unless
`depth_convention="near-bright"` (what the toolkit wrote before the convention was recorded).
`dataset.json` at the top says which (`toolkit.data.info`), and `metres_reader` reads it back.
Seeds: every background k, foreground m and placement it has its own random stream, so adding
backgrounds never changes existing ones, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import UserError
from ..core.fsutil import atomic_path, ensure_dir, write_bytes_atomic
from ..core.spec import ORIGINAL_DEPTH_CONVENTION, check_depth_convention, nearness
from .figures import Figure, make_figure, render_figure
from .info import write_info
from .names import FOLDER_NAMES, format_background_name, format_pair_name
from .rng import make_rng
from .scene import (  # re-exported: the synthetic set's depth mapping is part of its API
    DEPTH_FAR_M,
    DEPTH_NEAR_M,
    Scene,
    gray_to_metres,
    make_scene,
    metres_to_gray,
)

JPEG_QUALITY = 95
DEPTH_GREY = f"log-spaced metres, {DEPTH_NEAR_M:g} to {DEPTH_FAR_M:g} m"  # what dataset.json says of the grey
SUPERSAMPLE = 3  # odd, so the centre sub-sample of each pixel is the pixel centre
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

__all__ = ["DEPTH_FAR_M", "DEPTH_NEAR_M", "SynthReport", "gray_to_metres", "make_figure", "make_scene",
           "metres_reader", "metres_to_gray", "synthesize"]



# -- compositing and writing ----------------------------------------------------------------
def _blocks(a: np.ndarray, ss: int) -> np.ndarray:
    """Mean over each ss x ss block (sub-samples -> pixels)."""
    h, w = a.shape[0] // ss, a.shape[1] // ss
    return a.reshape(h, ss, w, ss, *a.shape[2:]).mean(axis=(1, 3))


def composite(scene: Scene, sub: dict, bg: np.ndarray, fig: Figure, place: tuple[float, float],
              mirror: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stand `fig` in `scene` at a placement: (fgbg HxWx3, mask coverage HxW, depth metres HxW).

    `place` = (share of the free depth range, share of the free width); `bg` is the background
    image as written (noise included) so the composite differs from it only where the person is.
    """
    c, ss, half = scene.camera, SUPERSAMPLE, fig.half_width
    x, z = scene.place(fig, place)
    u0 = int(np.clip(math.floor(c.cx + c.f * (x - half) / z), 0, c.size))
    u1 = int(np.clip(math.ceil(c.cx + c.f * (x + half) / z) + 1, 0, c.size))
    v0 = int(np.clip(math.floor(c.cy - c.f * (fig.height + 0.05 - c.height) / z), 0, c.size))
    v1 = int(np.clip(math.ceil(c.cy + c.f * c.height / z) + 1, 0, c.size))
    mid = ss // 2
    depth = sub["depth"][mid::ss, mid::ss].copy()
    fgbg, mask = bg.copy(), np.zeros(depth.shape)
    if u1 <= u0 or v1 <= v0:
        return fgbg, mask, depth
    cu = (np.arange(u0 * ss, u1 * ss) + 0.5) / ss
    cv = (np.arange(v0 * ss, v1 * ss) + 0.5) / ss
    fx = (z * (cu - c.cx) / c.f - x) * (-1.0 if mirror else 1.0)
    fy = c.height + z * (c.cy - cv) / c.f
    pd, pcol = render_figure(fig, fx, fy, z)
    vis = pd < sub["depth"][v0 * ss:v1 * ss, u0 * ss:u1 * ss]
    to_l = scene.light - np.array([x, 1.2, z])
    d2 = float((to_l ** 2).sum())
    light = (scene.ambient + 0.8 * max(0.0, -to_l[2]) / math.sqrt(d2) / (1 + 0.05 * d2)) * scene.exposure
    cov = _blocks(vis.astype(float), ss)
    person = _blocks(pcol * vis[..., None], ss) * light * scene.light_tint
    noise = rng.normal(0, 0.012, person.shape)
    fgbg[v0:v1, u0:u1] = bg[v0:v1, u0:u1] * (1 - cov[..., None]) + (person + noise) * cov[..., None]
    mask[v0:v1, u0:u1] = cov
    centre = vis[mid::ss, mid::ss]
    depth[v0:v1, u0:u1] = np.where(centre, pd[mid::ss, mid::ss], depth[v0:v1, u0:u1])
    return np.clip(fgbg, 0, 1), mask, depth


def _jpeg(arr01: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.clip(arr01, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class _Writer:
    """Writes members either as files under `out` or into one zip per kind (atomic either way)."""

    def __init__(self, out: Path, zipped: bool):
        self.out, self.zipped, self.count = out, zipped, 0
        self._stack = contextlib.ExitStack()
        self._zips: dict[str, zipfile.ZipFile] = {}

    def __enter__(self) -> _Writer:  # noqa: PYI034 (typing.Self needs 3.11)
        if self.zipped:
            for kind, folder in FOLDER_NAMES.items():
                tmp = self._stack.enter_context(atomic_path(self.out / f"{folder}.zip"))
                self._zips[kind] = self._stack.enter_context(zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def add(self, kind: str, member: str, data: bytes) -> None:
        if self.zipped:  # fixed date, mode and system: same inputs, same zip bytes
            info = zipfile.ZipInfo(member, ZIP_DATE)
            info.compress_type, info.external_attr, info.create_system = zipfile.ZIP_STORED, 0o644 << 16, 3
            self._zips[kind].writestr(info, data)
        else:
            write_bytes_atomic(self.out / member, data)
        self.count += 1

    def written(self) -> list[Path]:
        return [self.out / (f"{f}.zip" if self.zipped else f) for f in FOLDER_NAMES.values()]


@dataclass(frozen=True)
class SynthReport:
    out: Path
    backgrounds: int
    foregrounds: int
    placements: int
    size: int
    seed: int
    zipped: bool
    files: int
    written: tuple[Path, ...]
    depth_convention: str = ORIGINAL_DEPTH_CONVENTION

    @property
    def pairs(self) -> int:
        return self.backgrounds * self.foregrounds * self.placements

    def summary(self) -> str:
        what = "zip files" if self.zipped else "folders"
        return (f"wrote {self.files} images ({self.backgrounds} backgrounds, {self.pairs} pairs, "
                f"{self.size}x{self.size}, seed {self.seed}, depth {self.depth_convention}) to {self.out} as {what}: "
                + ", ".join(p.name for p in self.written))


def metres_reader(convention: str) -> Callable[[np.ndarray], np.ndarray]:
    """Depth grey in [0, 1] of a synthetic set written in `convention` -> metres."""
    check_depth_convention(convention)
    return lambda grey: gray_to_metres(nearness(np.asarray(grey), convention))


def synthesize(out: str | Path, backgrounds: int = 8, foregrounds: int = 6, placements: int = 2,
               size: int = 160, seed: int = 0, zip: bool = False, force: bool = False,
               depth_convention: str = ORIGINAL_DEPTH_CONVENTION) -> SynthReport:
    """Write a synthetic set in the original layout as the folder `out` (folders, or zips with `zip`).

    The set is one unit: it is written into the sibling `.<name>.partial` (a stale one left by an
    interrupted call is removed first) and renamed to `out` at the end, so `out` never holds a
    half-written set nor a mix of two. An existing `out` must be an empty folder, or with `force`
    is replaced whole (every file in it goes). Members are generated in a fixed order
    (s, it, p); the second half of the placements use the mirrored foregrounds, as iterations
    20..39 did in the original.
    """
    for name, v, lo in (("backgrounds", backgrounds, 1), ("foregrounds", foregrounds, 1),
                        ("placements", placements, 1), ("size", size, 32), ("seed", seed, 0)):
        if int(v) < lo:
            raise UserError(f"synth: {name} must be at least {lo}, got {v}")
    if size > 4096:
        raise UserError(f"synth: size must be at most 4096, got {size}")
    try:
        check_depth_convention(depth_convention)
    except ValueError as e:
        raise UserError(f"synth: {e}") from None
    out = Path(out)
    # the folder itself (not a link to it), with a name to put the sibling beside
    target = out.resolve() if out.name in ("", ".", "..") or out.is_symlink() else out
    if target.exists() and not target.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if target.is_dir() and not force and any(target.iterdir()):
        raise UserError(f"{out}: exists and is not empty; pick a new folder, or --force to replace it whole")
    partial = target.with_name(f".{target.name}.partial")
    if partial.is_dir() and not partial.is_symlink():
        shutil.rmtree(partial)
    elif partial.exists() or partial.is_symlink():
        partial.unlink()
    ensure_dir(partial)
    try:
        figures = [make_figure(seed, m) for m in range(1, foregrounds + 1)]
        places = [tuple(make_rng(seed, 3, it).uniform([0, 0.1], [1, 0.9])) for it in range(placements)]
        first_mirrored = (placements + 1) // 2
        with _Writer(partial, zip) as w:
            for k in range(1, backgrounds + 1):
                scene = make_scene(seed, k, size)
                sub = scene.render(SUPERSAMPLE)
                rng = make_rng(seed, 4, k)
                bg = np.clip(_blocks(sub["rgb"], SUPERSAMPLE) + rng.normal(0, 0.012, (size, size, 3)), 0, 1)
                w.add("bg", f"{FOLDER_NAMES['bg']}/{format_background_name(k)}", _jpeg(bg))
                for it in range(placements):
                    for m, fig in enumerate(figures, start=1):
                        fgbg, mask, depth = composite(scene, sub, bg, fig, places[it], it >= first_mirrored, rng)
                        name = format_pair_name(k, m, it)
                        w.add("fgbg", f"{FOLDER_NAMES['fgbg']}/{it}/{name}", _jpeg(fgbg))
                        w.add("mask", f"{FOLDER_NAMES['mask']}/{it}/{name}", _jpeg(mask))
                        grey = nearness(metres_to_gray(depth), depth_convention)
                        w.add("depth", f"{FOLDER_NAMES['depth']}/{it}/{name}", _jpeg(grey))
        write_info(partial, depth_convention=depth_convention, depth_grey=DEPTH_GREY, source="toolkit data synth",
                   seed=int(seed), size=int(size))
        _replace_folder(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    written = tuple(out / p.relative_to(partial) for p in w.written())
    return SynthReport(out, backgrounds, foregrounds, placements, size, seed, bool(zip), w.count, written, depth_convention)


def _replace_folder(src: Path, dst: Path) -> None:
    """Rename the finished folder `src` to `dst`; an existing `dst` is moved aside first and
    removed only once `src` is in its place."""
    old = None
    if dst.is_dir():
        if any(dst.iterdir()):
            old = dst.with_name(f".{dst.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dst, old)
        else:
            dst.rmdir()
    try:
        os.replace(src, dst)
    except OSError as e:
        if old is not None:
            os.replace(old, dst)  # put the old set back
        raise UserError(f"{dst}: cannot put the new data set in place ({e.strerror or e})") from None
    with contextlib.suppress(OSError):  # make the rename durable
        fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
