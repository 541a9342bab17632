"""What is installed and usable, and what each missing piece disables (no torch at import).

Every fix names the install command for this toolkit's own install (`toolkit.core.install`), and the
optional pieces of `stream` and `serve` are judged by the very functions those commands call.
"""

from __future__ import annotations

import importlib
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..core.install import install_hint


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
            return Check(name, "-", False, f"missing: {role} unavailable", install_hint())
        return Check(name, str(getattr(m, "__version__", "?")), True, role)

    return check


def _onnxruntime() -> Check:
    ort = _module("onnxruntime")
    if ort is None:
        return Check("onnxruntime", "-", False, "missing: infer/parity/bench on .onnx disabled", install_hint())
    providers = ort.get_available_providers()
    gpu = [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p in providers]
    detail = f"; GPU providers: {', '.join(gpu)}" if gpu else "; no GPU providers (CPU only)"
    return Check("onnxruntime", ort.__version__, True, "providers: " + ", ".join(providers) + detail)


def _ort_gpu_providers() -> Check:
    """Which of ONNX Runtime's CUDA and TensorRT execution providers this install has, and
    whether they can load here (a driver): judged by `runtime.gpu_libs`, as the runner judges."""
    from ..runtime.gpu_libs import driver_problem, ort_gpu_missing

    name = "onnxruntime GPU providers"
    ort = _module("onnxruntime")
    if ort is None:
        return Check(name, "-", False, "missing: onnxruntime is not installed", install_hint())
    providers = ort.get_available_providers()
    has = {p: f"{p}ExecutionProvider" in providers for p in ("CUDA", "Tensorrt")}
    if not has["CUDA"]:
        why, fix = ort_gpu_missing(providers)
        return Check(name, ort.__version__, False, f"missing: .onnx models run on the CPU only; {why}", fix)
    driver = driver_problem()
    if driver:
        return Check(name, ort.__version__, False, f"CUDA{' and TensorRT' if has['Tensorrt'] else ''} execution providers listed, "
                     f"but {driver}", "run on a machine with an NVIDIA GPU (--provider cpu here)")
    if not has["Tensorrt"]:  # the runner's answer: reinstalling this build would not add the TensorRT EP
        return Check(name, ort.__version__, True,
                     "CUDA execution provider available; TensorRT EP missing: the ONNX Runtime tensorrt provider falls back to CUDA",
                     ort_gpu_missing(providers)[1])
    return Check(name, ort.__version__, True, "CUDA and TensorRT execution providers available (.onnx on the GPU)")


def _cudnn() -> Check:
    """cuDNN: needed by ONNX Runtime's CUDA/TensorRT providers (PyTorch bundles its own)."""
    from ..runtime.gpu_libs import installed_extra

    torch = _module("torch")
    if torch is not None and torch.cuda.is_available() and torch.backends.cudnn.is_available():
        return Check("cuDNN", str(torch.backends.cudnn.version()), True, "via PyTorch: GPU training uses cuDNN")
    from importlib import metadata

    for dist in ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11"):
        try:
            return Check("cuDNN", metadata.version(dist), True, f"{dist}: available to ONNX Runtime's CUDA provider")
        except metadata.PackageNotFoundError:
            continue
    import ctypes.util

    if ctypes.util.find_library("cudnn"):
        return Check("cuDNN", "?", True, "system libcudnn found")
    return Check(
        "cuDNN", "-", False,
        "not found: ONNX Runtime's CUDA/TensorRT providers cannot load (--provider cuda/tensorrt say so and stop)",
        f"{install_hint(installed_extra())} (onnxruntime-gpu's cudnn extra), or cuDNN 9 for your CUDA",
    )


def _torch() -> Check:
    torch = _module("torch")
    if torch is None:
        return Check("torch", "-", False, "missing: train, export, summary, import-legacy disabled", install_hint("train"))
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
        return Check(
            "tensorrt", "-", False,
            "missing: `toolkit export --engine` and .engine models in infer/parity/bench disabled", install_hint("gpu"),
        )
    version = str(getattr(trt, "__version__", "?"))  # the module imported is the one judged
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < 10:
        return Check("tensorrt", version, False, "too old: engines need TensorRT 10 or newer (`export --engine`, .engine models disabled)", install_hint("gpu"))
    typing = "always strongly typed" if int(major) >= 11 else "strongly typed networks"
    return Check("tensorrt", version, True, f"engines can be built (`export --engine`) and run; {typing}")


def _cuda_python() -> Check:
    m = _module("cuda.bindings")
    if m is not None:
        return Check("cuda-python", str(getattr(m, "__version__", "?")), True, "GPU buffers for TensorRT engines; " + _gpu_verdict())
    return Check(
        "cuda-python", "-", False,
        "missing: .engine models cannot be run (infer/parity/bench) and `export --engine` cannot record the GPU",
        install_hint("gpu"),
    )


def _pyav() -> Check:
    """PyAV, judged by the function `toolkit stream` itself calls (same answer, same fix)."""
    from ..core.errors import MissingDependency
    from ..deploy.video import require_av

    try:
        av = require_av()
    except MissingDependency:
        return Check("PyAV", "-", False, "missing: `toolkit stream` on video files and cameras disabled (folders of frames still work)",
                     install_hint("video"))
    return Check("PyAV", str(getattr(av, "__version__", "?")), True, "`toolkit stream` reads and writes video files and cameras (FFmpeg)")


def _serve() -> Check:
    """The serve extra, judged by the function `toolkit serve` itself calls."""
    from ..core.errors import MissingDependency
    from ..core.optional import distribution_version
    from ..deploy.service import require_serve

    try:
        require_serve()
    except MissingDependency:
        return Check("serve extra", "-", False, "missing: `toolkit serve` disabled (needs Starlette, uvicorn and python-multipart)",
                     install_hint("serve"))
    versions = {d: distribution_version(d) or "?" for d in ("starlette", "uvicorn", "python-multipart")}  # "?": not installed by pip
    listed = ", ".join(f"{d} {v}" for d, v in versions.items())
    return Check("serve extra", versions["starlette"], True, f"`toolkit serve` can run ({listed})")


def _openvino() -> Check:
    """OpenVINO and the devices it sees (what `--provider openvino[:GPU|:NPU]` can use)."""
    ov = _module("openvino")
    if ov is None:
        return Check("OpenVINO", "-", False, "missing: `--provider openvino` disabled (Intel CPU, iGPU, NPU runtime)",
                     install_hint("openvino"))
    try:
        from ..core.optional import openvino_core

        devices = list(openvino_core().available_devices)
    except Exception as e:  # a broken plugin install: report, never crash the doctor
        return Check("OpenVINO", str(getattr(ov, "__version__", "?")), False, f"installed but unusable ({type(e).__name__})",
                     install_hint("openvino"))
    version = str(getattr(ov, "__version__", "?")).split("-")[0]
    return Check("OpenVINO", version, True, f"`--provider openvino` runs .onnx models; devices: {', '.join(devices) or 'none'}")


def _gpu_verdict() -> str:
    from ..core.errors import UserError
    from ..runtime.cuda_buffers import gpu_info
    from ..runtime.gpu_libs import driver_problem

    driver = driver_problem()  # said plainly: without a driver the runtime API says "insufficient driver"
    if driver:
        return f"no usable GPU: {driver}"
    try:
        info = gpu_info()
    except UserError as e:
        return f"no usable GPU ({e})"
    except Exception as e:  # a broken driver install: report, never crash the doctor
        return f"no usable GPU ({type(e).__name__})"
    return "no GPU found" if info is None else f"GPU: {info.name}, compute {info.compute_capability}"


CHECKS: tuple[Callable[[], Check], ...] = (
    lambda: Check("python", platform.python_version(), True, platform.platform()),
    _simple("numpy", "numpy", "arrays"),
    _simple("Pillow", "PIL", "image files"),
    _simple("onnx", "onnx", "ONNX files and metadata"),
    _onnxruntime,
    _ort_gpu_providers,
    _torch,
    _cudnn,
    _tensorrt,
    _cuda_python,
    _openvino,
    _pyav,
    _serve,
)


def run_checks() -> list[Check]:
    return [c() for c in CHECKS]


# --- `doctor --require NAME`: a CI or deployment script asks "is X usable here?" -------------------

def _is_cuda(c: Check) -> bool:
    return c.ok and c.verdict.startswith("CUDA ")


def _has_cuda_ep(c: Check) -> bool:
    return c.ok and "CUDA" in c.verdict and not c.verdict.startswith("missing")


# requirement -> (the check that answers it, what that check must say beyond `ok`)
REQUIREMENTS: dict[str, tuple[str, Callable[[Check], bool]]] = {
    "python": ("python", lambda c: c.ok),
    "numpy": ("numpy", lambda c: c.ok),
    "pillow": ("Pillow", lambda c: c.ok),
    "onnx": ("onnx", lambda c: c.ok),
    "onnxruntime": ("onnxruntime", lambda c: c.ok),
    "onnxruntime-gpu": ("onnxruntime GPU providers", _has_cuda_ep),
    "torch": ("torch", lambda c: c.ok),
    "cuda": ("torch", _is_cuda),
    "cudnn": ("cuDNN", lambda c: c.ok),
    "tensorrt": ("tensorrt", lambda c: c.ok),
    "cuda-python": ("cuda-python", lambda c: c.ok),
    "pyav": ("PyAV", lambda c: c.ok),
    "serve": ("serve extra", lambda c: c.ok),
    "openvino": ("OpenVINO", lambda c: c.ok),
}


def _hint(name: str) -> str:
    """What fixes a requirement whose check has no fix of its own (PyTorch is there, CUDA is not)."""
    if name == "cuda":
        return f"a CUDA build of PyTorch ({install_hint('train')} with the PyTorch CUDA index) on a machine with an NVIDIA GPU and driver"
    return ""


_ALIASES = {"pil": "pillow", "pytorch": "torch", "ort": "onnxruntime", "ort-gpu": "onnxruntime-gpu", "trt": "tensorrt",
            "av": "pyav", "video": "pyav"}


def parse_requirements(values: list[str]) -> list[str]:
    """`["cuda,tensorrt", "torch"]` -> `["cuda", "tensorrt", "torch"]` (comma lists or repeated
    options, case-insensitive, aliases resolved); an unknown name is a `UserError` (exit 2)."""
    from ..core.errors import UserError

    names: list[str] = []
    for value in values:
        for raw in value.split(","):
            name = raw.strip().lower()
            if not name:
                continue
            name = _ALIASES.get(name, name)
            if name not in REQUIREMENTS:
                raise UserError(f"--require: unknown requirement {raw.strip()!r} (known: {', '.join(REQUIREMENTS)})")
            if name not in names:
                names.append(name)
    return names


def unmet_requirements(names: list[str], checks: list[Check]) -> list[str]:
    """One line per requirement the checks say is not usable: what, why, and the fix."""
    by_name = {c.name: c for c in checks}
    lines = []
    for name in names:
        check_name, usable = REQUIREMENTS[name]
        c = by_name.get(check_name)
        if c is not None and usable(c):
            continue
        why = c.verdict if c is not None else "not checked"
        hint = (c.fix if c is not None and c.fix else "") or _hint(name)
        fix = f" (fix: {hint})" if hint else ""
        lines.append(f"required {name} is not usable: {why}{fix}")
    return lines
