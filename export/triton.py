"""A Triton Inference Server model repository for the exported model.

Layout, one model per folder (Triton's rule: one platform per model):

    <repo>/<name>/config.pbtxt        platform "onnxruntime_onnx"
    <repo>/<name>/1/model.onnx        the ONNX file, copied
    <repo>/<name>_trt/config.pbtxt    platform "tensorrt_plan"    (only when an engine is given)
    <repo>/<name>_trt/1/model.plan    the engine, copied

Dims exclude the batch axis (Triton adds it: `max_batch_size` > 0): inputs bg/fgbg [3, H, W],
outputs mask/depth [1, H, W], all read from the ONNX graph. `max_batch_size` must not exceed the
export's dynamic batch limit, nor, for the plan, the engine profile's max (from its sidecar:
a larger request would fail at run time). Dynamic batching waits at most 100 us.

Both models get `instance_group [{ count: 1 kind: KIND_GPU }]` by default: Triton's usual
deployment is on a GPU, where its ONNX Runtime backend uses the CUDA EP. A CPU-only server
cannot load a KIND_GPU model, so pass `onnx_instance_kind="KIND_CPU"` there (plans are GPU-only).
A plan only loads on the TensorRT version and GPU that built it (recorded in the sidecar), so
Triton's TensorRT must be that version.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from toolkit import __version__
from toolkit.core.errors import UserError
from toolkit.core.fsutil import atomic_path, ensure_dir, sha256_file, write_text_atomic
from toolkit.core.spec import INPUT_NAMES, MAX_BATCH, METADATA_PREFIX, OUTPUT_NAMES

MAX_QUEUE_DELAY_US = 100
INSTANCE_KINDS = ("KIND_GPU", "KIND_CPU")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # Triton's model folder names
DEFAULT_NAME = "eva4"
DEFAULT_MAX_BATCH = 32
# ONNX TensorProto element types -> Triton DataType names
_TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 6: "TYPE_INT32", 7: "TYPE_INT64", 3: "TYPE_INT8", 2: "TYPE_UINT8", 9: "TYPE_BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton's, e.g. "TYPE_FP32"
    dims: tuple[int, ...]  # without the batch axis


@dataclass(frozen=True)
class OnnxIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch: int  # the export's dynamic batch limit


def onnx_io(onnx_path: Path) -> OnnxIO:
    """Names, Triton types and per-item dims of the model's I/O; the batch axis must be dynamic."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # DecodeError, OSError, ...
        raise UserError(f"{onnx_path}: not a loadable ONNX model ({type(e).__name__})") from e
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise UserError(f"{onnx_path}: keeps its weights in an external data file; Triton gets one model.onnx: export with the weights inside")
    init = {t.name for t in model.graph.initializer}
    values = {v.name: v for v in [*model.graph.input, *model.graph.output] if v.name not in init}
    ins = [v.name for v in model.graph.input if v.name not in init]
    outs = [v.name for v in model.graph.output]
    if sorted(ins) != sorted(INPUT_NAMES) or sorted(outs) != sorted(OUTPUT_NAMES):
        raise UserError(f"{onnx_path}: model has inputs {sorted(ins)} and outputs {sorted(outs)}, expected {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}")

    def spec(name: str) -> TensorSpec:
        t = values[name].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if len(dims) != 4:
            raise UserError(f"{onnx_path}: {name} has {len(dims)} dimensions, expected [N, C, H, W]")
        if dims[0] is not None:
            raise UserError(f"{onnx_path}: {name} has a fixed batch of {dims[0]}; Triton batching needs a dynamic batch axis")
        if any(d is None or d <= 0 for d in dims[1:]):
            raise UserError(f"{onnx_path}: {name} has shape {dims}; Triton needs fixed C, H, W")
        if t.elem_type not in _TRITON_TYPES:
            raise UserError(f"{onnx_path}: {name} has ONNX element type {t.elem_type}, which this writer does not map")
        return TensorSpec(name, _TRITON_TYPES[t.elem_type], tuple(int(d) for d in dims[1:]))  # type: ignore[arg-type]

    props = {p.key: p.value for p in model.metadata_props}
    return OnnxIO(tuple(spec(n) for n in INPUT_NAMES), tuple(spec(n) for n in OUTPUT_NAMES), _export_max_batch(props))


def _export_max_batch(props: dict[str, str]) -> int:
    """The dynamic batch limit the export declared (`toolkit.max_batch`), else the exports' own."""
    raw = props.get(f"{METADATA_PREFIX}max_batch")
    if raw and raw.isdigit() and int(raw) > 0:
        return int(raw)
    return MAX_BATCH


def check_model_name(name: str) -> str:
    """A name Triton takes as a model folder: letters, digits, '_', '.', '-'."""
    if not _NAME.match(name) or name in (".", ".."):
        raise UserError(f"Triton model name {name!r}: use letters, digits, '_', '.', '-'")
    return name


def check_max_batch(max_batch_size: int, export_max: int, profile_max: int | None = None) -> None:
    """1 <= max_batch_size <= the export's dynamic limit, and <= the engine profile's max for a plan."""
    if not 1 <= max_batch_size <= export_max:
        raise UserError(f"Triton max_batch_size must be in 1..{export_max} (the export's dynamic batch limit), got {max_batch_size}")
    if profile_max is not None and max_batch_size > profile_max:
        raise UserError(
            f"Triton max_batch_size {max_batch_size} exceeds the engine's optimisation profile max {profile_max}: "
            "lower it or rebuild the engine with a larger --batch profile"
        )


def config_pbtxt(name: str, platform: str, max_batch_size: int, io: OnnxIO, kind: str, comment: str) -> str:
    """Triton's `config.pbtxt` (protobuf text format of inference.ModelConfig)."""

    def tensors(specs: tuple[TensorSpec, ...]) -> str:
        rows = [f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {", ".join(map(str, t.dims))} ] }}' for t in specs]
        return "[\n" + ",\n".join(rows) + "\n]"

    return (
        "".join(f"# {line}\n" for line in comment.splitlines())
        + f'name: "{name}"\n'
        + f'platform: "{platform}"\n'
        + f"max_batch_size: {max_batch_size}\n"
        + f"input {tensors(io.inputs)}\n"
        + f"output {tensors(io.outputs)}\n"
        + f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}\n"
        + f"instance_group [ {{ count: 1 kind: {kind} }} ]\n"
    )


def write_triton_repo(
    repo: Path,
    name: str,
    onnx_path: Path,
    *,
    engine: Path | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    onnx_instance_kind: str = "KIND_GPU",
) -> Path:
    """Write (or refresh) the model folders under `repo`; returns `repo/<name>` (the ONNX model)."""
    repo, onnx_path = Path(repo), Path(onnx_path)
    check_model_name(name)
    if onnx_instance_kind not in INSTANCE_KINDS:
        raise UserError(f"instance kind must be one of {', '.join(INSTANCE_KINDS)}, got {onnx_instance_kind!r}")
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file")
    io = onnx_io(onnx_path)
    check_max_batch(max_batch_size, io.max_batch)

    plan_io, plan_note = None, ""
    if engine is not None:
        from toolkit.runtime.tensorrt_runner import batch_profile, load_sidecar

        engine = Path(engine)
        if not engine.is_file():
            raise UserError(f"{engine}: no such engine file")
        sidecar = load_sidecar(engine)
        profile_max = batch_profile(sidecar)[2]
        check_max_batch(max_batch_size, io.max_batch, profile_max)
        h, w = (int(v) for v in sidecar["input_size"])
        if any(t.dims[1:] != (h, w) for t in io.inputs):
            raise UserError(f"{engine}: built for {h}x{w}, but {onnx_path.name} takes {io.inputs[0].dims[1]}x{io.inputs[0].dims[2]}")
        # the toolkit's engines take and give float32 at the ONNX's shapes (TensorRTRunner checks it)
        plan_io = OnnxIO(
            tuple(TensorSpec(n, "TYPE_FP32", (3, h, w)) for n in INPUT_NAMES),
            tuple(TensorSpec(n, "TYPE_FP32", (1, h, w)) for n in OUTPUT_NAMES),
            profile_max,
        )
        plan_note = (
            f"TensorRT {sidecar['tensorrt_version']} plan for {sidecar['gpu_name']} "
            f"(compute {sidecar['compute_capability']}); Triton must use that TensorRT"
        )

    ensure_dir(repo)
    model_dir = _write_model(
        repo / name, "model.onnx", onnx_path,
        config_pbtxt(name, "onnxruntime_onnx", max_batch_size, io, onnx_instance_kind,
                     f"written by toolkit {__version__} from {onnx_path.name} (sha256 {sha256_file(onnx_path)})"),
    )
    if engine is not None and plan_io is not None:
        trt_name = f"{name}_trt"
        _write_model(
            repo / trt_name, "model.plan", engine,
            config_pbtxt(trt_name, "tensorrt_plan", max_batch_size, plan_io, "KIND_GPU",
                         f"written by toolkit {__version__} from {engine.name}\n{plan_note}"),
        )
    return model_dir


def _write_model(folder: Path, filename: str, source: Path, config: str) -> Path:
    version = ensure_dir(folder / "1")
    with atomic_path(version / filename) as tmp:
        shutil.copyfile(source, tmp)
    write_text_atomic(folder / "config.pbtxt", config)
    return folder
