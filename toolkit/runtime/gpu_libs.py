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
import ntpath
import posixpath
import re
import shlex
import sys
from collections.abc import Sequence

from ..core.install import install_hint, pip_command
from ..core.optional import distribution_version, version_tuple

ORT_GPU = "onnxruntime-gpu"
# The versions of ONNX Runtime's GPU build each GPU extra pins (pyproject.toml; a test keeps the
# two equal): what a fix names when no onnxruntime-gpu is installed yet.
ORT_GPU_PINS = {"gpu": ">=1.31", "gpu-cu12": ">=1.21,<1.27"}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _driver() -> tuple[str | None, tuple[int, int] | None]:
    """(why the NVIDIA driver gives no usable GPU here or None, the CUDA version it supports),
    from the driver API itself (`cuInit`, `cuDeviceGetCount`, `cuDriverGetVersion`)."""
    if sys.platform not in ("win32", "linux"):
        return f"no NVIDIA driver on {sys.platform}", None
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        cuda = ctypes.CDLL(name)
    except OSError:
        return f"no NVIDIA driver ({name} does not load: no GPU here, or a container started without GPU access)", None
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    supports = (version.value // 1000, version.value % 1000 // 10) if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0 else None
    status = cuda.cuInit(0)
    if status != 0:  # 100: no device (CUDA_VISIBLE_DEVICES empty, or none at all)
        return f"the NVIDIA driver finds no usable GPU (cuInit error {status})", supports
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "the NVIDIA driver sees no GPU (CUDA_VISIBLE_DEVICES?)", supports
    return None, supports


def driver_problem() -> str | None:
    """None when the NVIDIA driver runs and sees a GPU, else why there is no usable GPU here."""
    return _driver()[0]


def ort_cuda_version() -> tuple[int, int] | None:
    """The CUDA version this onnxruntime-gpu was built for (its build_and_package_info), if any."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    text = str(getattr(info, "cuda_version", "") or "")
    if not re.search(r"\d", text):
        return None
    major, minor = (*version_tuple(text, 2), 0)[:2]
    return major, minor


def driver_too_old(supports: tuple[int, int] | None, built_for: tuple[int, int] | None) -> tuple[str, str] | None:
    """(why the driver cannot run this onnxruntime-gpu: its CUDA major is newer, the fix: the
    extra of the driver's CUDA major when there is one), else None."""
    if supports is None or built_for is None or supports[0] >= built_for[0]:
        return None
    other = {12: "gpu-cu12", 13: "gpu"}.get(supports[0])
    fix = f"update the NVIDIA driver, or {install_hint(other)}" if other else "update the NVIDIA driver"
    return (f"the NVIDIA driver supports CUDA {supports[0]}.{supports[1]}, this onnxruntime-gpu is built for CUDA "
            f"{built_for[0]}.{built_for[1]}"), fix


def installed_extra() -> str:
    """The GPU extra the installed onnxruntime-gpu belongs to (by its version), `gpu` if none."""
    version = distribution_version(ORT_GPU)
    return "gpu-cu12" if version and (1, 21) <= version_tuple(version, 2) < (1, 27) else "gpu"


def shadowed_gpu_build(available: Sequence[str]) -> str | None:
    """The version of an installed onnxruntime-gpu whose files the CPU build overwrote (the
    module lists no GPU provider), else None."""
    version = distribution_version(ORT_GPU)
    if version is None or any(p in available for p in GPU_PROVIDERS):
        return None
    return version


def gpu_build_fix(extra: str = "gpu") -> str:
    """The command that makes ONNX Runtime's GPU build the one imported: the extra's install
    (when onnxruntime-gpu is missing), then its files written over the CPU build's."""
    installed = distribution_version(ORT_GPU)
    rewrite = f"{pip_command()} install --force-reinstall --no-deps {shlex.quote(ORT_GPU + (f'=={installed}' if installed else ORT_GPU_PINS[extra]))}"
    return rewrite if installed else f"{install_hint(extra)} && {rewrite}"


def ort_gpu_missing(available: Sequence[str]) -> tuple[str, str]:
    """(why this onnxruntime has no GPU providers, the command that fixes it): the CPU build's
    files over the GPU build's, or no GPU build at all."""
    shadowed = shadowed_gpu_build(available)
    if shadowed:
        why = f"onnxruntime-gpu {shadowed} is installed but the onnxruntime module is the CPU build's (both write one folder)"
    elif "CUDAExecutionProvider" in available:  # reinstalling the same build would not add it
        return "this onnxruntime build has the CUDA provider but not the TensorRT one", "--provider cuda"
    else:
        why = "this onnxruntime is the CPU build"
    return why, gpu_build_fix(installed_extra())


def failed_preloads(printed: str) -> list[str]:
    """The libraries `onnxruntime.preload_dlls()` said it could not load ("Failed to load X: ..."),
    by file name, once each (it names a library found in a wheel by its path, then by its name;
    on Windows by a path with a drive letter)."""
    found = re.findall(r"^Failed to load (.+?\.(?:dll|so[.\d]*)):", printed, flags=re.MULTILINE | re.IGNORECASE)
    return list(dict.fromkeys(ntpath.basename(posixpath.basename(f)) for f in found))


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
            notes.append(f"{', '.join(missing)} could not be loaded")
    return notes


def provider_failure(asked: str, notes: Sequence[str], ort_said: str | None = None, extra: str | None = None) -> tuple[str, str]:
    """(why the provider ONNX Runtime lists did not load, what fixes it): the driver first (no
    library fixes a machine without a GPU, nor one whose driver is older than the build's CUDA),
    then what the preload could not load, then what ONNX Runtime said when it raised."""
    extra = extra or installed_extra()
    driver, supports = _driver()
    if driver:
        return f"{asked} did not load: {driver}", "run on a machine with an NVIDIA GPU, or --provider cpu"
    too_old = driver_too_old(supports, ort_cuda_version())
    if too_old:
        return f"{asked} did not load: {too_old[0]}", f"{too_old[1]}, or --provider cpu"
    if not notes and ort_said:
        return f"{asked} could not run the model here ({ort_said})", "--provider cpu"
    why = "; ".join(notes) or "its CUDA, cuDNN or TensorRT libraries did not load"
    return f"{asked} did not load: {why}", f"{install_hint(extra)} (its CUDA, cuDNN and TensorRT wheels), or --provider cpu"
