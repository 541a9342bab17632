import numpy as np
import pytest
import torch

from tests.conftest import golden_inputs
from toolkit.net.checkpoint import build_model, load_checkpoint
from toolkit.net.model import EVA4Net, count_parameters

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


def test_tail_statistics_modes_share_the_eval_forward_and_differ_in_training_batchnorm():
    """"shared", "joint" and "per_head" tails with the same weights and statistics compute the
    same eval-mode outputs (what is exported); in training "joint" normalises both branches
    together, the others each branch by its own batch; "per_head" keeps one set per head."""
    import torch

    from toolkit.net.model import EVA4Net, per_head_state

    torch.manual_seed(0)
    nets = {k: EVA4Net(k) for k in ("shared", "joint", "per_head")}
    state = nets["shared"].state_dict()
    nets["joint"].load_state_dict(state)
    nets["per_head"].load_state_dict(per_head_state(state))
    assert set(nets["joint"].state_dict()) == set(state)
    bg, fg = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = {k: n.eval()(bg, fg) for k, n in nets.items()}
        trained = {k: n.train()(bg, fg) for k, n in nets.items()}
    for k in ("joint", "per_head"):
        for a, b in zip(out["shared"], out[k]):
            assert a.shape == b.shape == (2, 1, 32, 32)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(trained["joint"][1], trained["shared"][1], atol=1e-4)
    torch.testing.assert_close(trained["per_head"][1], trained["shared"][1], rtol=1e-5, atol=1e-5)
    # training updated the shared set from both calls, the per-head sets each from its own
    shared = nets["shared"].convblock8[1]
    heads = nets["per_head"].convblock8[1]
    assert int(shared.num_batches_tracked) == 2 and int(heads.mask.num_batches_tracked) == 1
    assert not torch.allclose(heads.mask.running_mean, heads.depth.running_mean)


def test_a_per_head_tail_applies_each_heads_statistics_in_eval_mode():
    """Changing the depth head's statistics changes the depth output only."""
    import torch

    from toolkit.net.model import HEADS, EVA4Net, tail_stats_of

    torch.manual_seed(1)
    net = EVA4Net("per_head").eval()
    assert tail_stats_of(net.state_dict()) == "per_head" and tail_stats_of(EVA4Net().state_dict()) == "shared"
    assert sum(p.numel() for p in net.parameters()) == 493_408
    assert {f"convblock7.1.{h}.running_var" for h in HEADS} <= set(net.state_dict())
    bg, fg = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        mask, depth = net(bg, fg)
        net.convblock7_[1].depth.running_mean.add_(0.5)
        mask2, depth2 = net(bg, fg)
    torch.testing.assert_close(mask, mask2)
    assert not torch.allclose(depth, depth2)


def test_wrapping_a_network_on_another_device_puts_the_normalisation_there():
    """The training wraps its weight average (on the GPU) in a new MaskDepthModel: the
    normalisation constants must be on the network's device, not left on the CPU."""
    from toolkit.core.spec import SEED_SPEC
    from toolkit.net.model import MaskDepthModel

    net = EVA4Net().to("meta")
    model = MaskDepthModel(net, SEED_SPEC)
    assert {t.device.type for t in model.buffers()} == {"meta"}
    assert {t.device.type for t in model.parameters()} == {"meta"}
    out = model(torch.zeros(1, 3, 32, 32, device="meta"), torch.zeros(1, 3, 32, 32, device="meta"))
    assert [o.shape for o in out] == [(1, 1, 32, 32)] * 2
