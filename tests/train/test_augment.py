"""Augmentation: geometry shared by all four tensors, colour on inputs only, reproducible per step."""

from __future__ import annotations

import torch

from train.augment import Jitter, augment_batch


def batch(n: int = 8, size: int = 8):
    g = torch.Generator().manual_seed(1)
    bg = torch.rand(n, 3, size, size, generator=g)
    fgbg = bg.clone()
    fgbg[:, :, 2:6, 1:3] = 0.9
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, 2:6, 1:3] = 1.0
    depth = torch.linspace(0, 1, size).view(1, 1, 1, size).expand(n, 1, size, size).clone()
    return bg, fgbg, mask, depth


def test_same_seed_and_step_same_result_other_step_differs():
    a = augment_batch(*batch(), seed=3, step=10)
    b = augment_batch(*batch(), seed=3, step=10)
    c = augment_batch(*batch(), seed=3, step=11)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_flip_moves_mask_depth_and_inputs_together():
    bg, fgbg, mask, depth = batch()
    no_colour = Jitter(flip=1.0, brightness=0, contrast=0, saturation=0, bg_brightness=0)
    bg2, fgbg2, mask2, depth2 = augment_batch(bg, fgbg, mask, depth, seed=0, step=0, jitter=no_colour)
    assert torch.equal(mask2, mask.flip(-1)) and torch.equal(depth2, depth.flip(-1))
    assert torch.allclose(bg2, bg.flip(-1)) and torch.allclose(fgbg2, fgbg.flip(-1))
    # the person is still where the mask says it is
    person = fgbg2[:, 0][mask2[:, 0] > 0.5]
    assert torch.allclose(person, torch.full_like(person, 0.9))


def test_colour_changes_inputs_only_and_stays_in_range():
    bg, fgbg, mask, depth = batch(n=32)
    only_colour = Jitter(flip=0.0)
    bg2, fgbg2, mask2, depth2 = augment_batch(bg, fgbg, mask, depth, seed=0, step=5, jitter=only_colour)
    assert torch.equal(mask2, mask) and torch.equal(depth2, depth)
    assert not torch.allclose(bg2, bg) and not torch.allclose(fgbg2, fgbg)
    assert bg2.min() >= 0 and bg2.max() <= 1 and fgbg2.min() >= 0 and fgbg2.max() <= 1
    # some samples flip with the default jitter, some do not
    _, _, m3, _ = augment_batch(bg, fgbg, mask, depth, seed=0, step=5)
    flipped = [(not torch.equal(m3[i], mask[i])) for i in range(32)]
    assert 4 < sum(flipped) < 28
