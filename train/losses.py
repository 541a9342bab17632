"""The training losses: one term per output, chosen by name in the recipe.

The network has no final activation; what its raw outputs mean is fixed by the recipe's
decoding (`toolkit.core.spec.Decoding`), and every loss here is written against that decoding, so
`decode(raw)` at inference time is the quantity that was trained:
- regression terms (`l1`, `smooth_l1`, `mse`) compare raw outputs with targets *encoded* into
  the raw space (`Decoding.encode_target`): the seed trained L1 on targets normalised by the
  dataset statistics, and `clip(raw * std + mean)` undoes exactly that;
- `bce`, `bce_dice` treat raw as logits (sigmoid decodings only): BCE on the logits is stable
  where BCE on probabilities is not, and soft Dice counts the person's pixels as a set, so a
  small person is not drowned by the background the way a per-pixel loss lets it be;
- `l1_ssim_grad` compares *decoded* depth (before the clip, so gradients never vanish) with
  the target: L1 for the values, SSIM for local structure, and L1 of the image gradients for
  edges (the terms of DenseDepth, Alhashim & Wonka 2018).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from toolkit.core.errors import UserError
from toolkit.core.spec import Decoding

from .config import Recipe

# (raw output, [0, 1] target, decoding) -> scalar loss
LossTerm = Callable[[torch.Tensor, torch.Tensor, Decoding], torch.Tensor]


def decoded(raw: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """The decoding without its final clip (the clip's gradient is 0 outside [0, 1])."""
    if decoding.kind == "sigmoid":
        return torch.sigmoid(raw)
    return raw * decoding.scale + decoding.offset


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """`1 - Dice` per image, averaged: an image with no person in either scores 0 loss."""
    dims = tuple(range(1, prob.dim()))
    inter = (prob * target).sum(dims)
    total = prob.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 3, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """Mean SSIM of two [N, C, H, W] maps in [0, 1] over `window`-sized box windows (reflect
    padding), the light form used for depth (Godard et al. 2017); a box window keeps it cheap
    and exact to differentiate at 32-128 px."""
    pad = window // 2
    x, y = F.pad(x, (pad,) * 4, mode="reflect"), F.pad(y, (pad,) * 4, mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, window, 1), F.avg_pool2d(y, window, 1)
    var_x = F.avg_pool2d(x * x, window, 1) - mu_x ** 2
    var_y = F.avg_pool2d(y * y, window, 1) - mu_y ** 2
    cov = F.avg_pool2d(x * y, window, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return (num / den).mean()


def gradient_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences of two maps."""
    dx = (pred[..., :, 1:] - pred[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def _regression(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> LossTerm:
    def term(raw: torch.Tensor, target: torch.Tensor, decoding: Decoding) -> torch.Tensor:
        return fn(raw, decoding.encode_target(target))
    return term


def _logits(with_dice: bool) -> LossTerm:
    def term(raw: torch.Tensor, target: torch.Tensor, decoding: Decoding) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(raw.float(), target.float())
        if with_dice:
            loss = loss + soft_dice_loss(torch.sigmoid(raw.float()), target.float())
        return loss
    return term


def _l1_ssim_grad(raw: torch.Tensor, target: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    pred, target = decoded(raw.float(), decoding), target.float()
    structure = (1.0 - ssim(pred.clamp(0.0, 1.0), target)) / 2.0
    return F.l1_loss(pred, target) + structure + gradient_l1(pred, target)


LOSSES: dict[str, LossTerm] = {
    "l1": _regression(F.l1_loss),
    "smooth_l1": _regression(F.smooth_l1_loss),
    "mse": _regression(F.mse_loss),
    "bce": _logits(with_dice=False),
    "bce_dice": _logits(with_dice=True),
    "l1_ssim_grad": _l1_ssim_grad,
}
LOGIT_LOSSES = frozenset({"bce", "bce_dice"})


class MaskDepthLoss:
    """`mask_weight * loss(mask) + depth_weight * loss(depth)` with the recipe's loss terms.

    Calling it returns the total (for backward) and its parts as detached tensors (for logs),
    so a training step does not force a device sync per part.
    """

    def __init__(self, recipe: Recipe, mask: Decoding | None = None, depth: Decoding | None = None):
        self.mask_decoding = mask or recipe.spec.mask
        self.depth_decoding = depth or recipe.spec.depth
        for output, name, decoding in (("mask", recipe.mask_loss, self.mask_decoding),
                                       ("depth", recipe.depth_loss, self.depth_decoding)):
            if name not in LOSSES:
                raise UserError(f"recipe {recipe.name!r}: unknown loss {name!r} for the {output}; known: {', '.join(LOSSES)}")
            if name in LOGIT_LOSSES and decoding.kind != "sigmoid":
                raise UserError(f"recipe {recipe.name!r}: the {output} loss {name!r} trains logits, "
                                f"which needs a sigmoid decoding, not {decoding.kind!r}")
        self.mask_fn, self.depth_fn = LOSSES[recipe.mask_loss], LOSSES[recipe.depth_loss]
        self.mask_weight, self.depth_weight = float(recipe.mask_weight), float(recipe.depth_weight)

    def encode(self, mask: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[0, 1] targets -> the raw space of the decodings (what the regression terms compare)."""
        return self.mask_decoding.encode_target(mask), self.depth_decoding.encode_target(depth)

    def __call__(self, mask_raw: torch.Tensor, depth_raw: torch.Tensor, mask: torch.Tensor,
                 depth: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lm = self.mask_fn(mask_raw, mask, self.mask_decoding)
        ld = self.depth_fn(depth_raw, depth, self.depth_decoding)
        total = self.mask_weight * lm + self.depth_weight * ld
        return total, {"mask_loss": lm.detach(), "depth_loss": ld.detach()}
