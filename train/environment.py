"""Where a run executes: the device, cuDNN's determinism settings, and DataLoader worker errors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from toolkit.core.errors import ToolkitError, UserError


def resolve_device(name: str) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device cuda: CUDA is not available to this PyTorch ({torch.__version__})")
    return torch.device("cuda")


# PyTorch re-raises an error of a DataLoader worker with the worker's whole traceback folded into
# its message ("Caught UserError in DataLoader worker process 1. Original Traceback ...").
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def worker_error_message(error: BaseException) -> str | None:
    """The original one-line message of a toolkit error raised in a DataLoader worker, or None
    when `error` is not one (errors raised in this process pass through unchanged)."""
    text = str(error)
    if not isinstance(error, ToolkitError) or _WORKER_TRACEBACK not in text:
        return None
    last = text.rstrip().splitlines()[-1]  # "toolkit.core.errors.UserError: <message>"
    for cls in type(error).__mro__:
        for name in (f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__):
            if last.startswith(name + ": "):
                return last[len(name) + 2:]
    return last


@contextlib.contextmanager
def deterministic_kernels(enabled: bool, cuda: bool) -> Iterator[None]:
    """`--deterministic`: deterministic algorithms (a warning where an op has none) and cuDNN
    without autotuning. Otherwise cuDNN autotunes on CUDA (`benchmark`, faster, but its choice
    of kernels can differ between runs, so a resumed CUDA run is not bit-identical). The global
    settings are restored afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if enabled:
            if cuda:  # cuBLAS is deterministic only with a fixed workspace (read when first used)
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        elif cuda:
            torch.backends.cudnn.benchmark = True
        yield
    finally:  # restore only what was changed: a Ctrl-C mid-import must not re-enter torch's lazy imports
        if enabled:
            torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        if enabled or cuda:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


