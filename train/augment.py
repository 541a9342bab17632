"""Light augmentation for the `improved` recipe, applied to a whole batch on its device.

Geometry is applied identically to bg, fgbg, mask and depth (a horizontal flip: a mirrored
scene is still a valid scene, while a vertical flip would put the floor on top and teach depth
nonsense). Colour is applied to the inputs only, the same jitter to bg and fgbg of a pair (one
camera, one exposure) plus a small independent brightness change of the background shot, as
happens when the light changes between the two pictures.

The random draws come from a generator seeded by (seed, step), not from the global RNG, so a
resumed run draws exactly what an unbroken one would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Jitter:
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.2  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.2
    saturation: float = 0.2
    bg_brightness: float = 0.05  # extra, independent brightness factor for bg only


def _uniform(g: torch.Generator, n: int, spread: float) -> torch.Tensor:
    return 1.0 + (torch.rand(n, generator=g) * 2.0 - 1.0) * spread


def _colour(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation as torchvision defines them, per sample."""
    luma_w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = x * brightness
    mean = (x * luma_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    gray = (x * luma_w).sum(1, keepdim=True)
    x = (x - gray) * saturation + gray
    return x.clamp(0.0, 1.0)


def augment_batch(bg: torch.Tensor, fgbg: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor, *,
                  seed: int, step: int, jitter: Jitter = Jitter()) -> tuple[torch.Tensor, ...]:
    """A new (bg, fgbg, mask, depth) batch; the inputs are not modified."""
    n = bg.shape[0]
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % 2**63)
    flip = torch.rand(n, generator=g) < jitter.flip
    shape = (n, 1, 1, 1)
    b = _uniform(g, n, jitter.brightness).view(shape)
    c = _uniform(g, n, jitter.contrast).view(shape)
    s = _uniform(g, n, jitter.saturation).view(shape)
    b_bg = _uniform(g, n, jitter.bg_brightness).view(shape)
    dev = bg.device
    flip = flip.to(dev).view(shape)
    b, c, s, b_bg = (t.to(device=dev, dtype=bg.dtype) for t in (b, c, s, b_bg))

    def geo(x: torch.Tensor) -> torch.Tensor:
        return torch.where(flip, x.flip(-1), x)

    bg2 = _colour(geo(bg), b * b_bg, c, s)
    fgbg2 = _colour(geo(fgbg), b, c, s)
    return bg2, fgbg2, geo(mask), geo(depth)
