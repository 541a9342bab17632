"""ONNX Runtime backend (edge install: no torch).

The graph holds the normalisation and decoding, so this runner only feeds arrays in and reads
arrays out. The model's I/O spec comes from its `metadata_props` (written at export).

`provider` picks the execution providers: "cpu" (default), "cuda" (CUDA EP, then CPU) or
"tensorrt" (TensorRT EP with an engine and timing cache in `<model>.ort-trt-cache/` and a batch
profile covering both inputs, then CUDA, then CPU). A provider this onnxruntime lacks (the GPU
ones need `onnxruntime-gpu`), or one that fails to load, is skipped with a one-line note in
`runner.notes`; `runner.providers` lists what the session really uses. The model is first opened
on the CPU to read and check its metadata (the TensorRT EP needs the input size up front).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependency, UserError, first_line
from ..spec import INPUT_NAMES, OUTPUT_NAMES, IOSpec
from .base import Runner

PROVIDER_CHAIN = ("tensorrt", "cuda", "cpu")
EP_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
DEFAULT_TRT_BATCH = (1, 8, 32)
GPU_FIX = "pip uninstall onnxruntime && pip install 'toolkit[gpu]'"


def trt_cache_dir(model: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.ort-trt-cache/` (engine and timing caches of the TensorRT EP)."""
    model = Path(model)
    return model.with_name(model.name + ".ort-trt-cache")


def trt_provider_options(cache: Path | None, height: int, width: int, batch: tuple[int, int, int] = DEFAULT_TRT_BATCH) -> dict[str, str]:
    """TensorRT EP options: caches (when `cache` is given) and a profile over every dynamic input.

    fp16/int8 flags stay off: the EP then builds strongly typed, taking the precision from the
    model (an fp16 or Q/DQ ONNX), as the engine path does.
    """

    def shapes(n: int) -> str:
        return ",".join(f"{name}:{n}x3x{height}x{width}" for name in INPUT_NAMES)

    options = {
        "trt_profile_min_shapes": shapes(batch[0]),
        "trt_profile_opt_shapes": shapes(batch[1]),
        "trt_profile_max_shapes": shapes(batch[2]),
    }
    if cache is not None:
        options |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
    return options


def plan_providers(requested: str, available: Sequence[str]) -> tuple[list[str], list[str]]:
    """The provider keys to try for `requested` (it and those after it in the chain, that this
    onnxruntime has; CPU always), and one note when any had to be skipped."""
    if requested not in PROVIDER_CHAIN:
        raise UserError(f"unknown ONNX Runtime provider {requested!r} (expected one of {', '.join(PROVIDER_CHAIN)})")
    wanted = list(PROVIDER_CHAIN[PROVIDER_CHAIN.index(requested):])
    chosen = [k for k in wanted if k == "cpu" or EP_NAMES[k] in available]
    skipped = [EP_NAMES[k] for k in wanted if k not in chosen]
    notes = []
    if skipped:
        notes.append(
            f"{' and '.join(skipped)} {'is' if len(skipped) == 1 else 'are'} not available in this onnxruntime "
            f"(it has {', '.join(available) or 'none'}): using {EP_NAMES[chosen[0]]} ({GPU_FIX})"
        )
    return chosen, notes


def prepare_cache_dir(cache: Path, stamp: dict[str, str]) -> Path:
    """Create the TensorRT EP cache folder; wipe it when the model/ORT/TensorRT/GPU stamp changed
    (cached engines are only valid for the exact combination that built them)."""
    stamp_file = cache / "toolkit-stamp.json"
    current: Any = None
    if stamp_file.is_file():
        with contextlib.suppress(OSError, ValueError):
            current = json.loads(stamp_file.read_text(encoding="utf-8"))
    if cache.is_dir() and current != stamp:
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    if current != stamp:
        stamp_file.write_text(json.dumps(stamp, sort_keys=True) + "\n", encoding="utf-8")
    return cache


def _cache_stamp(model: Path, ort_version: str) -> dict[str, str]:
    from importlib import metadata

    from ..fsutil import sha256_file
    from .cuda_buffers import gpu_info

    trt = "?"
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-libs", "tensorrt-cu12-libs", "tensorrt-cu13-libs"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            trt = f"{dist} {metadata.version(dist)}"
            break
    gpu = "?"
    with contextlib.suppress(UserError):
        info = gpu_info()
        if info is not None:
            gpu = f"{info.name} ({info.compute_capability})"
    return {"model_sha256": sha256_file(model), "onnxruntime": ort_version, "tensorrt": trt, "gpu": gpu}


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        provider: str = "cpu",
        trt_batch: tuple[int, int, int] = DEFAULT_TRT_BATCH,
    ):
        super().__init__(path)
        if provider not in PROVIDER_CHAIN:
            raise UserError(f"{self.path}: unknown ONNX Runtime provider {provider!r} (expected one of {', '.join(PROVIDER_CHAIN)})")
        lo, opt, hi = (int(b) for b in trt_batch)
        if not 1 <= lo <= opt <= hi:
            raise UserError(f"{self.path}: TensorRT EP batch profile must satisfy 1 <= min <= opt <= max, got {trt_batch}")
        self.threads = threads
        self.provider = provider
        self.trt_batch = (lo, opt, hi)
        self.notes: list[str] = []
        self.providers: list[str] = []
        self.session = None
        self._load_metadata()

    def _load_metadata(self) -> None:
        session = self._session()
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise UserError(
                f"{self.path}: model has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                f"expected {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}"
            )
        for value in list(session.get_inputs()) + list(session.get_outputs()):
            if value.type != "tensor(float)":
                raise UserError(f"{self.path}: {value.name} is {value.type}, the toolkit's models use float32 inputs and outputs")
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)
        shape = inputs["bg"].shape
        fixed = tuple(shape[2:]) if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]) else None
        if len(shape) != 4 or shape[1] != 3:
            raise UserError(f"{self.path}: input bg has shape {shape}, expected [N, 3, H, W]")
        try:
            self.spec = IOSpec.from_metadata(self.metadata)
        except ValueError:
            if fixed is None:
                raise UserError(f"{self.path}: model has no toolkit metadata and no fixed input size") from None
            self.spec = IOSpec().with_size(*fixed)
        if fixed is not None and fixed != self.spec.size:
            raise UserError(f"{self.path}: metadata says {self.spec.height}x{self.spec.width} but the graph takes {fixed[0]}x{fixed[1]}")
        for o in session.get_outputs():  # symbolic dims pass here; Runner.check_result sees the values
            dims = list(o.shape) if o.shape is not None else []
            if len(dims) != 4 or (isinstance(dims[1], int) and dims[1] != 1):
                raise UserError(f"{self.path}: output {o.name} has shape {dims}, expected [N, 1, H, W]")
        self.notes = []
        if self.provider != "cpu":
            session = self._accelerated_session(session)
        self.providers = list(session.get_providers())
        self.session = session

    def _session(self, providers: list[Any] | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependency("onnxruntime", "edge") from e
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        try:
            return ort.InferenceSession(str(self.path), so, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types
            first = first_line(e)
            raise UserError(f"{self.path}: not a loadable ONNX model ({first[:200]})") from e

    def _accelerated_session(self, cpu_session: Any) -> Any:
        """The session on the requested GPU provider chain; `cpu_session` when none is usable."""
        import onnxruntime as ort

        chosen, self.notes = plan_providers(self.provider, ort.get_available_providers())
        if chosen == ["cpu"]:
            return cpu_session
        providers: list[Any] = []
        for key in chosen:
            if key == "tensorrt":
                cache: Path | None = trt_cache_dir(self.path)
                try:
                    prepare_cache_dir(cache, _cache_stamp(self.path, ort.__version__))  # type: ignore[arg-type]
                except OSError as e:
                    self.notes.append(f"{cache}: cannot use it as the TensorRT EP cache ({e.strerror or e}): engines are rebuilt every run")
                    cache = None
                assert self.spec is not None
                providers.append((EP_NAMES[key], trt_provider_options(cache, self.spec.height, self.spec.width, self.trt_batch)))
            else:
                providers.append(EP_NAMES[key])
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints its own provider fallback ("EP Error ...")
                session = self._session(providers)
        except UserError as e:
            self.notes.append(f"ONNX Runtime could not open the model on {EP_NAMES[chosen[0]]} ({e}): using CPUExecutionProvider")
            return cpu_session
        used = list(session.get_providers())
        dropped = [EP_NAMES[k] for k in chosen if EP_NAMES[k] not in used]
        if dropped:  # a listed provider whose libraries (CUDA, cuDNN, TensorRT) failed to load only warns
            self.notes.append(f"{' and '.join(dropped)} failed to load (CUDA/cuDNN/TensorRT libraries missing?): using {used[0] if used else 'none'}")
        return session

    def _activate(self) -> None:
        if self.session is None:
            self._load_metadata()

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.session is not None
        try:
            values = self.session.run(list(OUTPUT_NAMES), {n: feed[n] for n in INPUT_NAMES})
        except Exception as e:  # ORT's own exception types (Fail, InvalidArgument, RuntimeException)
            first = first_line(e)
            raise UserError(f"{self.path}: ONNX Runtime failed to run the model ({first[:200]})") from e
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(OUTPUT_NAMES, values)}
