"""TensorRT backend for `.engine` files (TensorRT 10 and 11; no PyTorch).

A plan holds no metadata and only runs on the TensorRT version and GPU it was built for, so
every engine has a sidecar `<engine>.json` (written by `export.tensorrt.build_engine`). The
sidecar is read and checked before anything is deserialised: a missing or unreadable sidecar,
another TensorRT version, another GPU, or an engine file that is not the one the sidecar
describes, is refused in one line. The I/O spec comes from the sidecar.

Running uses the name-based API: `set_input_shape` per batch (inside the profile recorded in the
sidecar), `set_tensor_address`, async copies and `execute_async_v3` on a stream of our own
(never stream 0), then a synchronise; buffers come from cuda-python.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MissingDependency, UserError
from ..core.fsutil import sha256_file
from ..core.install import install_hint
from ..core.optional import import_optional, tensorrt_version, version_tuple
from ..core.sizes import SizeProfile
from ..core.spec import METADATA_PREFIX, BatchProfile, IOSpec, interface_of
from .base import Runner
from .fixed import BUILT_FROM_KEY

SIDECAR_FORMAT = "toolkit.engine-sidecar/1"
SIDECAR_KEYS = (
    "format", "tensorrt_version", "gpu_name", "compute_capability", "input_size", "iospec", "precision",
    "batch_profile", "inputs", "outputs", "source_onnx", "source_onnx_sha256", "engine_sha256",
)
REBUILD = "rebuild it with `toolkit export --engine` on this machine"


def sidecar_path(engine: str | Path) -> Path:
    """`model.fp16.engine` -> `model.fp16.engine.json`."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def load_sidecar(engine: str | Path) -> dict[str, Any]:
    """Read and shape-check an engine's sidecar; every problem is one UserError line."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise UserError(f"{engine}: its sidecar {path} is missing (engines are only run with the sidecar written beside them at build time)")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: unreadable engine sidecar: not valid JSON (line {e.lineno}, column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: unreadable engine sidecar: not UTF-8 text") from e
    except OSError as e:
        raise UserError(f"{path}: unreadable engine sidecar ({e.strerror or 'cannot be read'})") from e
    if not isinstance(sidecar, dict):
        raise UserError(f"{path}: engine sidecar must be a JSON object")
    missing = [k for k in SIDECAR_KEYS if k not in sidecar]
    if missing:
        raise UserError(f"{path}: engine sidecar lacks {', '.join(missing)}")
    if sidecar["format"] != SIDECAR_FORMAT:
        raise UserError(f"{path}: unknown engine sidecar format {sidecar['format']!r} (expected {SIDECAR_FORMAT})")
    try:
        batch_profile(sidecar)
        size_profile(sidecar)
        spec = sidecar_spec(sidecar)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from e
    if list(sidecar["input_size"]) != [spec.height, spec.width]:
        raise UserError(f"{path}: input_size {sidecar['input_size']} disagrees with its I/O spec ({spec.height}x{spec.width})")
    try:
        interface = interface_of(sidecar.get("metadata") or {})
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    if list(sidecar["inputs"]) != list(interface.inputs) or list(sidecar["outputs"]) != list(interface.outputs):
        raise UserError(f"{path}: engine I/O {sidecar['inputs']} -> {sidecar['outputs']}, "
                        f"expected {list(interface.inputs)} -> {list(interface.outputs)}")
    return sidecar


def sidecar_spec(sidecar: Mapping[str, Any]) -> IOSpec:
    return IOSpec.from_dict(sidecar["iospec"])


def batch_profile(sidecar: Mapping[str, Any]) -> BatchProfile:
    """The (min, opt, max) batch the engine's optimisation profile was built for (ValueError if invalid)."""
    p = sidecar.get("batch_profile")
    if not isinstance(p, Mapping):
        raise ValueError(f"invalid batch_profile {p!r}")
    return BatchProfile.of(p, name="batch_profile")


def size_profile(sidecar: Mapping[str, Any]) -> SizeProfile:
    """The input sizes the engine was built for (an older sidecar without one: its input size);
    ValueError if invalid."""
    p = sidecar.get("size_profile")
    if p is None:
        return SizeProfile.fixed(tuple(sidecar["input_size"]))  # type: ignore[arg-type]
    try:
        return SizeProfile.of(p)
    except (ValueError, TypeError) as e:
        raise ValueError(f"invalid size_profile {p!r} ({e})") from None


def version_admitted(sidecar: Mapping[str, Any], trt_version: str) -> bool:
    """The engine may run on `trt_version`: the TensorRT that built it, or, for a
    version-compatible engine (`--engine-compat version`), a later one of the same major or the
    next (NVIDIA: later versions within a major, and TensorRT 10's engines on 11)."""
    built = str(sidecar.get("tensorrt_version", "?"))
    if built == trt_version:
        return True
    here, then = version_tuple(trt_version), version_tuple(built)
    return "version" in str(sidecar.get("compat", "none")) and here >= then and here[0] - then[0] <= 1


def check_sidecar(sidecar: Mapping[str, Any], *, trt_version: str, gpu_name: str, compute_capability: str | None = None) -> None:
    """Refuse an engine built with another TensorRT or for another GPU (before deserialising it),
    as far as its compatibility mode (`compat` in the sidecar) allows: a version-compatible
    engine runs on later TensorRT versions, a hardware-compatible one on any GPU of compute
    capability 8.0 or newer."""
    built = str(sidecar.get("tensorrt_version", "?"))
    compat = str(sidecar.get("compat", "none"))
    if not version_admitted(sidecar, trt_version):
        major = version_tuple(built)[0]
        later = f" or a later {major}.x or {major + 1}.x" if "version" in compat else ""
        raise UserError(f"engine was built with TensorRT {built}, this machine has TensorRT {trt_version} "
                        f"(it runs on {built}{later}): {REBUILD}")
    if "hardware" in compat:
        if compute_capability is not None and version_tuple(compute_capability)[:2] < (8, 0):
            raise UserError(f"engine is hardware-compatible for compute capability 8.0 and newer (Ampere+), "
                            f"this GPU has {compute_capability}: {REBUILD}")
        return
    built_gpu = str(sidecar.get("gpu_name", "?"))
    if built_gpu != gpu_name:
        raise UserError(f"engine was built for GPU '{built_gpu}', this machine has '{gpu_name}': {REBUILD}")
    built_cc = str(sidecar.get("compute_capability", "?"))
    if compute_capability is not None and built_cc != compute_capability:
        raise UserError(f"engine was built for compute capability {built_cc}, this GPU has {compute_capability}: {REBUILD}")


def check_batch(n: int, profile: BatchProfile, *, where: str = "engine") -> None:
    if not profile.admits(n):
        raise UserError(
            f"{where}: batch of {n} is outside the engine's optimisation profile ({profile.min}..{profile.max}); "
            "split the batch or rebuild with a larger --batch profile"
        )


def _tensorrt() -> Any:
    return import_optional("tensorrt", "TensorRT (needed to run a .engine file)", "gpu")


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, path: str | Path, *, threads: int | None = None, **_options: object):
        """Judge the engine by its sidecar, before TensorRT is imported (importing it costs
        seconds and needs the GPU libraries): a missing sidecar, one naming another TensorRT
        (read from the package metadata), an engine file that is not the one it describes, or one
        built for another GPU (cuda-python names this one), is refused here. `activate()` checks
        the imported TensorRT again before it deserialises anything."""
        path = Path(path)
        found = tensorrt_version()
        installed, exact = found if found is not None else (None, False)
        try:
            sidecar = load_sidecar(path)
        except UserError as e:
            if installed is None:  # both problems in one line: fixing one would only show the other
                raise UserError(f"{e}; TensorRT is not installed either: {install_hint('gpu')}") from None
            raise
        built = str(sidecar["tensorrt_version"])
        if installed is None:
            raise MissingDependency(f"TensorRT (needed to run {path.name}, built with TensorRT {built})", "gpu")
        if exact and not version_admitted(sidecar, installed):
            raise UserError(f"{path}: engine was built with TensorRT {built}, this machine has TensorRT {installed}: {REBUILD}")
        if sha256_file(path) != sidecar["engine_sha256"]:
            raise UserError(f"{path}: the engine file is not the one its sidecar {sidecar_path(path).name} describes (SHA-256 differs); rebuild both")
        # only the metapackage's version known: the version check waits for the real one after import
        _check_gpu(path, sidecar, installed if exact else built)
        metadata = {str(k): str(v) for k, v in (sidecar.get("metadata") or {}).items()}
        metadata[f"{METADATA_PREFIX}precision"] = str(sidecar["precision"])
        metadata[BUILT_FROM_KEY] = str(sidecar["source_onnx_sha256"])  # what halves link to
        super().__init__(path, sidecar_spec(sidecar), metadata)
        self.threads = threads  # accepted for a uniform open_runner(); TensorRT has no thread knob
        self.sidecar = sidecar
        self.profile = batch_profile(sidecar)
        self.sizes = size_profile(sidecar)
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._buffers: Any = None
        self._names: list[str] = []

    def _activate(self) -> None:
        trt = _tensorrt()
        _check_gpu(self.path, self.sidecar, str(trt.__version__))  # the module imported, this time
        from .cuda_buffers import CudaBuffers

        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if "version" in str(self.sidecar.get("compat", "none")):
            runtime.engine_host_code_allowed = True  # the plan's lean runtime: this plan's SHA-256 was checked
        if self.sidecar.get("dla_core") is not None:
            runtime.DLA_core = int(self.sidecar["dla_core"])
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise UserError(f"{self.path}: TensorRT could not deserialise the engine (see the TensorRT log above); {REBUILD}")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        io = self.interface
        if sorted(inputs) != sorted(io.inputs) or sorted(outputs) != sorted(io.outputs):
            raise UserError(
                f"{self.path}: engine has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                f"expected {list(io.inputs)} -> {list(io.outputs)}"
            )
        for n in names:  # compared as DataType: trt.nptype() raises TypeError for BF16/FP8/INT4
            if engine.get_tensor_dtype(n) != trt.float32:
                raise UserError(f"{self.path}: engine tensor {n} is {engine.get_tensor_dtype(n)}, the toolkit's engines take and give float32")
        for n in io.inputs:
            built_max = int(engine.get_tensor_profile_shape(n, 0)[2][0])
            if built_max != self.profile.max:
                raise UserError(f"{self.path}: engine profile max batch for {n} is {built_max}, its sidecar says {self.profile.max}; rebuild both")
        context = engine.create_execution_context()
        if context is None:
            raise UserError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        buffers = CudaBuffers()
        try:
            for n in io.inputs:  # size every buffer for the profile's largest batch and size, once
                _set_shape(context, n, (self.profile.max, *io.shape(n, self.sizes.max)), self.path)
            for n in names:
                count = int(np.prod(tuple(context.get_tensor_shape(n))))
                buffers.allocate(n, count * np.dtype(np.float32).itemsize)
                buffers.pinned(n, count)  # the host side of every copy, page-locked once
            for n in names:  # once: the buffers never move (sized for the largest batch and size)
                if not context.set_tensor_address(n, buffers.address(n)):
                    raise UserError(f"{self.path}: TensorRT refused the address of tensor {n}")
        except BaseException:
            buffers.close()
            raise
        self._runtime, self._engine, self._context, self._buffers = runtime, engine, context, buffers
        self._names = names

    def _deactivate(self) -> None:
        buffers, self._buffers = self._buffers, None
        self._context = None  # context before engine before runtime, then the device memory
        self._engine = None
        self._runtime = None
        if buffers is not None:
            buffers.close()

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        io = self.interface
        n = feed[io.inputs[0]].shape[0]
        check_batch(n, self.profile, where=str(self.path))
        size = self.feed_size(feed)
        if not self.sizes.admits(size):
            raise UserError(f"{self.path}: input of {size[0]}x{size[1]} is outside the engine's size profile ({self.sizes}); "
                            "rebuild with a wider --size-profile")
        ctx, buf = self._context, self._buffers
        for name in io.inputs:
            _set_shape(ctx, name, feed[name].shape, self.path)
        for name in io.inputs:  # through the pinned buffers: the copies overlap on the stream
            staged = _view(buf.pinned(name, 0), feed[name].shape)
            np.copyto(staged, feed[name], casting="same_kind")
            buf.to_device(name, staged)
        if not ctx.execute_async_v3(buf.stream_handle):
            with contextlib.suppress(UserError):
                buf.synchronize()  # the input copies are queued: the next call rewrites their pinned buffers
            raise UserError(f"{self.path}: TensorRT failed to enqueue the engine (see the TensorRT log above)")
        got = {name: _view(buf.pinned(name, 0), tuple(ctx.get_tensor_shape(name))) for name in io.outputs}
        for name in io.outputs:
            buf.to_host(got[name], name)
        buf.synchronize()
        return {name: view.copy() for name, view in got.items()}  # the pinned buffers are reused by the next call


def _check_gpu(path: Path, sidecar: Mapping[str, Any], trt_version: str) -> None:
    """Refuse an engine built for another GPU or TensorRT before deserialising it."""
    from .cuda_buffers import gpu_info

    gpu = gpu_info()
    if gpu is None:  # cuda-python is not installed
        raise MissingDependency("cuda-python", "gpu")
    try:
        check_sidecar(sidecar, trt_version=trt_version, gpu_name=gpu.name, compute_capability=gpu.compute_capability)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _view(pinned: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first prod(shape) values of a pinned buffer, shaped (contiguous: a prefix of 1-D)."""
    return pinned[: int(np.prod(shape))].reshape(shape)


def _set_shape(context: Any, name: str, shape: tuple[int, ...], path: Path) -> None:
    if not context.set_input_shape(name, tuple(int(d) for d in shape)):
        raise UserError(f"{path}: TensorRT refused input shape {list(shape)} for {name} (outside the engine's profile?)")
