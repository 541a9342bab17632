"""What a `.onnx` file says about itself, read with `onnx` (no ONNX Runtime session, no torch).

`open_runner` uses it to know a model's I/O spec before anything is loaded, and the TensorRT
builder uses it to check a source before it parses the graph: one reader, one set of refusals
(other input/output names, non-float32 I/O, shapes other than [N, 3, H, W] -> [N, 1, H, W], a
metadata size that disagrees with the graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onnx import ModelProto, TensorProto, ValueInfoProto

from ..errors import UserError
from ..spec import INPUT_NAMES, OUTPUT_NAMES, IOSpec


@dataclass(frozen=True)
class OnnxModelInfo:
    path: Path
    spec: IOSpec
    metadata: dict[str, str]  # the model's metadata_props
    fixed_batch: int | None  # the batch dimension when the graph pins it, else None
    has_qdq: bool  # QuantizeLinear/DequantizeLinear nodes (an int8 Q/DQ export)


def _dims(value: ValueInfoProto) -> list[int | str | None]:
    """A value's shape: ints where fixed, the symbol (or None) where dynamic."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _type_name(value: ValueInfoProto) -> str:
    """'tensor(float)', 'tensor(float16)', ...: ONNX Runtime's spelling, which users see elsewhere."""
    elem = value.type.tensor_type.elem_type
    return f"tensor({TensorProto.DataType.Name(elem).lower()})" if elem else "not a tensor"


def load_proto(path: Path) -> ModelProto:
    """The ModelProto without external data; one line when it does not parse."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError and friends: protobuf's text says nothing to a user
        from ..sniff import describe

        kind = describe(path)
        why = ("it is cut short or damaged (it does not parse as an ONNX model)" if kind.startswith("binary data")
               else f"it is {kind}, not an ONNX model")
        raise UserError(f"{path}: not a loadable ONNX model: {why}") from e


def read_onnx_info(path: str | Path, *, require_spec: bool = False) -> OnnxModelInfo:
    """Check a model file's interface and read its spec. `require_spec`: refuse a model without
    the toolkit's metadata (engines are only built from the toolkit's own exports)."""
    path = Path(path)
    model = load_proto(path)
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in init_names}
    outputs = {o.name: o for o in graph.output}
    if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
        if not graph.node and not inputs:  # parsed, but holds no graph at all (an empty or foreign file)
            from ..sniff import describe

            kind = describe(path)
            why = "it holds no graph" if kind.startswith("binary data") else f"it is {kind}, not an ONNX model"
            raise UserError(f"{path}: not a loadable ONNX model: {why}")
        raise UserError(
            f"{path}: model has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
            f"expected {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}"
        )
    for value in [*(inputs[n] for n in INPUT_NAMES), *(outputs[n] for n in OUTPUT_NAMES)]:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise UserError(f"{path}: {value.name} is {_type_name(value)}, the toolkit's models use float32 inputs and outputs")
    metadata = {p.key: p.value for p in model.metadata_props}
    spec = _spec(path, metadata, inputs, require_spec)
    batches: set[int | str | None] = set()
    for name in INPUT_NAMES:
        dims = _dims(inputs[name])
        if len(dims) != 4 or dims[1] != 3:
            raise UserError(f"{path}: input {name} has shape {dims}, expected [N, 3, H, W]")
        if all(isinstance(d, int) for d in dims[2:]) and tuple(dims[2:]) != spec.size:
            raise UserError(f"{path}: metadata says {spec.height}x{spec.width} but the graph takes {dims[2]}x{dims[3]}")
        batches.add(dims[0])
    for name in OUTPUT_NAMES:  # symbolic dims pass here; Runner.check_result sees the values
        dims = _dims(outputs[name])
        if len(dims) != 4 or (isinstance(dims[1], int) and dims[1] != 1):
            raise UserError(f"{path}: output {name} has shape {dims}, expected [N, 1, H, W]")
    batch = batches.pop() if len(batches) == 1 else None
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    return OnnxModelInfo(path, spec, metadata, batch if isinstance(batch, int) else None, has_qdq)


def _spec(path: Path, metadata: dict[str, str], inputs: dict[str, ValueInfoProto], require_spec: bool) -> IOSpec:
    """The toolkit spec from the metadata, else (a foreign model) the default spec at the
    graph's fixed input size."""
    try:
        return IOSpec.from_metadata(metadata)
    except ValueError as e:
        if require_spec:
            raise UserError(f"{path}: {e} (engines are built from the toolkit's own ONNX exports)") from e
    dims = _dims(inputs[INPUT_NAMES[0]])
    size = [d for d in dims[2:] if isinstance(d, int) and d > 0]
    if len(dims) == 4 and len(size) == 2:
        try:
            return IOSpec().with_size(size[0], size[1])
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
    raise UserError(f"{path}: model has no toolkit metadata and no fixed input size")
