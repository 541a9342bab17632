"""Regions of an ONNX graph, found by structure (never by node names), and node naming.

The fp16 and int8 converters keep some nodes in float: the input normalisation (the nodes
between the inputs and the first convolutions), the output decoding, each output's
full-resolution head. Those are found by walking the graph from its inputs or back from its
outputs until an operator type is met, so they follow the graph whatever the exporter named
its nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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


def nodes_from_inputs(graph: GraphProto, stop_ops: set[str]) -> tuple[list[str], list[str]]:
    """Walk forward from the graph inputs: (names of the nodes reached before any `stop_ops` node,
    names of the `stop_ops` nodes where the walk stopped). E.g. stop at Conv: (the input
    normalisation, the first convolutions)."""
    consumers: dict[str, list[NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name for i in graph.initializer}
    starts = [i.name for i in graph.input if i.name not in inits]
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
