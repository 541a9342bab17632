"""`EVA4Net` for inference with the decoder tail's upsampling moved later: the same function,
a little over half the arithmetic.

The shared tail upsamples (nearest, x2) and then runs the most expensive layers of the network
at H/2 and H. Nearest upsampling commutes with everything that follows it there:

* a 3x3 depthwise convolution with dilation 2 and padding 2 on `Up(x)` is `Up` of the same
  convolution with dilation 1 and padding 1 on `x` (the taps 2 pixels apart on the upsampled
  grid are the neighbouring pixels of the small one, and the zero padding lines up);
* 1x1 convolutions, eval-mode BatchNorm, ReLU and the residual sum act per pixel.

So the first tail stage (`convblock7`, `convblock7_`, `convblock7_1x1` and its residual) runs at
H/4 instead of H/2, and `convblock8` at H/2 instead of H: a quarter of the cost each. The last
3x3 convolution (128 -> 1, not dilated) on `Up(v)` becomes its polyphase form on `v`: one 3x3
convolution 128 -> 4, whose 4 output channels are the 4 phases of the upsampled output, put in
place by a pixel shuffle (`DepthToSpace` in ONNX). Each phase's kernel sums the taps of the
original kernel that land on the same pixel of `v`.

Only the order of float additions changes (the summed taps of the last convolution): outputs
agree with `EVA4Net` to float rounding. Eval mode only: in training, BatchNorm's batch statistics
would see a different number of pixels. At 128 x 128 the network costs 6.14 GFLOP per pair as
written and 3.62 GFLOP folded (`gflop_per_pair`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import EVA4Net, MaskDepthModel, head_norm

# Row (and column) maps of the 3x3 kernel of the last convolution, per output phase: phase 0
# (even rows of the upsampled output) reads the rows above, at and at of `v` for the original
# taps 0, 1, 2; phase 1 (odd rows) reads at, at and below.
_PHASE_TAPS = torch.tensor(
    [
        [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    ]
)


def polyphase_kernel(weight: torch.Tensor) -> torch.Tensor:
    """`[O, C, 3, 3]` kernel of a 3x3 conv (padding 1) applied after nearest x2 upsampling ->
    `[4 O, C, 3, 3]` kernel of the conv on the small map whose outputs, pixel-shuffled by 2,
    are the same. Output channel `4 o + 2 a + b` is phase (row a, column b) of output `o`."""
    taps = _PHASE_TAPS.to(weight)
    # k[o, a, b, c, i, j] = sum_{y, x} taps[a, i, y] * weight[o, c, y, x] * taps[b, j, x]
    k = torch.einsum("aiy,ocyx,bjx->oabcij", taps, weight, taps)
    return k.reshape(weight.shape[0] * 4, weight.shape[1], 3, 3)


def _dsb_small(block: nn.Sequential, x: torch.Tensor, head: str) -> torch.Tensor:
    """A tail DSB block (dilated depthwise, pointwise, BatchNorm with `head`'s statistics, ReLU)
    applied to `x` where the original applied it to `Up(x)`: the depthwise convolution without
    dilation."""
    ds, bn, relu = block
    dw = ds.depthwise
    x = F.conv2d(x, dw.weight, dw.bias, padding=1, groups=dw.groups)
    return relu(head_norm(bn, ds.pointwise(x), head))


class FoldedEVA4Net(nn.Module):
    """`net`'s eval-mode forward, computed with the tail folded (see the module docstring).

    Shares `net`'s modules (put it in eval mode: `train(True)` is refused); the last
    convolution's polyphase kernel is derived when this is built, so build it after the weights
    are final (it is an inference snapshot).
    """

    def __init__(self, net: EVA4Net):
        super().__init__()
        self.net = net
        with torch.no_grad():
            head = polyphase_kernel(net.convblock8_[0].weight.detach())
        self.register_buffer("head_weight", head, persistent=False)

    def train(self, mode: bool = True) -> FoldedEVA4Net:
        if mode:
            raise RuntimeError("FoldedEVA4Net is for inference only (eval-mode BatchNorm)")
        return super().train(False)

    def tail(self, z: torch.Tensor, head: str) -> torch.Tensor:
        n = self.net
        u = z + n.convblock7_1x1(_dsb_small(n.convblock7_, _dsb_small(n.convblock7, z, head), head))  # H/4
        u = F.interpolate(u, scale_factor=2.0, mode="nearest")  # H/2
        v = _dsb_small(n.convblock8, u, head)  # H/2 (the original ran it at H)
        return F.pixel_shuffle(F.conv2d(v, self.head_weight, padding=1), 2)  # H

    def forward(self, bg: torch.Tensor, fgbg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = torch.cat([n.stem(bg), n.stem(fgbg)], dim=1)
        x = x + n.convblock4_(n.convblock4(x))
        x = n.pool(x)
        m = x + n.convblock5_1x1(n.convblock5_(n.convblock5(x)))
        d = m + n.convblock6_1x1(n.convblock6_(n.convblock6(m)))
        return self.tail(m, "mask"), self.tail(d, "depth")


def fold(model: MaskDepthModel) -> MaskDepthModel:
    """The same wrapped model (normalisation, decoding) around the folded network, in eval mode.
    The two share their weights and modules, so `model` is in eval mode afterwards too."""
    net = model.net.net if isinstance(model.net, FoldedEVA4Net) else model.net
    folded = MaskDepthModel(FoldedEVA4Net(net), model.spec)
    return folded.eval()


def gflop_per_pair(module: nn.Module, height: int = 128, width: int = 128) -> float:
    """2 x multiply-adds of the convolutions of one forward pass on one pair (what the speed
    floor counts), measured by running it: works for `EVA4Net` and `FoldedEVA4Net` alike."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.eval()(x, x)
    return counter.get_total_flops() / 1e9
