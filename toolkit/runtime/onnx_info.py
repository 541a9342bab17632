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

from ..core.errors import UserError
from ..core.spec import INPUT_NAMES, OUTPUT_NAMES, WHOLE, Interface, IOSpec, interface_of


@dataclass(frozen=True)
class OnnxModelInfo:
    path: Path
    spec: IOSpec
    metadata: dict[str, str]  # the model's metadata_props
    fixed_batch: int | None  # the batch dimension when the graph pins it, else None
    has_qdq: bool  # QuantizeLinear/DequantizeLinear nodes (an int8 Q/DQ export)
    interface: Interface = WHOLE  # the whole network, or one half of a fixed-camera model


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
        from ..core.sniff import describe

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
    metadata = {p.key: p.value for p in model.metadata_props}
    try:
        interface = interface_of(metadata)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    in_names, out_names = interface.inputs, interface.outputs
    if sorted(inputs) != sorted(in_names) or sorted(outputs) != sorted(out_names):
        if not graph.node and not inputs:  # parsed, but holds no graph at all (an empty or foreign file)
            from ..core.sniff import describe

            kind = describe(path)
            why = "it holds no graph" if kind.startswith("binary data") else f"it is {kind}, not an ONNX model"
            raise UserError(f"{path}: not a loadable ONNX model: {why}")
        raise UserError(
            f"{path}: model has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
            f"expected {list(in_names)} -> {list(out_names)}"
        )
    for value in [*(inputs[n] for n in in_names), *(outputs[n] for n in out_names)]:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise UserError(f"{path}: {value.name} is {_type_name(value)}, the toolkit's models use float32 inputs and outputs")
    spec = _spec(path, metadata, inputs[in_names[-1]], require_spec or interface.part != "whole")
    batches: set[int | str | None] = set()
    for name in in_names:
        dims, want = _dims(inputs[name]), interface.shape(name, spec.size)
        if len(dims) != 4 or (name in INPUT_NAMES and dims[1] != 3):
            raise UserError(f"{path}: input {name} has shape {dims}, expected {_expected(name, want)}")
        fixed = [d for d in dims[1:] if isinstance(d, int)]
        if len(fixed) == 3 and tuple(fixed) != want:
            what = f"{dims[2]}x{dims[3]}" if name in INPUT_NAMES else f"{list(dims[1:])} for {name}"
            raise UserError(f"{path}: metadata says {spec.height}x{spec.width} but the graph takes {what}")
        batches.add(dims[0])
    for name in out_names:  # symbolic dims pass here; Runner.check_result sees the values
        dims, want = _dims(outputs[name]), interface.shape(name, spec.size)
        if len(dims) != 4 or (name in OUTPUT_NAMES and isinstance(dims[1], int) and dims[1] != 1):
            raise UserError(f"{path}: output {name} has shape {dims}, expected {_expected(name, want)}")
    batch = batches.pop() if len(batches) == 1 else None
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    return OnnxModelInfo(path, spec, metadata, batch if isinstance(batch, int) else None, has_qdq, interface)


def _expected(name: str, sample: tuple[int, int, int]) -> str:
    """'[N, 3, H, W]' for an image, '[N, 1, H, W]' for an output map, the numbers for the features."""
    if name in INPUT_NAMES or name in OUTPUT_NAMES:
        return f"[N, {sample[0]}, H, W]"
    return f"[N, {', '.join(map(str, sample))}]"


def _spec(path: Path, metadata: dict[str, str], image: ValueInfoProto, require_spec: bool) -> IOSpec:
    """The toolkit spec from the metadata, else (a foreign model) the default spec at the
    graph's fixed input size (of `image`, an image input)."""
    try:
        return IOSpec.from_metadata(metadata)
    except ValueError as e:
        if require_spec:
            raise UserError(f"{path}: {e} (engines are built from the toolkit's own ONNX exports)") from e
    dims = _dims(image)
    size = [d for d in dims[2:] if isinstance(d, int) and d > 0]
    if len(dims) == 4 and len(size) == 2:
        try:
            return IOSpec().with_size(size[0], size[1])
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
    raise UserError(f"{path}: model has no toolkit metadata and no fixed input size")
