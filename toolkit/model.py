"""The EVA4 week-15 mask + depth network, exactly as in architecture.md, and its I/O wrapper.

`EVA4Net` keeps the original module names (`convblock1`, `convblock5_1x1`, ...) so the original
author's state dicts map onto it 1:1, minus the four modules the original forward never called.
It upsamples by a scale factor of 2 (the original used fixed sizes 64 and 128, the same thing at
128 x 128), so any H, W divisible by 4 works.

`MaskDepthModel` wraps the network with the input normalisation and the output decoding of an
`IOSpec`: images in [0, 1] in, mask and depth in [0, 1] out. This is what every backend runs,
so exports carry the same ops in their graph.
"""

from __future__ import annotations

import torch
from torch import nn

from .spec import IOSpec

# The four modules the original checkpoint carries but whose outputs the forward never used.
UNUSED_LEGACY_MODULES = ("convblock3", "convblock3_", "convblock3_1x1", "convblock4_1x1")


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 (dilation 2, padding 2, with bias) then pointwise 1x1 (with bias).

    Named like the original's `depthwise_separable_conv` children so keys are
    `<block>.0.depthwise.weight` and `<block>.0.pointwise.bias`.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=2, dilation=2, groups=cin, bias=True)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def cbr(cin: int, cout: int) -> nn.Sequential:
    """Conv 3x3 (no bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def dsb(cin: int, cout: int) -> nn.Sequential:
    """Depthwise-separable (dilated) conv -> BatchNorm -> ReLU."""
    return nn.Sequential(DepthwiseSeparableConv(cin, cout), nn.BatchNorm2d(cout), nn.ReLU())


def proj(cin: int, cout: int) -> nn.Sequential:
    """1x1 projection without bias."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False))


class EVA4Net(nn.Module):
    """Siamese stem, dilated depthwise-separable trunk, mask and depth branches, one shared tail.

    forward(bg, fgbg) takes normalised inputs and returns the raw `(mask, depth)` outputs.

    `joint_tail` (not part of the state dict) runs the shared tail once on the mask and depth
    features stacked along the batch instead of once each. In eval mode the two are the same
    computation. In training they differ in BatchNorm: called once each, the tail's BatchNorm
    layers normalise each branch by its own batch statistics but keep one set of running
    statistics, a blend of both branches, which is what eval mode then applies to each. When
    the branches' features differ (a mask trained as logits next to a depth), eval-mode outputs
    drift from what was trained. Jointly, training normalises with the same blended statistics
    that eval mode uses. The seed's recipe keeps the original per-branch calls.
    """

    joint_tail: bool = False

    def __init__(self) -> None:
        super().__init__()
        # Stem: one set of weights applied to bg and fgbg separately.
        self.convblock1 = cbr(3, 32)
        self.convblock2 = cbr(32, 32)
        self.convblock2_ = cbr(32, 64)
        # Trunk on the concatenated 128 channels at H/2.
        self.convblock4 = dsb(128, 128)
        self.convblock4_ = dsb(128, 128)
        # Mask branch at H/4.
        self.convblock5 = dsb(128, 256)
        self.convblock5_ = dsb(256, 256)
        self.convblock5_1x1 = proj(256, 128)
        # Depth branch, stacked on the mask branch's output.
        self.convblock6 = dsb(128, 256)
        self.convblock6_ = dsb(256, 256)
        self.convblock6_1x1 = proj(256, 128)
        # Decoder tail shared by both heads.
        self.convblock7 = dsb(128, 256)
        self.convblock7_ = dsb(256, 256)
        self.convblock7_1x1 = proj(256, 128)
        self.convblock8 = dsb(128, 128)
        self.convblock8_ = nn.Sequential(nn.Conv2d(128, 1, 3, padding=1, bias=False))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")  # no weights: state dict unchanged

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.convblock2_(self.convblock2(self.convblock1(x))))

    def tail(self, z: torch.Tensor) -> torch.Tensor:
        u = self.up(z)
        u = u + self.convblock7_1x1(self.convblock7_(self.convblock7(u)))
        u = self.up(u)
        return self.convblock8_(self.convblock8(u))

    def forward(self, bg: torch.Tensor, fgbg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.stem(bg), self.stem(fgbg)], dim=1)
        x = x + self.convblock4_(self.convblock4(x))
        x = self.pool(x)
        m = x + self.convblock5_1x1(self.convblock5_(self.convblock5(x)))
        d = m + self.convblock6_1x1(self.convblock6_(self.convblock6(m)))
        if self.joint_tail:
            mask, depth = self.tail(torch.cat([m, d], dim=0)).chunk(2, dim=0)
            return mask, depth
        return self.tail(m), self.tail(d)


class _Normalise(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _Decode(nn.Module):
    def __init__(self, kind: str, scale: float, offset: float):
        super().__init__()
        self.kind, self.scale, self.offset = kind, float(scale), float(offset)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if self.kind == "sigmoid":
            return torch.sigmoid(raw)
        return torch.clamp(raw * self.scale + self.offset, 0.0, 1.0)


class MaskDepthModel(nn.Module):
    """`EVA4Net` plus the normalisation and decoding of an `IOSpec`: [0, 1] in, [0, 1] out."""

    def __init__(self, net: EVA4Net, spec: IOSpec):
        super().__init__()
        self.net = net
        self.spec = spec
        self.norm_bg = _Normalise(spec.bg.mean, spec.bg.std)
        self.norm_fgbg = _Normalise(spec.fgbg.mean, spec.fgbg.std)
        self.decode_mask = _Decode(spec.mask.kind, spec.mask.scale, spec.mask.offset)
        self.decode_depth = _Decode(spec.depth.kind, spec.depth.scale, spec.depth.offset)
        # Wrapping a network that already lives on a GPU (the training's weight average) gives a
        # model there too: the normalisation constants follow the network's weights.
        weight = next(net.parameters(), None)
        if weight is not None:
            self.norm_bg.to(weight.device)
            self.norm_fgbg.to(weight.device)

    def forward(self, bg: torch.Tensor, fgbg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask_raw, depth_raw = self.net(self.norm_bg(bg), self.norm_fgbg(fgbg))
        return self.decode_mask(mask_raw), self.decode_depth(depth_raw)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
