"""CUDA streams, device buffers and copies for the TensorRT runner, without PyTorch.

cuda-python's runtime API (`cuda.bindings.runtime`: every call returns `(err, *values)` and every
`err` is checked) gives plain integer device pointers and stream handles, which is what TensorRT's
`set_tensor_address` and `execute_async_v3` take. Stream 0 is never used. (pycuda is not
supported: its driver-API contexts are per thread, and `toolkit serve` runs the engine on another
thread than the one that loaded it; the runtime API's primary context has no such catch.)

`gpu_info()` names the current GPU and its compute capability for engine sidecars.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import MissingDependency, UserError


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.6"


def check_cuda(result: Any, what: str) -> Any:
    """Unpack a cuda-python `(err, *values)` result; any error becomes one UserError line.

    Returns None, the single value, or a tuple of values.
    """
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if int(err) != 0:
        name = getattr(err, "name", None) or f"CUDA error {int(err)}"
        raise UserError(f"CUDA call {what} failed: {name}{_error_string(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _error_string(err: Any) -> str:
    try:
        from cuda.bindings import runtime as cudart

        code, text = cudart.cudaGetErrorString(err)
        if int(code) == 0 and text:
            return f" ({text.decode() if isinstance(text, bytes) else text})"
    except Exception:  # only a nicer message; the error name is already there
        pass
    return ""


def _native_handle(obj: Any) -> int:
    """The raw address behind a cuda-python object (a `cudaStream_t` here).

    `int(obj)` is deprecated from cuda-bindings 12.9.1/13.0.0 in favour of
    `cuda.bindings.utils.get_cuda_native_handle`, which older releases lack.
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle

        return int(get_cuda_native_handle(obj))
    except (ImportError, TypeError):  # older cuda-bindings; TypeError: no getter for this type
        return int(obj)


def _cudart() -> Any | None:
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except Exception:  # not installed, or a broken install
        return None


def available_backend() -> str | None:
    """"cuda-python", or None (not importable)."""
    return "cuda-python" if _cudart() is not None else None


def gpu_info(*, allow_torch: bool = False) -> GpuInfo | None:
    """The current CUDA device, from cuda-python, else (if allowed) torch.cuda.

    None when neither is installed; a UserError when one is but no device is usable.
    """
    cudart = _cudart()
    if cudart is not None:
        count = check_cuda(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count:
            raise UserError("no CUDA device is visible (cudaGetDeviceCount returned 0)")
        device = check_cuda(cudart.cudaGetDevice(), "cudaGetDevice")
        prop = check_cuda(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return GpuInfo(name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}")
    if allow_torch:
        try:
            import torch
        except ImportError:
            return None
        if not torch.cuda.is_available():
            raise UserError("no CUDA device is visible to PyTorch")
        i = torch.cuda.current_device()
        p = torch.cuda.get_device_properties(i)
        return GpuInfo(p.name, f"{p.major}.{p.minor}")
    return None


class CudaBuffers:
    """One non-default stream plus named device buffers; `close()` frees everything it made."""

    def __init__(self) -> None:
        rt = _cudart()
        if rt is None:
            raise MissingDependency("cuda-python", "gpu")
        self._rt = rt
        self.backend = "cuda-python"
        self._stream: Any = None
        self._buffers: dict[str, tuple[Any, int]] = {}  # name -> (allocation, nbytes)
        self._pinned: dict[str, tuple[Any, np.ndarray]] = {}  # name -> (allocation, float32 view)
        self._stream = check_cuda(rt.cudaStreamCreate(), "cudaStreamCreate")
        if self.stream_handle == 0:  # never the legacy default stream
            self.close()
            raise UserError("CUDA returned the default stream (0); refusing to run on it")

    @property
    def stream_handle(self) -> int:
        return 0 if self._stream is None else _native_handle(self._stream)

    def allocate(self, name: str, nbytes: int) -> int:
        """A device buffer of at least `nbytes` for `name` (reused when big enough); its address."""
        old = self._buffers.get(name)
        if old is not None and old[1] >= nbytes:
            return self.address(name)
        if old is not None:
            self._free(old[0])
            del self._buffers[name]
        size = max(int(nbytes), 1)
        mem = check_cuda(self._rt.cudaMalloc(size), f"cudaMalloc({size})")
        self._buffers[name] = (mem, size)
        return self.address(name)

    def address(self, name: str) -> int:
        return int(self._buffers[name][0])

    def pinned(self, name: str, count: int) -> np.ndarray:
        """A page-locked float32 host array of `count` values for `name`, made once: copies from
        pinned memory are real asynchronous DMA (from pageable memory the driver stages them
        through a pinned buffer of its own, synchronously), as NVIDIA's samples/python/
        common_runtime.py `HostDeviceMem` does it (cudaMallocHost, viewed through ctypes: the view
        does not own the memory; `close()` frees it, after the stream is idle)."""
        held = self._pinned.get(name)
        if held is not None and held[1].size >= count:
            return held[1]
        if held is not None:
            self._free_pinned(held[0])
            del self._pinned[name]
        count = max(int(count), 1)
        import ctypes

        ptr = check_cuda(self._rt.cudaMallocHost(count * 4), f"cudaMallocHost({count * 4})")
        view = np.ctypeslib.as_array(ctypes.cast(int(ptr), ctypes.POINTER(ctypes.c_float)), (count,))
        self._pinned[name] = (ptr, view)
        return view

    def to_device(self, name: str, host: np.ndarray) -> None:
        """Asynchronous host -> device copy on this stream; keep `host` alive until synchronize()."""
        self._check_fits(name, host)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check_cuda(self._rt.cudaMemcpyAsync(self.address(name), host.ctypes.data, host.nbytes, kind, self._stream), f"cudaMemcpyAsync(H2D {name})")

    def to_host(self, host: np.ndarray, name: str) -> None:
        """Asynchronous device -> host copy into the contiguous array `host`."""
        self._check_fits(name, host)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(self._rt.cudaMemcpyAsync(host.ctypes.data, self.address(name), host.nbytes, kind, self._stream), f"cudaMemcpyAsync(D2H {name})")

    def synchronize(self) -> None:
        check_cuda(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        """Wait for the stream (a copy or an enqueued engine may still use the buffers: after a
        failed call nothing else waited), free every buffer, destroy the stream; safe to call
        twice. Errors here are collected and raised after everything was attempted.
        """
        errors: list[str] = []

        def attempt(label: str, call: Any, *args: Any) -> None:
            try:
                call(*args)
            except UserError as e:
                errors.append(f"{label}{e}")

        if self._stream is not None:
            attempt("", self.synchronize)
        for name, (mem, _) in list(self._buffers.items()):
            attempt(f"{name}: ", self._free, mem)
        self._buffers.clear()
        for name, (mem, _) in list(self._pinned.items()):
            attempt(f"{name} (pinned): ", self._free_pinned, mem)
        self._pinned.clear()
        if self._stream is not None:
            attempt("", lambda: check_cuda(self._rt.cudaStreamDestroy(self._stream), "cudaStreamDestroy"))
            self._stream = None
        if errors:
            raise UserError("freeing CUDA resources failed: " + "; ".join(errors))

    def _free_pinned(self, mem: Any) -> None:
        check_cuda(self._rt.cudaFreeHost(mem), "cudaFreeHost")

    def _free(self, mem: Any) -> None:
        check_cuda(self._rt.cudaFree(mem), "cudaFree")

    def _check_fits(self, name: str, host: np.ndarray) -> None:
        if not host.flags.c_contiguous:
            raise ValueError(f"{name}: host array must be C-contiguous")
        if host.nbytes > self._buffers[name][1]:
            raise ValueError(f"{name}: {host.nbytes} bytes do not fit its {self._buffers[name][1]}-byte device buffer")
