"""Train / held-out split by whole backgrounds.

Why: every background appears in hundreds of composites (all foregrounds, all placements). A
random split by sample puts the same room in both halves, and the test score then measures
memorised rooms, not generalisation. Holding out whole backgrounds avoids that leak.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..core.errors import UserError
from .reader import PairDataset, Sample, samples_of


def split_by_background(
    data: PairDataset | Iterable[Sample], holdout: float = 0.2, seed: int = 0
) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices) into the sample list; no background is in both.

    About `holdout` of the backgrounds (rounded, at least one, and at least one left for
    training when there are two or more) are drawn with `seed`; the same data and seed always
    give the same split. With a single background everything is training data.
    """
    if not 0.0 < float(holdout) < 1.0:
        raise UserError(f"holdout must be between 0 and 1 (exclusive), got {holdout}")
    samples = samples_of(data)
    bgs = sorted({s.bg for s in samples})
    n_hold = 0
    if len(bgs) >= 2:
        n_hold = min(max(round(holdout * len(bgs)), 1), len(bgs) - 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(bgs))
    held = {bgs[j] for j in order[:n_hold]}
    train = [i for i, s in enumerate(samples) if s.bg not in held]
    test = [i for i, s in enumerate(samples) if s.bg in held]
    return train, test


def evenly(count: int, n: int) -> list[int]:
    """`n` of the indices 0..count-1 spread evenly, first and last included (all when n >= count):
    samples from every background, not just the first ones."""
    if count <= 0 or n <= 0:
        return []
    return [int(i) for i in np.unique(np.linspace(0, count - 1, min(n, count)).round().astype(int))]
