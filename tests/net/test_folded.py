"""The folded inference network computes what EVA4Net computes, with less arithmetic."""

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import golden_inputs
from tests.net.test_model import GOLDEN
from toolkit.net.checkpoint import build_model, load_checkpoint
from toolkit.net.folded import FoldedEVA4Net, fold, gflop_per_pair, polyphase_kernel
from toolkit.net.model import EVA4Net


def _net_with_random_statistics(seed: int = 0) -> EVA4Net:
    """Random weights and BatchNorm statistics far from the identity, so a BatchNorm or ReLU in
    the wrong place shows."""
    torch.manual_seed(seed)
    net = EVA4Net()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return net.eval()


@pytest.mark.parametrize("size", [(32, 32), (36, 52), (64, 40)])
def test_folded_network_matches_the_network(size):
    net = _net_with_random_statistics()
    folded = FoldedEVA4Net(net).eval()
    bg, fgbg = torch.randn(3, 3, *size), torch.randn(3, 3, *size)
    with torch.no_grad():
        want, got = net(bg, fgbg), folded(bg, fgbg)
    for w, g in zip(want, got):
        assert g.shape == w.shape == (3, 1, *size)
        scale = float(w.abs().max())
        assert scale > 0.1
        assert float((w - g).abs().max()) <= 1e-5 * max(1.0, scale)


def test_folded_model_gives_the_fixture_golden_output(imported_ckpt):
    model = build_model(load_checkpoint(imported_ckpt)).eval()
    folded = fold(model)
    assert folded.net.net is model.net  # shares the weights, no copy
    bg, fgbg = (torch.from_numpy(a) for a in golden_inputs())
    with torch.no_grad():
        raw = folded.net(folded.norm_bg(bg), folded.norm_fgbg(fgbg))
        want, got = model(bg, fgbg), folded(bg, fgbg)
    for name, out in zip(("mask", "depth"), raw):
        mean, std, at_center, at_corner = GOLDEN[name]
        assert out.mean().item() == pytest.approx(mean, abs=1e-4)
        assert out.std().item() == pytest.approx(std, abs=1e-4)
        assert out[0, 0, 64, 64].item() == pytest.approx(at_center, abs=1e-4)
        assert out[0, 0, 10, 100].item() == pytest.approx(at_corner, abs=1e-4)
    for w, g in zip(want, got):
        assert float((w - g).abs().max()) < 1e-5


@pytest.mark.parametrize("out_channels", [1, 3])
def test_polyphase_kernel_is_the_conv_after_upsampling(out_channels):
    torch.manual_seed(1)
    weight = torch.randn(out_channels, 5, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    want = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, padding=1)
    got = F.pixel_shuffle(F.conv2d(x, polyphase_kernel(weight), padding=1), 2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_folded_network_refuses_training_mode():
    folded = FoldedEVA4Net(EVA4Net())
    with pytest.raises(RuntimeError, match="inference only"):
        folded.train()
    assert not folded.eval().training


def test_arithmetic_of_both_graphs():
    net = EVA4Net()
    assert gflop_per_pair(net) == pytest.approx(6.14, abs=0.005)  # architecture.md's figure
    folded = gflop_per_pair(FoldedEVA4Net(net))
    assert folded == pytest.approx(3.62, abs=0.01)
    assert gflop_per_pair(FoldedEVA4Net(net), 64, 64) == pytest.approx(folded / 4, rel=1e-6)
