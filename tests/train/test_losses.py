"""The seed recipe's loss against hand-computed values, and the recipe table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from toolkit.errors import UserError
from toolkit.spec import SEED_SPEC
from train.config import RECIPES, TrainConfig, get_recipe
from train.losses import MaskDepthLoss


def full(value: float) -> torch.Tensor:
    return torch.full((2, 1, 4, 4), value)


def test_seed_recipe_is_the_original():
    r = RECIPES["seed"]
    assert (r.optimizer, r.lr, r.momentum) == ("sgd", 0.01, 0.9)
    assert (r.mask_loss, r.depth_loss, r.mask_weight, r.depth_weight) == ("l1", "l1", 1.0, 2.0)
    assert r.spec.mask.kind == "affine_clip" and (r.spec.mask.offset, r.spec.mask.scale) == (0.079, 0.254)
    assert (r.spec.depth.offset, r.spec.depth.scale) == (0.35, 0.208)
    assert TrainConfig().effective_lr == 0.01 and TrainConfig().effective_momentum == 0.9
    assert TrainConfig(lr=0.1).effective_lr == 0.1


def test_seed_loss_hand_values():
    loss = MaskDepthLoss(RECIPES["seed"])
    # mask target 1 -> (1 - 0.079) / 0.254 = 3.625984; depth target 0.35 -> 0: L1 of zeros
    total, parts = loss(full(0.0), full(0.0), full(1.0), full(0.35))
    assert parts["mask_loss"].item() == pytest.approx(0.921 / 0.254, rel=1e-5)
    assert parts["depth_loss"].item() == pytest.approx(0.0, abs=1e-6)
    assert total.item() == pytest.approx(0.921 / 0.254, rel=1e-5)
    # depth target 0.558 -> (0.558 - 0.35) / 0.208 = 1; raw 3 -> |3 - 1| = 2, weighted x2
    total, parts = loss(full(0.921 / 0.254), full(3.0), full(1.0), full(0.558))
    assert parts["mask_loss"].item() == pytest.approx(0.0, abs=1e-5)
    assert parts["depth_loss"].item() == pytest.approx(2.0, rel=1e-5)
    assert total.item() == pytest.approx(4.0, rel=1e-5)


def test_loss_is_per_pixel_mean_and_has_gradients():
    loss = MaskDepthLoss(RECIPES["seed"])
    raw = torch.zeros(1, 1, 2, 2, requires_grad=True)
    mask = torch.tensor([[[[0.079, 0.079], [0.333, 0.333]]]])  # encoded: 0, 0, 1, 1
    total, parts = loss(raw, torch.zeros(1, 1, 2, 2), mask, full(0.35)[:1, :, :2, :2])
    assert parts["mask_loss"].item() == pytest.approx(0.5, rel=1e-5)
    total.backward()
    assert raw.grad is not None and torch.count_nonzero(raw.grad) == 2


def test_targets_are_encoded_with_the_spec_decoding():
    """decode(encode(t)) == t: training against the encoding makes decoded outputs land in [0, 1]."""
    loss = MaskDepthLoss(RECIPES["seed"])
    t = torch.linspace(0, 1, 11).view(1, 1, 1, 11)
    m, d = loss.encode(t, t)
    assert np.allclose(SEED_SPEC.mask.apply(m.numpy()), t.numpy(), atol=1e-6)
    assert np.allclose(SEED_SPEC.depth.apply(d.numpy()), t.numpy(), atol=1e-6)


def test_unknown_recipe_and_loss_are_user_errors():
    with pytest.raises(UserError, match="unknown recipe"):
        get_recipe("nope")
    with pytest.raises(UserError, match="unknown loss"):
        MaskDepthLoss(dataclasses.replace(RECIPES["seed"], depth_loss="huber?"))
