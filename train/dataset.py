"""Torch views of a `toolkit.data` pair set, and the deterministic batch order of each epoch.

Samples stay in [0, 1]: the model wrapper (`toolkit.net.model.MaskDepthModel`) owns the input
normalisation and the loss owns the target encoding, so nothing here knows the statistics.

The order of batches is a pure function of (seed, epoch): a `torch.Generator` seeded from both
permutes the training indices. That is what lets `--resume` continue mid-epoch with exactly the
batches an uninterrupted run would have seen — it skips the ones already done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class PairTensors(Dataset):
    """`dataset.load(indices[i], size)` as a dict of float32 tensors: bg, fgbg [3,H,W], mask,
    depth [1,H,W], all in [0, 1]. Picklable as long as the pair set is (worker processes)."""

    def __init__(self, pairs: Any, indices: Sequence[int], size: tuple[int, int]):
        self.pairs = pairs
        self.indices = [int(i) for i in indices]
        self.size = (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = self.pairs.load(self.indices[i], self.size)
        return {k: torch.from_numpy(sample[k]) for k in ("bg", "fgbg", "mask", "depth")}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The permutation of `range(n)` used in `epoch` (same seed and epoch, same order)."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def batches_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Steps per epoch for `world` processes taking `batch_size` each. The last, smaller batch
    is kept: small sets would otherwise lose a share of every epoch."""
    step = batch_size * world
    return (n + step - 1) // step


class EpochBatches(Sampler[list[int]]):
    """Batch sampler for one DataLoader kept across epochs: `set_epoch(e, start)` picks the order
    of epoch `e` and skips its first `start` batches (resume). It runs in the main process, so
    persistent workers see the new order without being restarted.

    With `world` > 1 processes, each step's global batch (`batch_size * world` indices of the
    epoch's order) is dealt out round-robin and this sampler yields rank `rank`'s share. A short
    last global batch is topped up from the start of the order so no rank gets an empty batch
    (an empty rank would leave the others waiting in the gradient all-reduce)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world = int(rank), int(world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(0, batches_per_epoch(self.n, self.batch_size, self.world) - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.n, self.seed, self.epoch)
        step = self.batch_size * self.world
        for b in range(self.start, batches_per_epoch(self.n, self.batch_size, self.world)):
            chunk = order[b * step:(b + 1) * step]
            while len(chunk) < self.world:  # top up a short last batch (see the class docstring)
                chunk = chunk + order[:self.world - len(chunk)]
            yield chunk[self.rank::self.world]
