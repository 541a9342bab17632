"""The network cut in two for a fixed camera: the background's half, computed once, and the rest.

The stem runs on `bg` and on `fgbg` separately and nothing mixes them before the concatenation,
so for a fixed camera the `bg` half is a constant. The cut goes one step further, where the
algebra allows: the first trunk layer (`convblock4`: a depthwise 3x3 conv, a pointwise 1x1 conv,
BatchNorm, ReLU) starts with a depthwise convolution, which acts on each channel alone, and a
pointwise one, which is a sum over channels; so the part of the pointwise sum over the 64 `bg`
channels, `W[:, :64] @ depthwise_bg(stem(bg))`, is constant too. The background half returns
both, concatenated (`bg_features`: 64 stem channels + 128 partial sums, at H/2 x W/2); the frame
half adds the `fgbg` part and the bias and goes on as the whole network does. Only the order of
float additions changes (the pointwise sum in two parts): outputs agree to float rounding
(tests/net/test_cut.py). Works on the literal and the folded network alike (eval mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .folded import FoldedEVA4Net
from .model import EVA4Net, MaskDepthModel

STEM_CHANNELS = 64  # per image, before the concatenation


def _parts(model: MaskDepthModel) -> tuple[EVA4Net, nn.Module]:
    """(the network's weights, the module whose `tail` runs: the folded one when folded)."""
    impl = model.net
    net = impl.net if isinstance(impl, FoldedEVA4Net) else impl
    return net, impl


def _depthwise(net: EVA4Net, x: torch.Tensor, channels: slice) -> torch.Tensor:
    """convblock4's depthwise conv on one image's 64 channels (it acts on each channel alone)."""
    dw = net.convblock4[0].depthwise
    return F.conv2d(x, dw.weight[channels], dw.bias[channels], padding=2, dilation=2, groups=STEM_CHANNELS)


def _pointwise_with_norm(net: EVA4Net) -> tuple[torch.Tensor, torch.Tensor]:
    """convblock4's pointwise weights and bias with its eval-mode BatchNorm folded in
    (`s * (W x + b) - s * mean + beta`): the frame half then adds the two partial sums and goes
    straight to the ReLU, and ONNX Runtime fuses Conv + Add + ReLU into one kernel, where a
    BatchNorm between the Add and the ReLU would run alone, in the plain layout."""
    ds, bn, _ = net.convblock4
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = ds.pointwise.weight * scale[:, None, None, None]
    bias = (ds.pointwise.bias - bn.running_mean) * scale + bn.bias
    return weight.detach(), bias.detach()


class BackgroundHalf(nn.Module):
    """`bg` in [0, 1] -> `bg_features` [N, 192, H/2, W/2]: the stem's output and its share of the
    first trunk layer's pointwise sum (BatchNorm's scale applied)."""

    def __init__(self, model: MaskDepthModel):
        super().__init__()
        self.model = model
        self.net, _ = _parts(model)
        weight, _ = _pointwise_with_norm(self.net)
        self.register_buffer("partial_weight", weight[:, :STEM_CHANNELS].contiguous(), persistent=False)

    def forward(self, bg: torch.Tensor) -> torch.Tensor:
        n = self.net
        stem = n.stem(self.model.norm_bg(bg))
        partial = F.conv2d(_depthwise(n, stem, slice(0, STEM_CHANNELS)), self.partial_weight)
        return torch.cat([stem, partial], dim=1)


class FrameHalf(nn.Module):
    """(`bg_features`, `fgbg` in [0, 1]) -> (mask, depth) in [0, 1]: the whole model's outputs."""

    def __init__(self, model: MaskDepthModel):
        super().__init__()
        self.model = model
        self.net, self.impl = _parts(model)
        weight, bias = _pointwise_with_norm(self.net)
        self.register_buffer("frame_weight", weight[:, STEM_CHANNELS:].contiguous(), persistent=False)
        self.register_buffer("frame_bias", bias, persistent=False)

    def forward(self, bg_features: torch.Tensor, fgbg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        # A 1x1 max pool is the identity; it lets ONNX Runtime's CPU provider take the two slices
        # of the input into its blocked (NCHWc) layout, so the Add, ReLU and Concat after them
        # run fused and blocked instead of alone in the plain layout (~4 % of a frame at batch 1).
        bg_stem = F.max_pool2d(bg_features[:, :STEM_CHANNELS], 1)
        bg_partial = F.max_pool2d(bg_features[:, STEM_CHANNELS:], 1)
        fg_stem = n.stem(self.model.norm_fgbg(fgbg))
        fg_dw = _depthwise(n, fg_stem, slice(STEM_CHANNELS, 2 * STEM_CHANNELS))
        y = F.conv2d(fg_dw, self.frame_weight, self.frame_bias) + bg_partial
        x = torch.cat([bg_stem, fg_stem], dim=1)
        x = n.pool(x + n.convblock4_(F.relu(y)))
        m = x + n.convblock5_1x1(n.convblock5_(n.convblock5(x)))
        d = m + n.convblock6_1x1(n.convblock6_(n.convblock6(m)))
        return self.model.decode_mask(self.impl.tail(m, "mask")), self.model.decode_depth(self.impl.tail(d, "depth"))


def split(model: MaskDepthModel) -> tuple[BackgroundHalf, FrameHalf]:
    """The two halves of `model` (literal or folded), in eval mode, sharing its weights."""
    model.eval()
    return BackgroundHalf(model).eval(), FrameHalf(model).eval()
