"""Why ONNX Runtime's CUDA and TensorRT providers load or not, and the command that fixes it.

Three ways a GPU install fails, each seen with the real wheels:
- `onnxruntime` and `onnxruntime-gpu` write one folder, `onnxruntime/`, and the one pip writes
  last wins. The edge install needs `onnxruntime`, so `pip install '...[gpu]'` leaves both, and
  in one command pip writes the CPU build last: CUDA and TensorRT are then missing although
  `onnxruntime-gpu` is installed. Uninstalling `onnxruntime` deletes the shared files (the module
  no longer imports); reinstalling the GPU wheel's files over them is what works
  (`pip install --force-reinstall --no-deps onnxruntime-gpu==V`), and a later install of this
  toolkit keeps them (both distributions stay recorded as installed).
- No NVIDIA driver (no GPU, or a container started without GPU access): ORT lists its GPU
  providers, fails to create them and silently runs on the CPU.
- The CUDA/cuDNN/TensorRT libraries the providers link are not found: `onnxruntime.preload_dlls()`
  prints "Failed to load ..." (it never raises) and the session falls back the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import re
import shlex
import sys
from collections.abc import Sequence

from ..install import install_hint
from ..optional import distribution_version

ORT_GPU = "onnxruntime-gpu"
# The versions of ONNX Runtime's GPU build each GPU extra pins (pyproject.toml; a test keeps the
# two equal): what a fix names when no onnxruntime-gpu is installed yet.
ORT_GPU_PINS = {"gpu": ">=1.31", "gpu-cu12": ">=1.21,<1.27"}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def driver_problem() -> str | None:
    """None when the NVIDIA driver's library loads, else why there is no usable GPU here."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    if sys.platform not in ("win32", "linux"):
        return f"no NVIDIA driver on {sys.platform}"
    try:
        ctypes.CDLL(name)
    except OSError:
        return f"no NVIDIA driver ({name} does not load: no GPU here, or a container started without GPU access)"
    return None


def shadowed_gpu_build(available: Sequence[str]) -> str | None:
    """The version of an installed onnxruntime-gpu whose files the CPU build overwrote (the
    module lists no GPU provider), else None."""
    version = distribution_version(ORT_GPU)
    if version is None or any(p in available for p in GPU_PROVIDERS):
        return None
    return version


def gpu_build_fix(available: Sequence[str], extra: str = "gpu") -> str:
    """The command that makes ONNX Runtime's GPU build the one imported: the extra's install
    (when onnxruntime-gpu is missing), then its files written over the CPU build's."""
    installed = distribution_version(ORT_GPU)
    rewrite = f"pip install --force-reinstall --no-deps {shlex.quote(ORT_GPU + (f'=={installed}' if installed else ORT_GPU_PINS[extra]))}"
    return rewrite if installed else f"{install_hint(extra)} && {rewrite}"


def ort_gpu_missing(available: Sequence[str]) -> tuple[str, str]:
    """(why this onnxruntime has no GPU providers, the command that fixes it): the CPU build's
    files over the GPU build's, or no GPU build at all."""
    shadowed = shadowed_gpu_build(available)
    if shadowed:
        why = f"onnxruntime-gpu {shadowed} is installed but the onnxruntime module is the CPU build's (both write one folder)"
    elif "CUDAExecutionProvider" in available:
        why = "this onnxruntime build has the CUDA provider but not the TensorRT one"
    else:
        why = "this onnxruntime is the CPU build"
    return why, gpu_build_fix(available)


def failed_preloads(printed: str) -> list[str]:
    """The libraries `onnxruntime.preload_dlls()` said it could not load ("Failed to load X: ...")."""
    return re.findall(r"^Failed to load (\S+?):", printed, flags=re.MULTILINE)


def preload_gpu_libraries(chosen: Sequence[str]) -> list[str]:
    """Make the pip-installed GPU libraries loadable before a CUDA/TensorRT session is made
    (ONNX Runtime's providers dlopen them by soname and do not search the wheels' folders: its
    issues #13501 and #18597): `import tensorrt` loads libnvinfer and its parser from
    `tensorrt_libs`; `onnxruntime.preload_dlls()` (1.21+) loads CUDA and cuDNN from the `nvidia-*`
    wheels. What could not be loaded comes back as notes."""
    notes = []
    if "tensorrt" in chosen:
        try:
            import tensorrt  # noqa: F401  (its import loads the libraries the TensorRT EP links)
        except ImportError as e:
            notes.append(f"the tensorrt module does not import ({e})")
    import onnxruntime as ort

    if any(k in chosen for k in ("cuda", "tensorrt")) and hasattr(ort, "preload_dlls"):
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                ort.preload_dlls()
        except Exception as e:  # a partial CUDA install: say what it raised, the session says the rest
            text = str(e).strip()
            notes.append(f"onnxruntime.preload_dlls() failed ({text.splitlines()[0][:120] if text else type(e).__name__})")
        missing = failed_preloads(printed.getvalue())
        if missing:
            notes.append(f"{', '.join(missing)} not found")
    return notes


def provider_failure(asked: str, notes: Sequence[str], extra: str = "gpu") -> tuple[str, str]:
    """(why the provider ONNX Runtime lists did not load, what fixes it): the driver first (no
    library fixes a machine without a GPU), then what the preload found missing."""
    driver = driver_problem()
    if driver:
        return f"{asked} did not load: {driver}", "run on a machine with an NVIDIA GPU, or --provider cpu"
    why = "; ".join(notes) or "its CUDA, cuDNN or TensorRT libraries did not load (another CUDA major than this onnxruntime-gpu's?)"
    return f"{asked} did not load: {why}", f"{install_hint(extra)} (its CUDA, cuDNN and TensorRT wheels), or --provider cpu"
