"""Optional libraries: one way to import them, and one way to read TensorRT's version.

The edge install has numpy, Pillow, Typer, Rich, onnx and onnxruntime; everything else comes
from an extra. A missing library is one line naming the extra that installs it
(`MissingDependency`), never an ImportError traceback, and it is imported only where used, so
the edge install never loads PyTorch or TensorRT by accident.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from importlib import metadata
from types import ModuleType
from typing import Any

from .errors import MissingDependency

# The pip distributions TensorRT's Python bindings come in (NVIDIA names one per CUDA major), and
# those of its libraries alone (what ONNX Runtime's TensorRT provider loads, with no bindings).
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_cu13", "tensorrt_cu12")
TENSORRT_LIB_DISTRIBUTIONS = ("tensorrt-libs", "tensorrt-cu13-libs", "tensorrt-cu12-libs")
# The wheel that holds the `tensorrt` module itself: its version is `tensorrt.__version__`, what an
# engine's sidecar records. The metapackage's can differ (post releases, mixed installs).
TENSORRT_BINDINGS_DISTRIBUTIONS = ("tensorrt-cu13-bindings", "tensorrt-cu12-bindings", "tensorrt-cu11-bindings",
                                   "tensorrt_bindings", "tensorrt-bindings")


def import_optional(module: str, what: str, extra: str | None) -> ModuleType:
    """`importlib.import_module(module)`, or `MissingDependency` ("<what> is not installed: pip
    install ...<extra>", None: the base install) when it is missing."""
    parts = module.split(".")
    try:  # each parent first: a submodule already imported would not notice its package is gone
        for i in range(1, len(parts) + 1):
            found = importlib.import_module(".".join(parts[:i]))
        return found
    except ImportError as e:
        raise MissingDependency(what, extra) from e


def installed_distribution(*names: str) -> tuple[str, str] | None:
    """(name, version) of the first of these pip distributions that is installed, else None."""
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def distribution_version(*names: str) -> str | None:
    """The version of the first of these pip distributions that is installed, else None."""
    found = installed_distribution(*names)
    return found[1] if found else None


def version_tuple(text: str, parts: int = 3) -> tuple[int, ...]:
    """'10.14.1.48.post1' -> (10, 14, 1): the digits of each of the first `parts` dot-separated
    fields, 0 for a field without any ("?" -> (0,)): comparable, never an exception."""
    fields = []
    for field in str(text).split(".")[:parts]:
        digits = "".join(ch for ch in field if ch.isdigit())
        fields.append(int(digits) if digits else 0)
    return tuple(fields)


def tensorrt_metadata_version() -> tuple[str, bool] | None:
    """(TensorRT's version from the package metadata, whether it is the bindings' own: exactly
    `tensorrt.__version__`), or None when no TensorRT distribution is installed."""
    version = distribution_version(*TENSORRT_BINDINGS_DISTRIBUTIONS)
    if version is not None:
        return version, True
    version = distribution_version(*TENSORRT_DISTRIBUTIONS)
    return (version, False) if version is not None else None


def tensorrt_version() -> tuple[str, bool] | None:
    """(TensorRT's version, whether it is exactly `tensorrt.__version__`), None when it is not installed.

    Read from the package metadata first (importing TensorRT takes seconds and needs the GPU
    libraries): the bindings' distribution is exact, the metapackage's only advisory (a check on
    it must not refuse; the real one runs after import). A system install (apt, tarball) with no
    metadata is read from the module itself.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return None
    found = tensorrt_metadata_version()
    if found is not None:
        return found
    try:
        return str(importlib.import_module("tensorrt").__version__), True
    except Exception:  # a broken install (missing libnvinfer) is "not installed" here
        return None


@functools.lru_cache(maxsize=1)
def openvino_core() -> Any:
    """One OpenVINO Core per process, as OpenVINO advises: every runner (the halves open
    three) compiles on it, `--provider auto` lists its devices. Several Cores, each with its own
    CPU thread pool, left a process that later forked (a PyTorch DataLoader worker) crashing."""
    return import_optional("openvino", "OpenVINO (needed for --provider openvino)", "openvino").Core()
