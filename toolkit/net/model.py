"""The EVA4 week-15 mask + depth network, exactly as in architecture.md, and its I/O wrapper.

`EVA4Net` keeps the original module names (`convblock1`, `convblock5_1x1`, ...) so the original
author's state dicts map onto it 1:1, minus the four modules the original forward never called.
It upsamples by a scale factor of 2 (the original used fixed sizes 64 and 128, the same thing at
128 x 128), so any H, W divisible by 4 works.

**The tail's BatchNorm statistics** (`tail_stats`, `TAIL_STATS`). The decoder tail runs once per
head with one set of weights; its BatchNorm layers can keep their running statistics three ways:

* `"shared"` (the original): one set; in training each head's call normalises by its own batch
  and both update the one set, which ends a blend of the two branches' statistics that eval mode
  then applies to both. The original author's checkpoints segment nothing in eval mode because
  of it (architecture.md); `toolkit.net.recalibrate` gives them one set per head.
* `"joint"`: one set; in training the tail runs once on both branches stacked along the batch, so
  it is normalised by the same blend that eval mode applies (eval-mode forward as "shared").
* `"per_head"`: one set per head (`HeadBatchNorm2d`), the affine weights still shared: each head
  is normalised in eval mode by what training normalised it with. No parameter is added; the
  state dict gains per-head buffers (`convblock7.1.mask.running_mean`, `...depth...`).

`MaskDepthModel` wraps the network with the input normalisation and the output decoding of an
`IOSpec`: images in [0, 1] in, mask and depth in [0, 1] out. This is what every backend runs,
so exports carry the same ops in their graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.spec import OUTPUT_NAMES, IOSpec

# The four modules the original checkpoint carries but whose outputs the forward never used.
UNUSED_LEGACY_MODULES = ("convblock3", "convblock3_", "convblock3_1x1", "convblock4_1x1")
TAIL_STATS = ("shared", "joint", "per_head")  # the tail's BatchNorm statistics (module docstring)
TAIL_NORM_BLOCKS = ("convblock7", "convblock7_", "convblock8")  # the tail's blocks with a BatchNorm
HEADS = OUTPUT_NAMES  # the tail runs once per head: "mask", "depth"
_STAT_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


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


class HeadBatchNorm2d(nn.Module):
    """BatchNorm with one affine (`weight`, `bias`) and one set of running statistics per head.

    `forward(x, head)` normalises like `nn.BatchNorm2d`, with the statistics of `head`: in
    training by the batch's (updating that head's running statistics), in eval mode by that
    head's running ones. Each head's statistics live in an affine-free `nn.BatchNorm2d` (its
    `momentum`, `eps`, `reset_running_stats()` work as usual; it is never called itself), so
    anything that walks BatchNorm modules (re-estimation) reaches them. One `F.batch_norm` per
    call: the ONNX graph has one BatchNormalization per call, as with a plain BatchNorm."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.mask = nn.BatchNorm2d(channels, affine=False)
        self.depth = nn.BatchNorm2d(channels, affine=False)

    def stats(self, head: str) -> nn.BatchNorm2d:
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r} (expected one of {', '.join(HEADS)})")
        return self.mask if head == "mask" else self.depth

    def forward(self, x: torch.Tensor, head: str) -> torch.Tensor:
        s = self.stats(head)
        momentum = 0.0
        if self.training:
            s.num_batches_tracked.add_(1)
            momentum = 1.0 / float(s.num_batches_tracked) if s.momentum is None else s.momentum
        return F.batch_norm(x, s.running_mean, s.running_var, self.weight, self.bias, self.training, momentum, s.eps)


def head_norm(bn: nn.Module, x: torch.Tensor, head: str) -> torch.Tensor:
    """A tail block's BatchNorm on `x` for `head`: its own statistics when it keeps one set per
    head, the shared ones otherwise."""
    return bn(x, head) if isinstance(bn, HeadBatchNorm2d) else bn(x)


def tail_block(block: nn.Sequential, x: torch.Tensor, head: str) -> torch.Tensor:
    """A DSB block of the tail (conv, BatchNorm, ReLU) on `x` for `head`."""
    conv, bn, relu = block
    return relu(head_norm(bn, conv(x), head))


def per_head_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shared-tail state dict as a per-head one: each head starts from the shared statistics
    (the weights are the same; `toolkit.net.recalibrate` then estimates each head's own)."""
    out = dict(state)
    for block in TAIL_NORM_BLOCKS:
        for buf in _STAT_BUFFERS:
            value = out.pop(f"{block}.1.{buf}")
            for head in HEADS:
                out[f"{block}.1.{head}.{buf}"] = value.clone()
    return out


def tail_stats_of(state: dict[str, object]) -> str:
    """Which tail statistics a state dict holds: "per_head" when it has the per-head buffers,
    else "shared" (a "joint" tail's state is a shared one; how it was trained is the checkpoint's
    record, `toolkit.net.checkpoint.tail_stats_from`)."""
    return "per_head" if f"{TAIL_NORM_BLOCKS[0]}.1.mask.running_mean" in state else "shared"


def head_dsb(cin: int, cout: int) -> nn.Sequential:
    """A tail DSB whose BatchNorm keeps one set of statistics per head (`HeadBatchNorm2d`)."""
    return nn.Sequential(DepthwiseSeparableConv(cin, cout), HeadBatchNorm2d(cout), nn.ReLU())


def proj(cin: int, cout: int) -> nn.Sequential:
    """1x1 projection without bias."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False))


class EVA4Net(nn.Module):
    """Siamese stem, dilated depthwise-separable trunk, mask and depth branches, one shared tail.

    forward(bg, fgbg) takes normalised inputs and returns the raw `(mask, depth)` outputs.

    `tail_stats` ("shared", "joint" or "per_head", `TAIL_STATS`) says how the tail keeps its
    BatchNorm statistics (module docstring). The eval-mode forward runs the tail once per head in
    every case; "joint" differs from "shared" in training only, where it runs the tail once on
    both branches stacked along the batch.
    """

    def __init__(self, tail_stats: str = "shared") -> None:
        super().__init__()
        if tail_stats not in TAIL_STATS:
            raise ValueError(f"tail_stats must be one of {', '.join(TAIL_STATS)}, got {tail_stats!r}")
        self.tail_stats = tail_stats
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
        # Decoder tail shared by both heads (its BatchNorm statistics per head or shared).
        tail_dsb = head_dsb if tail_stats == "per_head" else dsb
        self.convblock7 = tail_dsb(128, 256)
        self.convblock7_ = tail_dsb(256, 256)
        self.convblock7_1x1 = proj(256, 128)
        self.convblock8 = tail_dsb(128, 128)
        self.convblock8_ = nn.Sequential(nn.Conv2d(128, 1, 3, padding=1, bias=False))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")  # no weights: state dict unchanged

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.convblock2_(self.convblock2(self.convblock1(x))))

    def tail(self, z: torch.Tensor, head: str) -> torch.Tensor:
        """The decoder tail on one branch's features, normalised with `head`'s statistics."""
        u = self.up(z)
        u = u + self.convblock7_1x1(tail_block(self.convblock7_, tail_block(self.convblock7, u, head), head))
        u = self.up(u)
        return self.convblock8_(tail_block(self.convblock8, u, head))

    def forward(self, bg: torch.Tensor, fgbg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.stem(bg), self.stem(fgbg)], dim=1)
        x = x + self.convblock4_(self.convblock4(x))
        x = self.pool(x)
        m = x + self.convblock5_1x1(self.convblock5_(self.convblock5(x)))
        d = m + self.convblock6_1x1(self.convblock6_(self.convblock6(m)))
        if self.tail_stats == "joint" and self.training:
            mask, depth = self.tail(torch.cat([m, d], dim=0), "mask").chunk(2, dim=0)
            return mask, depth
        return self.tail(m, "mask"), self.tail(d, "depth")


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
