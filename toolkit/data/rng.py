"""The synthetic set's random streams, in a module of their own.

Why: the rooms (`scene.py`), the figures (`figures.py`) and the writer (`synth.py`) each draw
from streams keyed by the seed plus tags (1 = background k, 2 = foreground m, 3 = placement it,
4 = composites of background k), so adding backgrounds never changes existing ones. All three
need the same keying, and none of them should import another just for it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_rng"]


def make_rng(seed: int, *tags: int) -> np.random.Generator:
    """The stream for `seed` and `tags`: the same arguments give the same draws on any platform."""
    return np.random.default_rng([seed, *tags])
