import numpy as np
import pytest
import torch

from tests.conftest import golden_inputs
from toolkit.checkpoint import build_model, load_checkpoint
from toolkit.model import EVA4Net, count_parameters

GOLDEN = {  # architecture.md: raw outputs of the epoch-12 fixture on the golden input
    "mask": (1.871022, 0.564132, 2.661829, 2.056433),
    "depth": (0.039941, 0.264726, -0.175016, 0.270703),
}


def test_parameter_count_matches_architecture():
    net = EVA4Net()
    assert count_parameters(net) == 493_408
    groups = {"stem": ("convblock1", "convblock2", "convblock2_"), "trunk": ("convblock4", "convblock4_")}
    sd = dict(net.named_parameters())
    assert sum(p.numel() for k, p in sd.items() if k.split(".")[0] in groups["stem"]) == 28_768
    assert sum(p.numel() for k, p in sd.items() if k.split(".")[0] in groups["trunk"]) == 36_096


def test_golden_forward_of_the_epoch12_fixture(imported_ckpt):
    model = build_model(load_checkpoint(imported_ckpt))
    bg, fg = golden_inputs()
    with torch.no_grad():
        raw = model.net(model.norm_bg(torch.from_numpy(bg)), model.norm_fgbg(torch.from_numpy(fg)))
    for name, out in zip(("mask", "depth"), raw):
        mean, std, at_center, at_corner = GOLDEN[name]
        assert out.shape == (1, 1, 128, 128)
        assert out.mean().item() == pytest.approx(mean, abs=1e-4)
        assert out.std().item() == pytest.approx(std, abs=1e-4)
        assert out[0, 0, 64, 64].item() == pytest.approx(at_center, abs=1e-4)
        assert out[0, 0, 10, 100].item() == pytest.approx(at_corner, abs=1e-4)


def test_wrapper_applies_the_seed_decoding(imported_ckpt):
    model = build_model(load_checkpoint(imported_ckpt))
    bg, fg = golden_inputs()
    with torch.no_grad():
        x = (torch.from_numpy(bg), torch.from_numpy(fg))
        mask_raw, depth_raw = model.net(model.norm_bg(x[0]), model.norm_fgbg(x[1]))
        mask, depth = model(*x)
    np.testing.assert_allclose(mask, torch.clamp(mask_raw * 0.254 + 0.079, 0, 1), atol=1e-6)
    np.testing.assert_allclose(depth, torch.clamp(depth_raw * 0.208 + 0.35, 0, 1), atol=1e-6)


@pytest.mark.parametrize("h,w", [(32, 32), (64, 96), (36, 44)])
def test_any_size_divisible_by_four(h, w):
    net = EVA4Net().eval()
    with torch.no_grad():
        m, d = net(torch.zeros(2, 3, h, w), torch.zeros(2, 3, h, w))
    assert m.shape == d.shape == (2, 1, h, w)


def test_joint_tail_is_the_same_computation_in_eval_and_differs_only_in_training_batchnorm():
    """`joint_tail` stacks the two branches through the shared tail: identical outputs in eval
    mode (what is exported), and in training one set of BatchNorm statistics for both branches."""
    import torch

    from toolkit.model import EVA4Net

    torch.manual_seed(0)
    net = EVA4Net().eval()
    bg, fg = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        apart = net(bg, fg)
        net.joint_tail = True
        joint = net(bg, fg)
    for a, b in zip(apart, joint):
        assert a.shape == b.shape == (2, 1, 32, 32)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    net.train()
    with torch.no_grad():
        joint_train = net(bg, fg)
        net.joint_tail = False
        apart_train = net(bg, fg)
    assert not torch.allclose(joint_train[1], apart_train[1], atol=1e-4)
    assert "joint_tail" not in " ".join(net.state_dict())


def test_wrapping_a_network_on_another_device_puts_the_normalisation_there():
    """The training wraps its weight average (on the GPU) in a new MaskDepthModel: the
    normalisation constants must be on the network's device, not left on the CPU."""
    from toolkit.model import MaskDepthModel
    from toolkit.spec import SEED_SPEC

    net = EVA4Net().to("meta")
    model = MaskDepthModel(net, SEED_SPEC)
    assert {t.device.type for t in model.buffers()} == {"meta"}
    assert {t.device.type for t in model.parameters()} == {"meta"}
    out = model(torch.zeros(1, 3, 32, 32, device="meta"), torch.zeros(1, 3, 32, 32, device="meta"))
    assert [o.shape for o in out] == [(1, 1, 32, 32)] * 2
