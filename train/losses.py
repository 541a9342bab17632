"""The training losses: per-output losses on raw outputs against targets in the raw space.

The network has no final activation; what its raw outputs mean is fixed by the recipe's
decoding (`toolkit.spec.Decoding`). The seed trained with L1 on targets normalised by the
dataset statistics, i.e. on `Decoding.encode_target(target)`; training against exactly that
encoding is what makes `decode(raw)` at inference time return a value in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from toolkit.errors import UserError
from toolkit.spec import Decoding

from .config import Recipe

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "l1": F.l1_loss,
    "smooth_l1": F.smooth_l1_loss,
    "mse": F.mse_loss,
    # For sigmoid decodings: the target in [0, 1] is the probability, raw is the logit.
    "bce": F.binary_cross_entropy_with_logits,
}


class MaskDepthLoss:
    """`mask_weight * loss(mask) + depth_weight * loss(depth)`, targets encoded per decoding.

    Calling it returns the total (for backward) and its parts as detached tensors (for logs),
    so a training step does not force a device sync per part.
    """

    def __init__(self, recipe: Recipe, mask: Decoding | None = None, depth: Decoding | None = None):
        for name in (recipe.mask_loss, recipe.depth_loss):
            if name not in LOSSES:
                raise UserError(f"recipe {recipe.name!r}: unknown loss {name!r}; known: {', '.join(LOSSES)}")
        self.mask_decoding = mask or recipe.spec.mask
        self.depth_decoding = depth or recipe.spec.depth
        self.mask_fn, self.depth_fn = LOSSES[recipe.mask_loss], LOSSES[recipe.depth_loss]
        self.mask_weight, self.depth_weight = float(recipe.mask_weight), float(recipe.depth_weight)

    def encode(self, mask: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[0, 1] targets -> the raw space the network is trained in."""
        return self.mask_decoding.encode_target(mask), self.depth_decoding.encode_target(depth)

    def __call__(self, mask_raw: torch.Tensor, depth_raw: torch.Tensor, mask: torch.Tensor,
                 depth: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask_t, depth_t = self.encode(mask, depth)
        lm = self.mask_fn(mask_raw, mask_t)
        ld = self.depth_fn(depth_raw, depth_t)
        total = self.mask_weight * lm + self.depth_weight * ld
        return total, {"mask_loss": lm.detach(), "depth_loss": ld.detach()}
