"""TensorRT engines from the exported ONNX files (TensorRT 10 and 11), plus their sidecars.

One path for both majors: a strongly typed network (TensorRT 11 is always strongly typed and has
no FP16/INT8 builder flags; on 10 the STRONGLY_TYPED creation flag is set), so the precision is
the ONNX file's own: fp32 from `model.onnx`, fp16 from `model.fp16.onnx` (fp16 weights, fp32
I/O), int8 from the Q/DQ `model.int8.onnx`. No precision flag and no calibrator is ever set.

The plan is written atomically, then its sidecar `<engine>.json` (what `TensorRTRunner` checks
before it deserialises anything): TensorRT version, GPU and compute capability, I/O spec,
precision, batch profile, the source ONNX and its SHA-256, the checkpoint's SHA-256, the
toolkit version and the build time. A timing cache, when given, is loaded and saved back so
later builds on the same machine reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit import __version__
from toolkit.core.errors import MissingDependency, UserError
from toolkit.core.fsutil import sha256_file, write_bytes_atomic, write_text_atomic
from toolkit.core.optional import import_optional, version_tuple
from toolkit.core.sizes import SizeProfile, check_size, is_dynamic
from toolkit.core.spec import DEFAULT_BATCH_PROFILE, METADATA_PREFIX, BatchProfile
from toolkit.runtime.onnx_info import OnnxModelInfo, read_onnx_info
from toolkit.runtime.tensorrt_runner import SIDECAR_FORMAT, sidecar_path

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MB = 1024
MIN_TRT_MAJOR = 10
# --engine-compat: none (this TensorRT, this GPU), hardware (TensorRT's AMPERE_PLUS level: any GPU of
# compute capability 8.0 or newer), version (VERSION_COMPATIBLE: this TensorRT and later ones; the
# plan carries its lean runtime), or both. TensorRT >= 8.6 has both; engines run a little slower.
COMPAT_MODES = ("none", "hardware", "version", "hardware+version")
HARDWARE_COMPAT_MIN_CC = (8, 0)


@dataclass
class EngineReport:
    engine: Path
    sidecar: Path
    precision: str
    batch: BatchProfile
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    build_seconds: float
    size_bytes: int
    timing_cache: Path | None = None
    notes: list[str] = field(default_factory=list)


def check_portability(compat: str, dla_core: int | None, precision: str | None = None) -> None:
    """`--engine-compat` and `--dla-core`, checked before anything is built (one line each)."""
    if compat not in COMPAT_MODES:
        raise UserError(f"--engine-compat must be one of {', '.join(COMPAT_MODES)}, got {compat!r}")
    if dla_core is not None:
        if int(dla_core) < 0:
            raise UserError(f"--dla-core must be a DLA core number (0, 1, ...), got {dla_core}")
        if precision == "fp32":
            raise UserError("--dla-core: DLA runs fp16 and int8 layers; build the fp16 or int8 engine for it")
        if compat != "none":
            raise UserError("--dla-core: DLA engines are built for one Jetson; --engine-compat does not go with it")


def validate_build_args(precision: str, batch: BatchProfile | tuple[int, int, int], workspace_mb: int) -> BatchProfile:
    """Argument checks that need no TensorRT: one UserError line each."""
    if precision not in PRECISIONS:
        raise UserError(f"engine precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    try:
        profile = BatchProfile.of(batch, name="engine batch profile")
    except ValueError as e:
        raise UserError(str(e)) from None
    if int(workspace_mb) <= 0:
        raise UserError(f"engine workspace must be a positive number of MiB, got {workspace_mb}")
    return profile


def read_onnx_source(onnx_path: Path) -> OnnxModelInfo:
    """The I/O spec (from the toolkit metadata), the batch dimension and whether Q/DQ nodes exist."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file")
    return read_onnx_info(onnx_path, require_spec=True)


def check_source(source: OnnxModelInfo, precision: str, batch: BatchProfile | tuple[int, int, int]) -> None:
    """The ONNX file must be of the asked precision, and its batch axis must admit the profile."""
    batch = BatchProfile.of(batch)
    recorded = source.metadata.get(f"{METADATA_PREFIX}precision")
    if recorded and recorded != precision:
        raise UserError(
            f"{source.path}: is an {recorded} model, not {precision}: a strongly typed engine takes its precision "
            f"from the ONNX file (build {precision} from the {precision} export)"
        )
    if precision == "int8" and not source.has_qdq:
        raise UserError(f"{source.path}: has no QuantizeLinear/DequantizeLinear nodes; int8 engines are built from the Q/DQ export")
    if source.fixed_batch is not None and batch.as_tuple() != (source.fixed_batch,) * 3:
        n = source.fixed_batch
        raise UserError(f"{source.path}: its batch is fixed at {n}, so the profile must be {n},{n},{n}")


def size_profile_for(source: OnnxModelInfo, sizes: SizeProfile | None) -> SizeProfile:
    """The engine's input size range: `sizes` for a dynamic-size model (default its nominal
    size), the model's own size for a fixed one (a range for it is refused)."""
    if sizes is None:
        return SizeProfile.fixed(source.spec.size)
    if not is_dynamic(source.metadata):
        h, w = source.spec.size
        raise UserError(f"{source.path}: takes {h}x{w} only; --size-profile needs a model exported with --dynamic-size")
    for hw in (sizes.min, sizes.opt, sizes.max):
        problem = check_size(*hw)
        if problem:
            raise UserError(f"--size-profile: {problem}")
    if not sizes.admits(source.spec.size):  # every command resizes frames to it: the engine must take it
        h, w = source.spec.size
        raise UserError(f"--size-profile {sizes} leaves out the model's own size {h}x{w}, which every command runs it at")
    return sizes


def trt_major(version: str) -> int:
    return version_tuple(version, 1)[0]


def make_sidecar(
    *,
    engine: Path,
    plan_sha256: str,
    source: OnnxModelInfo,
    precision: str,
    batch: BatchProfile | tuple[int, int, int],
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    checkpoint_sha256: str,
    build_seconds: float,
    built_at: str | None = None,
    sizes: SizeProfile | None = None,
    compat: str = "none",
    dla_core: int | None = None,
) -> dict[str, Any]:
    """The sidecar's content; `TensorRTRunner` reads it back (`load_sidecar`)."""
    meta = dict(source.metadata)
    meta[f"{METADATA_PREFIX}precision"] = precision
    rel = meta.get(f"{METADATA_PREFIX}checkpoint_relpath")
    if rel:  # recorded relative to the ONNX file: re-anchor it on the engine's folder
        target = (source.path.resolve().parent / rel).resolve()
        meta[f"{METADATA_PREFIX}checkpoint_relpath"] = os.path.relpath(target, engine.resolve().parent)
    ckpt = checkpoint_sha256 or meta.get(f"{METADATA_PREFIX}checkpoint_sha256", "")
    return {
        "format": SIDECAR_FORMAT,
        "engine": engine.name,
        "engine_sha256": plan_sha256,
        "tensorrt_version": trt_version,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "strongly_typed": True,
        "compat": compat,  # what the runner relaxes its TensorRT and GPU checks to
        "tf32": precision != "fp32",  # off for fp32 ("fp32" is fp32); fp16/int8 keep it in their float layers
        "dla_core": dla_core,
        "input_size": [source.spec.height, source.spec.width],
        "iospec": source.spec.to_dict(),
        "precision": precision,
        "batch_profile": BatchProfile.of(batch).to_dict(),
        "size_profile": (sizes or SizeProfile.fixed(source.spec.size)).to_dict(),
        "inputs": list(source.interface.inputs),
        "outputs": list(source.interface.outputs),
        "source_onnx": source.path.name,
        "source_onnx_sha256": sha256_file(source.path),
        "checkpoint_sha256": ckpt,
        "toolkit_version": __version__,
        "built_at": built_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 3),
        "metadata": meta,
    }


def _tensorrt() -> Any:
    return import_optional("tensorrt", "TensorRT (needed for --engine)", "gpu")


def _network_flags(trt: Any, major: int) -> int:
    """`create_network` flags: STRONGLY_TYPED on TensorRT 10 (opt-in there), none from 11 on.

    TensorRT 11 networks are always strongly typed and its STRONGLY_TYPED member is deprecated and
    ignored (docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html).
    """
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None or major >= 11 else 1 << int(flag)


def build_engine(
    onnx_path: Path,
    out: Path,
    *,
    precision: str,
    batch: BatchProfile | tuple[int, int, int] = DEFAULT_BATCH_PROFILE,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: Path | None = None,
    checkpoint_sha256: str = "",
    sizes: SizeProfile | None = None,
    compat: str = "none",
    dla_core: int | None = None,
) -> EngineReport:
    """Build `out` (a `.engine` plan) and `out.json` from `onnx_path` on the current GPU.
    `sizes`: the input size range of a dynamic-size model (default: its nominal size only);
    `compat`: one of `COMPAT_MODES`; `dla_core`: build for that DLA core, GPU fallback on."""
    from toolkit.runtime.cuda_buffers import gpu_info

    onnx_path, out = Path(onnx_path), Path(out)
    check_portability(compat, dla_core, precision)
    profile = validate_build_args(precision, batch, workspace_mb)
    source = read_onnx_source(onnx_path)
    check_source(source, precision, profile)
    size_range = size_profile_for(source, sizes)
    trt = _tensorrt()
    version = str(trt.__version__)
    major = trt_major(version)
    if major < MIN_TRT_MAJOR:
        raise UserError(f"TensorRT {version} is too old: engines need TensorRT {MIN_TRT_MAJOR} or newer")
    gpu = gpu_info(allow_torch=True)
    if gpu is None:
        raise MissingDependency("cuda-python (needed to record the GPU an engine is built for)", "gpu")

    notes: list[str] = []
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, major))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
        first = (errors[0].splitlines()[0] if errors and errors[0] else "no error reported")[:300]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(f"{onnx_path}: TensorRT could not parse the model: {first}{more}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    configure_portability(trt, builder, config, precision=precision, compat=compat, dla_core=dla_core,
                          compute_capability=gpu.compute_capability)
    opt_profile = builder.create_optimization_profile()
    io = source.interface
    for name in io.inputs:  # the whole model's images, or one half's inputs; batch and size ranges
        lo, opt, hi = ((n, *io.shape(name, hw)) for n, hw in zip(profile, (size_range.min, size_range.opt, size_range.max)))
        opt_profile.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(opt_profile) < 0:  # -1: the profile is invalid
        raise UserError(f"{onnx_path}: TensorRT refused the batch profile {profile} for inputs of {size_range}")
    cache = _attach_timing_cache(config, timing_cache, notes)  # must outlive the build

    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        raise UserError(f"{out}: TensorRT failed to build the engine from {onnx_path.name} (see the TensorRT log above)")
    data = bytes(plan)
    write_bytes_atomic(out, data)
    if timing_cache is not None:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    del cache  # held until here: "The cache must not be destroyed until after the engine is built"
    sidecar = make_sidecar(
        engine=out, plan_sha256=hashlib.sha256(data).hexdigest(), source=source, precision=precision, batch=profile,
        trt_version=version, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
        checkpoint_sha256=checkpoint_sha256, build_seconds=seconds, sizes=size_range, compat=compat, dla_core=dla_core,
    )
    side = write_text_atomic(sidecar_path(out), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return EngineReport(out, side, precision, profile, version, gpu.name, gpu.compute_capability, seconds, len(data), timing_cache, notes)


def configure_portability(trt: Any, builder: Any, config: Any, *, precision: str, compat: str, dla_core: int | None,
                          compute_capability: str) -> None:
    """Builder settings beyond the precision: TF32 off for fp32 (TensorRT turns it on by
    default: fp32 convolutions would run in TF32), the compatibility mode, and DLA."""
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    if "hardware" in compat:
        if version_tuple(compute_capability, 2) < HARDWARE_COMPAT_MIN_CC:
            raise UserError(f"--engine-compat hardware: TensorRT's hardware-compatible engines need compute capability "
                            f"8.0 or newer (Ampere); this GPU has {compute_capability}")
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if "version" in compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if dla_core is not None:
        if int(dla_core) >= int(builder.num_DLA_cores):
            raise UserError(f"--dla-core {dla_core}: this device has {builder.num_DLA_cores} DLA cores (DLA is on a Jetson "
                            "AGX Orin, with JetPack's TensorRT: up to 10.7 on JetPack 6, 11.4.1+ on JetPack 7.2.2+)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run go to the GPU


def _attach_timing_cache(config: Any, path: Path | None, notes: list[str]) -> Any:
    """Attach the timing cache from `path` (if it exists and TensorRT accepts it), else an empty one.

    `set_timing_cache` returns False when the cache's CUDA device properties differ from this
    GPU's (with ignore_mismatch=False); such a cache is left unused, not forced in.
    """
    blob = b""
    if path is not None and path.is_file():
        blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if blob:
        notes.append(f"{path}: timing cache not accepted by this TensorRT or GPU; starting a new one")
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
    raise UserError("TensorRT could not create a timing cache")
