"""What is installed and usable, and what each missing piece disables (no torch at import)."""

from __future__ import annotations

import importlib
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Check:
    name: str
    version: str
    ok: bool
    verdict: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except Exception:  # a broken install is "not usable", whatever it raises
        return None


def _simple(name: str, module: str, role: str) -> Callable[[], Check]:
    """A package of the edge install: missing means the install itself is broken."""

    def check() -> Check:
        m = _module(module)
        if m is None:
            return Check(name, "-", False, f"missing: {role} unavailable", "pip install toolkit")
        return Check(name, str(getattr(m, "__version__", "?")), True, role)

    return check


def _onnxruntime() -> Check:
    ort = _module("onnxruntime")
    if ort is None:
        return Check("onnxruntime", "-", False, "missing: infer/parity/bench on .onnx disabled", "pip install toolkit")
    providers = ort.get_available_providers()
    return Check("onnxruntime", ort.__version__, True, "providers: " + ", ".join(providers))


def _torch() -> Check:
    torch = _module("torch")
    if torch is None:
        return Check("torch", "-", False, "missing: train, export, summary, import-legacy disabled", "pip install 'toolkit[train]'")
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        p = torch.cuda.get_device_properties(i)
        cudnn = torch.backends.cudnn.version()
        verdict = (
            f"CUDA {torch.version.cuda}: {p.name}, compute {p.major}.{p.minor}, "
            f"{p.total_memory / 2**30:.0f} GiB; cuDNN {cudnn}"
        )
    else:
        verdict = "CPU only (no CUDA device): training runs on the CPU"
    return Check("torch", torch.__version__, True, verdict)


def _tensorrt() -> Check:
    trt = _module("tensorrt")
    if trt is None:
        return Check("tensorrt", "-", False, "missing: --engine export and .engine models disabled", "pip install 'toolkit[gpu]'")
    return Check("tensorrt", trt.__version__, True, "TensorRT engines can be built and run")


def _cuda_python() -> Check:
    for module, label in (("cuda.bindings", "cuda-python"), ("pycuda", "pycuda")):
        m = _module(module)
        if m is not None:
            return Check(label, str(getattr(m, "__version__", "?")), True, "GPU buffers for TensorRT engines")
    return Check("cuda-python", "-", False, "missing: .engine models cannot be run", "pip install 'toolkit[gpu]'")


CHECKS: tuple[Callable[[], Check], ...] = (
    lambda: Check("python", platform.python_version(), True, platform.platform()),
    _simple("numpy", "numpy", "arrays"),
    _simple("Pillow", "PIL", "image files"),
    _simple("onnx", "onnx", "ONNX files and metadata"),
    _onnxruntime,
    _torch,
    _tensorrt,
    _cuda_python,
)


def run_checks() -> list[Check]:
    return [c() for c in CHECKS]
