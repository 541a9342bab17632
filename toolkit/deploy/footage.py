"""Synthetic fixed-camera footage: a textured room background and a figure walking across it.

What the deploy commands are tried on when no camera is at hand: the tests, `benchmarks/stream.py`
and `benchmarks/serve_load.py` feed it to `toolkit stream` and `toolkit serve`. NumPy only; PyAV
(the `video` extra) only to encode a clip.

Two kinds: `walking_scene` (a flat two-colour figure over shelves: cheap, any size) and
`room_scene` (a room and a person of the synthetic data set, `toolkit.data.synth`, walking across
it: what a model trained on that set segments, so figures against the truth mean something).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A uint8 HxWx3 'room': a vertical gradient with shelves of coloured books."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.55, 0.25, h)[:, None, None]
    img = np.broadcast_to(y * np.array([1.0, 0.9, 0.8]), (h, w, 3)).copy()
    for top in range(4, h - 6, 12):
        img[top : top + 2] = (0.35, 0.24, 0.13)
        x = 0
        while x < w:
            bw = int(rng.integers(2, 5))
            img[top - 8 : top, x : x + bw - 1] = rng.random(3) * 0.7 + 0.2
            x += bw
    return (img * 255).astype(np.uint8)


def walking_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    """`n` frames of a figure (head + body) walking left to right over `background(h, w)`."""
    return walking_scene(n, h, w, seed)[0]


def walking_scene(n: int, h: int = 48, w: int = 64, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`walking_frames` and each frame's true mask (bool HxW: the figure's pixels)."""
    bg = background(h, w, seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames, masks = [], []
    for i in range(n):
        cx = 6 + (w - 12) * i / max(1, n - 1)
        head = (yy - h * 0.3) ** 2 + (xx - cx) ** 2 <= (h * 0.1) ** 2
        body = (np.abs(xx - cx) <= w * 0.07) & (yy >= h * 0.4) & (yy <= h * 0.92)
        f = bg.copy()
        f[head] = (215, 160, 120)
        f[body] = (45, 95, 170)
        frames.append(f)
        masks.append(head | body)
    return frames, masks


def room_background(size: int, seed: int = 0, k: int = 1) -> np.ndarray:
    """Background `k` of the synthetic set of `seed` at `size` x `size`, uint8 (as the set writes it)."""
    return _room(size, seed, k)[2]


def _room(size: int, seed: int, k: int):
    from ..data.rng import make_rng
    from ..data.scene import make_scene
    from ..data.synth import SUPERSAMPLE, _blocks

    scene = make_scene(seed, k, size)
    sub = scene.render(SUPERSAMPLE)
    bg01 = np.clip(_blocks(sub["rgb"], SUPERSAMPLE) + make_rng(seed, 4, k).normal(0, 0.012, (size, size, 3)), 0, 1)
    return scene, sub, (bg01 * 255 + 0.5).astype(np.uint8), bg01


def room_scene(n: int, size: int, seed: int = 0, k: int = 1, m: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`n` frames of person `m` of the synthetic set walking left to right through its room `k`
    (mid-depth), and each frame's true mask (bool: coverage above one half)."""
    from ..data.figures import make_figure
    from ..data.rng import make_rng
    from ..data.synth import composite

    scene, sub, _, bg01 = _room(size, seed, k)
    fig = make_figure(seed, m)
    rng = make_rng(seed, 5, k)
    frames, masks = [], []
    for i in range(n):
        fgbg, cover, _ = composite(scene, sub, bg01, fig, (0.45, 0.05 + 0.9 * i / max(1, n - 1)), False, rng)
        frames.append((np.clip(fgbg, 0, 1) * 255 + 0.5).astype(np.uint8))
        masks.append(cover > 0.5)
    return frames, masks


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Encode frames as H.264 in an .mp4 (what a camera recorder writes)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def scripted_scene(n: int, h: int, w: int, *, light_at: int | None = None, light: float = 0.6,
                   shift_at: int | None = None, shift: tuple[int, int] = (2, 3), seed: int = 0, room: bool = False,
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`walking_scene` (or `room_scene`, which needs h == w) with scripted events: from frame
    `light_at` the light changes (every pixel x `light`), from frame `shift_at` the camera has
    moved (the image shifted by `shift` pixels, edges repeated). Returns the frames and the true
    masks (which move with the camera)."""
    if room and h != w:
        raise ValueError(f"room_scene footage is square, asked {h}x{w}")
    frames, masks = room_scene(n, h, seed) if room else walking_scene(n, h, w, seed)
    out_frames, out_masks = [], []
    for i, (f, m) in enumerate(zip(frames, masks)):
        if shift_at is not None and i >= shift_at:
            f = np.pad(f, ((shift[0], 0), (shift[1], 0), (0, 0)), mode="edge")[:h, :w]
            m = np.pad(m, ((shift[0], 0), (shift[1], 0)))[:h, :w]
        if light_at is not None and i >= light_at:
            f = np.clip(f.astype(np.float32) * light, 0, 255).astype(np.uint8)
        out_frames.append(f)
        out_masks.append(m)
    return out_frames, out_masks
