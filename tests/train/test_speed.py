"""The speed options: the polyphase depthwise conv is the reference conv (forward and gradients),
swapping it and the other options leave what is saved unchanged, and bad options are refused."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from toolkit.core.errors import UserError
from toolkit.core.spec import SEED_SPEC
from toolkit.net.model import EVA4Net, MaskDepthModel
from train import speed
from train.speed import PolyphaseDepthwiseConv2d, SpeedOptions


def _pair(channels: int, dilation: int = 2, seed: int = 0) -> tuple[nn.Conv2d, PolyphaseDepthwiseConv2d]:
    torch.manual_seed(seed)
    ref = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=True)
    fast = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=True)
    fast.load_state_dict(ref.state_dict())
    assert speed.swap_dilated_depthwise(fast) == 1
    return ref, fast


def _grads(conv: nn.Module, x: torch.Tensor, gy: torch.Tensor, dtype: torch.dtype):
    conv.zero_grad(set_to_none=True)
    xi = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        y = conv(xi)
    (y.float() * gy).sum().backward()
    return y.float().detach(), xi.grad, conv.weight.grad, conv.bias.grad


def _assert_close(got, want, tol: float) -> None:
    """Relative to each tensor's scale (a weight gradient sums thousands of products)."""
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), got, want):
        assert a.shape == b.shape, name
        scale = float(b.abs().max())
        torch.testing.assert_close(a, b, atol=tol * scale, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("hw", [(16, 20), (15, 17), (16, 9)], ids=["even", "odd", "mixed"])
def test_polyphase_matches_reference_forward_and_gradients_fp32(channels_last, hw):
    ref, fast = _pair(8)
    torch.manual_seed(1)
    x, gy = torch.randn(3, 8, *hw), torch.randn(3, 8, *hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = _grads(fast, x, gy, torch.float32)
    _assert_close(got, _grads(ref, x, gy, torch.float32), 2e-6)
    # A drop-in keeps the input's memory format.
    assert got[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("hw", [(32, 32), (17, 20)], ids=["even", "odd"])
def test_polyphase_in_bf16_matches_the_fp32_reference(channels_last, hw):
    """bf16 autocast against the fp32 truth, at 64 channels: there oneDNN's own bf16 channels_last
    dilated depthwise conv gets the weight gradient wrong (torch 2.13), the polyphase form does not."""
    ref, fast = _pair(64)
    torch.manual_seed(1)
    x, gy = torch.randn(4, 64, *hw), torch.randn(4, 64, *hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _assert_close(_grads(fast, x, gy, torch.bfloat16), _grads(ref, x, gy, torch.float32), 2e-2)


def test_polyphase_is_exact_for_other_dilations_and_batch_one():
    ref, fast = _pair(4, dilation=3)
    x = torch.randn(1, 4, 12, 18)
    torch.testing.assert_close(fast(x), ref(x), atol=1e-6, rtol=1e-6)


def test_the_identity_is_used_not_a_fallback(monkeypatch):
    """Even and odd maps go through the polyphase path (else the tests above prove nothing about it)."""
    _ref, fast = _pair(4)
    calls = []
    real = torch.nn.functional.conv2d
    monkeypatch.setattr(speed.F, "conv2d", lambda x, w, b, **kw: calls.append(kw) or real(x, w, b, **kw))
    fast(torch.randn(2, 4, 8, 8))
    fast(torch.randn(2, 4, 7, 8))
    assert calls == [{"padding": 1, "groups": 4}] * 2  # undilated, padding 1: the polyphase form


def test_swap_is_in_place_and_reversible_with_the_same_state_dict():
    net = EVA4Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = [id(p) for p in net.parameters()]
    swapped = speed.swap_dilated_depthwise(net)
    assert swapped == 9  # the depthwise conv of each DS block: convblock4, 4_, 5, 5_, 6, 6_, 7, 7_ and 8
    assert [id(p) for p in net.parameters()] == params
    assert list(net.state_dict()) == list(before)
    # Only the dilated depthwise convs are swapped; the pointwise and dense ones stay plain.
    assert type(net.convblock4[0].depthwise) is PolyphaseDepthwiseConv2d
    assert type(net.convblock4[0].pointwise) is nn.Conv2d
    assert speed.swap_dilated_depthwise(net) == 0  # already swapped
    assert speed.restore_dilated_depthwise(net) == swapped
    assert all(type(m) is not PolyphaseDepthwiseConv2d for m in net.modules())


def test_prepared_model_trains_like_the_reference_and_saves_the_same_keys():
    """One SGD step of the whole network, fp32: channels_last + polyphase vs plain NCHW."""
    torch.manual_seed(0)
    spec = SEED_SPEC.with_size(32)
    plain = MaskDepthModel(EVA4Net(), spec)
    fast = MaskDepthModel(EVA4Net(), spec)
    fast.net.load_state_dict(plain.net.state_dict())
    opts = speed.resolve_speed("cpu", amp="off", channels_last=True, fast_dwconv=True)
    speed.prepare_model(fast, "cpu", opts)
    assert fast.net.convblock1[0].weight.is_contiguous(memory_format=torch.channels_last)
    bg, fgbg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    fmt = speed.memory_format(opts)
    outs = []
    for model, inputs in ((plain, (bg, fgbg)), (fast, (bg.contiguous(memory_format=fmt), fgbg.contiguous(memory_format=fmt)))):
        opt = torch.optim.SGD(model.net.parameters(), lr=0.1)
        with speed.autocast("cpu", opts):
            m, d = model.net(model.norm_bg(inputs[0]), model.norm_fgbg(inputs[1]))
        (m.float().abs().mean() + 2 * d.float().abs().mean()).backward()
        opt.step()
        outs.append((m.detach(), d.detach(), model.net.state_dict()))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-4, rtol=1e-4)
    assert list(outs[1][2]) == list(outs[0][2])
    for k, v in outs[0][2].items():
        torch.testing.assert_close(outs[1][2][k], v, atol=1e-4, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    # Back to plain modules for an exporter: the same weights, NCHW, plain forwards.
    speed.restore_model(fast)
    assert all(type(m) is not PolyphaseDepthwiseConv2d for m in fast.modules())
    assert fast.net.convblock1[0].weight.is_contiguous()


def _usable_cpus() -> int:
    """This process's CPUs, counted here (not by the helper under test): affinity, then a cgroup quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = Path("/sys/fs/cgroup/cpu.max")
    if quota.is_file() and quota.read_text().split()[0] != "max":
        q, period = (int(v) for v in quota.read_text().split()[:2])
        n = min(n, max(1, q // period))
    return n


@pytest.mark.parametrize("cpuinfo, native", [
    ("flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni\n", False),  # Cascade Lake: emulated bf16
    ("flags\t\t: avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n", True),  # Zen 4, Cooper Lake
    ("flags\t\t: avx512f avx512bw amx_bf16 amx_tile amx_int8\n", True),  # Sapphire Rapids
    ("Features\t: fp asimd sve bf16 i8mm\n", True),  # Graviton 3
    ("flags\t\t: fpu sse2 avx2 fma\n", False),
    ("", False),
])
def test_native_bf16_means_bf16_instructions_not_avx512(cpuinfo, native):
    assert speed.cpu_has_native_bf16(cpuinfo) is native


def test_options_resolve_per_device_and_refuse_what_cannot_run():
    cpu = speed.resolve_speed("cpu")
    assert cpu.channels_last and cpu.fast_dwconv and not cpu.compile
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert cpu.amp == ("bf16" if re.search(r"\b(avx512_bf16|amx_bf16|bf16)\b", flags) else "off")
    assert cpu.threads == _usable_cpus() >= 1
    assert speed.resolve_speed("cpu", processes=64).threads == 1  # DDP ranks share the cores
    assert speed.resolve_speed("cpu", amp="off", channels_last=False, threads=1) == SpeedOptions(
        channels_last=False, amp="off", fast_dwconv=True, threads=1)
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        speed.resolve_speed("cpu", amp="fp16")
    with pytest.raises(UserError, match="amp must be"):
        speed.resolve_speed("cpu", amp="fp8")
    with pytest.raises(UserError, match="polyphase"):
        speed.resolve_speed("cpu", amp="bf16", channels_last=True, fast_dwconv=False)
    with pytest.raises(UserError, match="threads"):
        speed.resolve_speed("cpu", threads=0)
    assert speed.grad_scaler("cpu", speed.resolve_speed("cpu", amp="bf16")) is None
    assert speed.memory_format(SpeedOptions()) == torch.contiguous_format


def test_autocast_and_threads_apply():
    before = torch.get_num_threads()
    try:
        assert speed.apply_threads(SpeedOptions(threads=1)) == 1
    finally:
        torch.set_num_threads(before)
    with speed.autocast("cpu", SpeedOptions(amp="bf16")):
        y = nn.Conv2d(3, 4, 1)(torch.randn(1, 3, 4, 4))
    assert y.dtype == torch.bfloat16
    with speed.autocast("cpu", SpeedOptions(amp="off")):
        assert nn.Conv2d(3, 4, 1)(torch.randn(1, 3, 4, 4)).dtype == torch.float32
