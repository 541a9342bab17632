"""Training-speed options: memory format, autocast, torch.compile, the polyphase depthwise conv, threads.

Why these and not others (measured with `benchmarks/train_speed.py`, see `benchmarks/README.md`):
  * The network is memory-bound. On the CPU, oneDNN runs NCHW depthwise and 1x1 convolutions and
    their backward passes far slower than channels_last (NHWC): the dilated depthwise backward at
    128 px is the single largest op of an NCHW step. channels_last is the biggest CPU win.
  * bf16 autocast pays on CPUs with native bf16 instructions (AVX512-BF16 / AMX), where oneDNN
    runs the convolutions in bf16; elsewhere it is emulated and slower, so "auto" checks for it.
    On the CPU, oneDNN's bf16 channels_last *dilated* depthwise convolution returns wrong weight
    gradients (rel. error ~1 or NaN from 32 channels up, torch 2.13; undilated ones are right), so
    bf16 + channels_last on the CPU requires the polyphase conv below, which only runs undilated ones.
    fp16 autocast is a CUDA feature here (a GradScaler comes with it); on the CPU it is refused.
  * The trunk's 3x3 depthwise convolutions with dilation 2 equal four undilated 3x3 depthwise
    convolutions on the polyphase sub-maps `x[..., i::2, j::2]` (exact; see
    `PolyphaseDepthwiseConv2d`). Undilated depthwise kernels are the fast, well-tuned ones in
    cuDNN and oneDNN, and the phases batch into one call.
  * torch.compile costs minutes of compilation per shape; it is opt-in.

Nothing here changes what is saved: `prepare_model` converts parameters in place (same keys,
same Parameter objects, so an optimizer made before or after keeps working), compiles the
network's forward in place (`nn.Module.compile`, no `_orig_mod.` prefix in the state dict) and
turns depthwise convs into their polyphase subclass by switching the class of the very same
module (`restore_model` switches back). Exports always build a plain `EVA4Net` from a checkpoint.

Use from a training loop (see also the README section of the benchmarks):

    options = resolve_speed(device, amp=config.amp, channels_last=config.channels_last, compile=config.compile,
                            processes=ranks_on_this_machine)
    apply_threads(options)
    model = prepare_model(model, device, options)         # before or after making the optimizer
    step = StepOptions(autocast=functools.partial(autocast, device, options),
                       scaler=grad_scaler(device, options), memory_format=memory_format(options))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.core.errors import UserError
from toolkit.core.text import count

AMP_MODES = ("auto", "off", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class SpeedOptions:
    """Resolved speed options (no "auto" left in them; see `resolve_speed`).

    `threads`: intra-op threads for the CPU (None: leave PyTorch's setting alone)."""

    channels_last: bool = False
    amp: str = "off"
    compile: bool = False
    fast_dwconv: bool = False
    threads: int | None = None

    def validate(self, device: torch.device | str) -> SpeedOptions:
        """Reject what cannot run on `device`, with one line each."""
        device = torch.device(device)
        if self.amp not in _AMP_DTYPES and self.amp != "off":
            raise UserError(f"amp must be off, bf16 or fp16 (or auto), got {self.amp!r}")
        if self.amp == "fp16" and device.type != "cuda":
            raise UserError("amp fp16 needs a CUDA device (on the CPU use --amp bf16 or --amp off)")
        if self.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("amp bf16: this GPU has no bf16 support; use --amp fp16 or --amp off")
        if device.type == "cpu" and self.amp == "bf16" and self.channels_last and not self.fast_dwconv:
            raise UserError("amp bf16 with channels_last on the CPU needs the polyphase depthwise conv: oneDNN's bf16 "
                            "channels_last dilated depthwise convolution computes wrong weight gradients (NaN from 32 "
                            "channels up, torch " + torch.__version__ + ")")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise UserError(f"threads must be a positive whole number, got {self.threads!r}")
        return self

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return _AMP_DTYPES.get(self.amp)

    def describe(self) -> str:
        """One line for logs: what is on."""
        parts = [f"amp {self.amp}", "channels_last" if self.channels_last else "NCHW"]
        if self.fast_dwconv:
            parts.append("polyphase depthwise")
        if self.compile:
            parts.append("compiled")
        if self.threads is not None:
            parts.append(count(self.threads, "thread"))
        return ", ".join(parts)


# CPU flags of native bf16 arithmetic: x86's AVX512-BF16 and AMX, Arm's BF16 (`Features` line).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True where the CPU has bf16 instructions (AVX512-BF16, AMX, Arm BF16): only there does
    bf16 autocast make CPU training faster rather than slower. Not oneDNN's own bf16 check
    (`_is_mkldnn_bf16_supported`): it also says yes on AVX-512 without BF16, where bf16 is
    emulated and slower than fp32. `cpuinfo`: /proc/cpuinfo's text (read when not given)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.split(":", 1)[0].strip().lower() in ("flags", "features")
             for flag in line.split(":", 1)[-1].split()}
    return bool(flags & NATIVE_BF16_FLAGS) and torch.backends.mkldnn.is_available()


def default_options(device: torch.device | str, processes: int = 1) -> SpeedOptions:
    """What "auto" means on `device` (the measured winners, see the module docstring);
    `processes`: training processes sharing this machine's CPUs (DDP ranks)."""
    device = torch.device(device)
    if device.type == "cuda":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return SpeedOptions(channels_last=True, amp=amp, compile=False, fast_dwconv=True)
    return SpeedOptions(channels_last=True, amp="bf16" if cpu_has_native_bf16() else "off", compile=False,
                        fast_dwconv=True, threads=pick_cpu_threads(processes))


def resolve_speed(device: torch.device | str, *, amp: str = "auto", channels_last: bool | None = None,
                  compile: bool = False, fast_dwconv: bool | None = None, threads: int | None = None,
                  processes: int = 1) -> SpeedOptions:
    """Options as a user gave them ("auto" / None = the device's default) -> validated `SpeedOptions`.
    `processes`: training processes on this machine (DDP ranks), to share the CPU threads."""
    if amp not in AMP_MODES:
        raise UserError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    base = default_options(device, processes)
    given = {"amp": None if amp == "auto" else amp, "channels_last": channels_last,
             "fast_dwconv": fast_dwconv, "threads": threads}
    return replace(base, compile=bool(compile), **{k: v for k, v in given.items() if v is not None}).validate(device)


# --- threads -------------------------------------------------------------------------------

def pick_cpu_threads(processes: int = 1) -> int:
    """The CPUs this process may actually use (`toolkit.tasks.busy.usable_cpus`: its affinity
    mask, capped by a cgroup CPU quota; containers often see all of the host's cores but may use
    only a few, and oversubscribed OpenMP threads then spin against each other), shared among
    `processes` training processes on the machine (several DDP ranks on one CPU)."""
    from toolkit.tasks.busy import usable_cpus

    n = usable_cpus()
    return max(1, n // max(1, int(processes)))


def apply_threads(options: SpeedOptions) -> int:
    """Set PyTorch's intra-op threads to `options.threads` (when given); returns the count in use."""
    if options.threads is not None and torch.get_num_threads() != options.threads:
        torch.set_num_threads(options.threads)
    return torch.get_num_threads()


# --- autocast and the gradient scaler ----------------------------------------------------------

def autocast(device: torch.device | str, options: SpeedOptions) -> contextlib.AbstractContextManager:
    """The autocast context for the training forward (a no-op with amp off). Compute the losses
    on `.float()` outputs, outside it."""
    dtype = options.amp_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, options: SpeedOptions) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 autocast on CUDA (fp16 gradients underflow without one); None otherwise
    (bf16 has fp32's range and needs none)."""
    if options.amp == "fp16" and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def memory_format(options: SpeedOptions) -> torch.memory_format:
    """The memory format the input batches should be in."""
    return torch.channels_last if options.channels_last else torch.contiguous_format


# --- the polyphase dilated depthwise convolution ------------------------------------------------

def polyphase_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               dilation: int) -> torch.Tensor:
    """A k x k depthwise convolution with dilation d and "same" zero padding d (k - 1) / 2, as one
    undilated depthwise convolution (padding (k - 1) / 2) of the d * d polyphase sub-maps
    `x[..., i::d, j::d]` stacked on the batch axis, interleaved back. Exact: output pixel
    (d h + i, d w + j) only ever reads input pixels of phase (i, j), at undilated offsets.
    H or W not a multiple of d: zero rows/columns are added at the end (they read as the
    zero padding would) and the extra outputs dropped. The output keeps the input's memory format."""
    n, c, h, w = x.shape
    d = int(dilation)
    extra_h, extra_w = -h % d, -w % d
    if extra_h or extra_w:
        fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        y = polyphase_depthwise_conv2d(F.pad(x, (0, extra_w, 0, extra_h)).contiguous(memory_format=fmt), weight, bias, d)
        return y[:, :, :h, :w].contiguous(memory_format=fmt)
    hh, ww = h // d, w // d
    pad = (weight.shape[-1] - 1) // 2
    if _is_channels_last(x):
        # NHWC memory: phases come out as channels_last maps, one copy in and one copy out.
        p = x.permute(0, 2, 3, 1).reshape(n, hh, d, ww, d, c).permute(2, 4, 0, 1, 3, 5).reshape(d * d * n, hh, ww, c)
        y = F.conv2d(p.permute(0, 3, 1, 2), weight, bias, padding=pad, groups=c)
        y = y.permute(0, 2, 3, 1).reshape(d, d, n, hh, ww, c).permute(2, 3, 0, 4, 1, 5).reshape(n, h, w, c)
        return y.permute(0, 3, 1, 2)
    p = x.reshape(n, c, hh, d, ww, d).permute(3, 5, 0, 1, 2, 4).reshape(d * d * n, c, hh, ww)
    y = F.conv2d(p, weight, bias, padding=pad, groups=c)
    return y.reshape(d, d, n, c, hh, ww).permute(2, 3, 4, 0, 5, 1).reshape(n, c, h, w)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def is_dilated_depthwise(module: nn.Module) -> bool:
    """A plain `nn.Conv2d` the polyphase form computes exactly: depthwise (groups = in = out),
    odd square kernel, equal dilation d >= 2 on both axes, stride 1, zero "same" padding."""
    if type(module) is not nn.Conv2d:
        return False
    k, d = module.kernel_size, module.dilation
    return (module.groups == module.in_channels == module.out_channels and k[0] == k[1] and k[0] % 2 == 1
            and d[0] == d[1] >= 2 and module.stride == (1, 1) and module.padding_mode == "zeros"
            and module.padding == (d[0] * (k[0] - 1) // 2,) * 2)


class PolyphaseDepthwiseConv2d(nn.Conv2d):
    """An `nn.Conv2d` (dilated depthwise, see `is_dilated_depthwise`) whose forward uses the
    polyphase formulation. Same parameters, same state-dict keys: it is the same module with
    another forward (`swap_dilated_depthwise` switches the class of existing modules). ONNX
    export and tracing use the reference convolution (exports stay plain convs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(x)
        return polyphase_depthwise_conv2d(x, self.weight, self.bias, self.dilation[0])


def swap_dilated_depthwise(module: nn.Module) -> int:
    """Give every dilated depthwise `nn.Conv2d` inside `module` the polyphase forward, in place
    (the modules, their parameters and hooks stay the same objects). Returns how many."""
    count = 0
    for m in module.modules():
        if is_dilated_depthwise(m):
            m.__class__ = PolyphaseDepthwiseConv2d
            count += 1
    return count


def restore_dilated_depthwise(module: nn.Module) -> int:
    """The inverse of `swap_dilated_depthwise`: plain `nn.Conv2d` forwards again. Returns how many."""
    count = 0
    for m in module.modules():
        if type(m) is PolyphaseDepthwiseConv2d:
            m.__class__ = nn.Conv2d
            count += 1
    return count


# --- putting it together --------------------------------------------------------------------------

def prepare_model(model: nn.Module, device: torch.device | str, options: SpeedOptions) -> nn.Module:
    """Move `model` to `device` and apply `options` in place (see the module docstring for why
    nothing saved changes). Compiles `model.net` when the model has one (the training forward
    calls the network, not the wrapper), else `model`. Returns `model`."""
    options.validate(device)
    fmt = memory_format(options)
    model.to(device=torch.device(device), memory_format=fmt)
    if options.fast_dwconv:
        swap_dilated_depthwise(model)
    if options.compile:
        target = getattr(model, "net", model)
        target.compile()
    return model


def restore_model(model: nn.Module) -> nn.Module:
    """Undo `prepare_model`'s forward changes (plain convs, no compiled forward, NCHW weights),
    e.g. before handing the live model to an exporter. Returns `model`."""
    restore_dilated_depthwise(model)
    for m in model.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None
    return model.to(memory_format=torch.contiguous_format)
