"""Regions of an ONNX graph, found by structure (never by node names), and node naming.

The fp16 and int8 converters keep some nodes in float: the input normalisation (the nodes
between the inputs and the first convolutions), the output decoding, each output's
full-resolution head. Those are found by walking the graph from its inputs or back from its
outputs until an operator type is met, so they follow the graph whatever the exporter named
its nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from onnx import GraphProto, NodeProto


def _walk(
    starts: list[str],
    next_nodes: Callable[[str], Iterable[NodeProto]],
    next_names: Callable[[NodeProto], Iterable[str]],
    stop_ops: set[str],
) -> tuple[list[str], list[str]]:
    """A walk over tensor names: `next_nodes(name)` gives the nodes a tensor leads to,
    `next_names(node)` the tensors the walk goes on from. (nodes passed, `stop_ops` nodes met)."""
    inside: list[str] = []
    stops: list[str] = []
    seen: set[str] = set()
    frontier = list(starts)
    while frontier:
        for node in next_nodes(frontier.pop()):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in stop_ops:
                stops.append(node.name)
            else:
                inside.append(node.name)
                frontier.extend(next_names(node))
    return inside, stops


def nodes_from_inputs(graph: GraphProto, stop_ops: set[str], only: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """Walk forward from the graph inputs (those named in `only`, when given): (names of the
    nodes reached before any `stop_ops` node, names of the `stop_ops` nodes where the walk
    stopped). E.g. from the images, stop at Conv: (the input normalisation, the first
    convolutions); a frame half's `bg_features` input is not an image, and is left out."""
    consumers: dict[str, list[NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name for i in graph.initializer}
    starts = [i.name for i in graph.input if i.name not in inits and (only is None or i.name in set(only))]
    return _walk(starts, lambda name: consumers.get(name, []), lambda node: node.output, stop_ops)


def nodes_to_outputs(graph: GraphProto, stop_ops: set[str]) -> tuple[list[str], list[str]]:
    """Walk backward from the graph outputs: (names of the nodes reached before any `stop_ops`
    node, names of the `stop_ops` nodes where the walk stopped). E.g. stop at Conv: (the output
    decoding, the final convolutions); stop at Resize: (each output's full-resolution head)."""
    producer = {out: node for node in graph.node for out in node.output}
    starts = [o.name for o in graph.output]
    return _walk(starts, lambda name: [producer[name]] if name in producer else [], lambda node: node.input, stop_ops)


def ensure_node_names(graph: GraphProto) -> None:
    """Give every unnamed (or duplicate-named) node a unique name: converters pick nodes by name."""
    used: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in used:
            base = f"{node.op_type}_{i}"
            name, k = base, 0
            while name in used:
                k += 1
                name = f"{base}_{k}"
            node.name = name
        used.add(node.name)


def drop_identity_pools(graph: GraphProto) -> int:
    """Remove 1x1, stride-1 MaxPool nodes (the identity), wiring their consumers to their input;
    returns how many. The frame half has two as a layout hint for ONNX Runtime's fp32 kernels
    (toolkit.net.cut); quantised, they would run as a slow int8 MaxPool of their own."""
    import onnx

    def identity(node: NodeProto) -> bool:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        return (node.op_type == "MaxPool" and list(attrs.get("kernel_shape", [])) == [1, 1]
                and all(s == 1 for s in attrs.get("strides", [1, 1])) and not any(attrs.get("pads", [0])) and len(node.output) == 1)

    outputs = {o.name for o in graph.output}
    drop = [n for n in graph.node if identity(n) and n.output[0] not in outputs]
    rename = {n.output[0]: n.input[0] for n in drop}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for node in drop:
        graph.node.remove(node)
    return len(drop)


def features_channels_last(graph: GraphProto, name: str, part: str) -> None:
    """Make the tensor `name` channels-last at the graph's edge: the `bg` half's output gets a
    Transpose NCHW -> NHWC after it, the `frame` half's input one NHWC -> NCHW before its
    consumers. Exact (a permutation). ONNX Runtime's quantised kernels run channels-last: with the
    features handed over in that layout, its layout pass keeps the frame half's trunk NHWC
    (measured: the int8 frame half 1.5x faster than with NCHW features, where the trunk's pool ran
    as a plain NCHW int8 kernel)."""
    import onnx

    inner = f"{name}_nchw"

    def permute(value: onnx.ValueInfoProto, perm: tuple[int, ...]) -> None:
        dims = list(value.type.tensor_type.shape.dim)
        copies = [onnx.TensorShapeProto.Dimension() for _ in dims]
        for copy, i in zip(copies, perm):
            copy.CopyFrom(dims[i])
        del value.type.tensor_type.shape.dim[:]
        value.type.tensor_type.shape.dim.extend(copies)

    for info in [v for v in graph.value_info if v.name == name]:
        graph.value_info.remove(info)
    if part == "bg":
        for node in graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
        graph.node.append(onnx.helper.make_node("Transpose", [inner], [name], name=f"{name}_to_nhwc", perm=[0, 2, 3, 1]))
        permute(next(o for o in graph.output if o.name == name), (0, 2, 3, 1))
    else:
        for node in graph.node:
            node.input[:] = [inner if i == name else i for i in node.input]
        graph.node.insert(0, onnx.helper.make_node("Transpose", [name], [inner], name=f"{name}_to_nchw", perm=[0, 3, 1, 2]))
        permute(next(i for i in graph.input if i.name == name), (0, 2, 3, 1))


def structural_keys(graph: GraphProto) -> dict[str, str]:
    """Each node's place in the graph told by its way to an output: its operator, then, for the
    first node that reads its first output, that node's key and which input it reads, up to a
    graph output's name. Two graphs that end alike (a whole model and its frame half) give the
    same key to the same node of that end, whatever their exporters named the nodes; within one
    graph keys are unique (one tensor, one producer)."""
    import hashlib

    graph_outputs = {o.name for o in graph.output}
    first_reader: dict[str, tuple[NodeProto, int]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            first_reader.setdefault(name, (node, i))
    keys: dict[str, str] = {}
    for node in reversed(list(graph.node)):  # graph order is topological: readers come later
        out = node.output[0] if node.output else ""
        if out in graph_outputs:
            tail = f"output:{out}"
        elif out in first_reader and first_reader[out][0].name in keys:
            reader, index = first_reader[out]
            tail = f"{keys[reader.name]}[{index}]"
        else:
            continue  # leads to no output
        keys[node.name] = hashlib.sha256(f"{node.op_type}<-{tail}".encode()).hexdigest()[:16]
    return keys


def weights_of(graph: GraphProto) -> dict[str, Any]:
    """Each weighted node's weights (its first initializer input of rank >= 2) as an array."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer if len(t.dims) >= 2}
    out = {}
    for node in graph.node:
        name = next((i for i in node.input if i in inits), None)
        if name is not None:
            out[node.name] = numpy_helper.to_array(inits[name])
    return out


def same_layers(graph: GraphProto, weights: list[Any], keys: set[str]) -> set[str]:
    """The nodes of `graph` that are the layers other graphs know by `weights` (equal to float
    rounding: BatchNorm folded by torch in one graph, by ONNX Runtime in another) or, for
    weightless nodes, by `structural_keys`. A whole model and its halves: their stems end
    differently but hold the same weights; their heads end alike."""
    import numpy as np

    found = {name for name, key in structural_keys(graph).items() if key in keys}
    for name, w in weights_of(graph).items():
        if any(v.shape == w.shape and np.allclose(v, w, rtol=1e-4, atol=1e-6) for v in weights):
            found.add(name)
    return found
