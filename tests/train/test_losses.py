"""The seed recipe's loss against hand-computed values, and the recipe table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from toolkit.core.errors import UserError
from toolkit.core.spec import SEED_SPEC
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
    seed = TrainConfig(recipe="seed")
    assert seed.effective_lr == 0.01 and seed.effective_momentum == 0.9
    assert TrainConfig(recipe="seed", lr=0.1).effective_lr == 0.1
    assert TrainConfig().recipe == "improved" and TrainConfig().effective_lr == 3e-3


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


def test_improved_recipe_decodes_the_mask_as_a_probability():
    r = RECIPES["improved"]
    assert r.spec.mask.kind == "sigmoid" and r.mask_loss == "bce_dice"
    assert r.spec.depth == SEED_SPEC.depth and r.depth_loss == "l1_ssim_grad"
    assert r.optimizer == "adamw" and r.ema > 0 and r.augment and r.grad_clip > 0


def test_logit_losses_refuse_an_affine_decoding():
    with pytest.raises(UserError, match="needs a sigmoid decoding"):
        MaskDepthLoss(dataclasses.replace(RECIPES["seed"], mask_loss="bce_dice"))


def test_bce_dice_hand_values():
    """Perfect logits give ~0; logit 0 on an all-person target gives BCE ln 2 + Dice 1 - (2*0.5*16+1)/(8+16+1)."""
    loss = MaskDepthLoss(RECIPES["improved"])
    one = torch.ones(1, 1, 4, 4)
    _, parts = loss(torch.full((1, 1, 4, 4), 30.0), torch.zeros(1, 1, 4, 4), one, full(0.35)[:1])
    assert parts["mask_loss"].item() == pytest.approx(0.0, abs=1e-6)
    _, parts = loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), one, full(0.35)[:1])
    assert parts["mask_loss"].item() == pytest.approx(np.log(2) + 1 - 17 / 25, rel=1e-5)
    # an empty target predicted empty is no loss for Dice (smoothing), BCE ~0
    _, parts = loss(torch.full((1, 1, 4, 4), -30.0), torch.zeros(1, 1, 4, 4), 0 * one, full(0.35)[:1])
    assert parts["mask_loss"].item() == pytest.approx(0.0, abs=1e-6)


def test_depth_structure_loss_is_zero_only_at_the_target():
    from train.losses import gradient_l1, ssim

    loss = MaskDepthLoss(RECIPES["improved"])
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 1, 16, 16, generator=g)
    raw = (depth - 0.35) / 0.208  # the raw output whose decoding is exactly the target
    _, parts = loss(torch.zeros(2, 1, 16, 16), raw, torch.zeros(2, 1, 16, 16), depth)
    assert parts["depth_loss"].item() == pytest.approx(0.0, abs=1e-5)
    assert ssim(depth, depth).item() == pytest.approx(1.0, abs=1e-6)
    flat = torch.full_like(depth, float(depth.mean()))
    assert ssim(flat, depth).item() < 0.5 and gradient_l1(flat, depth).item() > 0.1
    raw_off = raw + 0.5 * torch.randn(raw.shape, generator=g)
    raw_off.requires_grad_(True)
    total, parts = loss(torch.zeros(2, 1, 16, 16), raw_off, torch.zeros(2, 1, 16, 16), depth)
    assert parts["depth_loss"].item() > 0.05
    total.backward()
    assert torch.isfinite(raw_off.grad).all() and raw_off.grad.abs().sum() > 0
