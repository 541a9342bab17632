"""The int8 search: when the quantised model misses its gate, find the fewest layers to keep in float.

Why: a fixed rule of what stays in float (export.int8.quantise's first convolutions and heads) suits
one set of weights; the original author's epoch-12 checkpoint missed the gate with it (mask IoU
0.88 vs fp32). NNCF's accuracy-aware quantisation and Polygraphy's `debug precision` search
instead; this one is judged by the gate's own figures (mask IoU and depth RMSE vs fp32 on the
held-out pairs), not by tensor tolerances.

How, with one calibration: the whole graph is quantised once (every layer int8, every tensor's
range calibrated); a layer is then "kept in float" by graph surgery on that Q/DQ model (its
inputs read the float tensors before their Q/DQ pair, its weights and bias the fp32 model's), so
each variant costs a session and a gate run, not a calibration.
  1. harm: each layer quantised alone (all others float), its gate figures measured: the
     layers whose own quantisation hurts the figures most rank first;
  2. greedy: layers are kept in float in that order, the gate re-run after each, until it
     passes; each pass is timed beside fp32 at batch 8 in the same run, and the search stops
     when the candidate is no faster than fp32 (`Int8Options.min_speedup`): then it fails with the best
     figures found. The whole search is bounded by `budget_s`.
The layers chosen are recorded in the metadata (`toolkit.int8_float_nodes`, `toolkit.int8_search`)
and printed. No torch: ONNX Runtime's quantisation tools and sessions only.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from toolkit.runtime import open_runner
from toolkit.verify.compare import ParityResult, Thresholds, batches, compare_to_outputs, thresholds_for
from toolkit.verify.selftest import with_self_test

from .options import Int8Options

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
TIMING_BATCH, TIMING_ROUNDS = 8, 12


@dataclass
class SearchResult:
    model: onnx.ModelProto | None  # the passing model (None when none passed)
    float_layers: list[str]  # node names kept in float, in order of harm
    parity: ParityResult  # the chosen (or best) candidate's gate figures
    speedup: float  # pairs/s vs fp32 at batch 8, same run (0.0 when not timed)
    seconds: float
    evaluated: int
    harm: list[tuple[str, float]] = field(default_factory=list)  # layer -> its harm, worst first
    stopped: str = ""  # why the search ended without a pass
    settings: dict[str, Any] = field(default_factory=dict)  # quantize_static's, for the metadata
    labels: dict[str, str] = field(default_factory=dict)  # node name -> the module that made it
    in_effect: list[str] = field(default_factory=list)  # every layer that runs in float (`float_in_effect`)
    # each layer's weights (weighted layers) or `export.graph.structural_keys` key (the others)
    layer_refs: dict[str, tuple[np.ndarray | None, str | None]] = field(default_factory=dict)
    layer_count: int = 0

    @property
    def passed(self) -> bool:
        return self.model is not None

    def named(self) -> list[str]:
        """'convblock8.0.pointwise (node_conv2d_30)' for each float layer, in order of harm."""
        return [f"{self.labels[n]} ({n})" if self.labels.get(n, n) != n else n for n in self.float_layers]

    def summary(self) -> str:
        """One line: what the search kept in float, the figures, the speed-up and its cost."""
        cost = f"{self.seconds:.0f} s, {self.evaluated} candidates"
        speed = f", {self.speedup:.2f}x fp32 at batch {TIMING_BATCH} (same run)" if self.speedup else ""
        if self.passed:
            kept = ", ".join(self.named()) or "none"
            beside = len(set(self.in_effect) - set(self.float_layers))
            also = f"; {beside} more run in float beside them (int8 inputs, float outputs)" if beside else ""
            return f"int8 search: {len(self.float_layers)} of {self.layer_count} layers kept in float ({kept}){also}{speed}; {cost}"
        self_test = f" ({self.parity.self_test})" if self.parity.self_test else ""
        return (f"int8 search found no passing model ({self.stopped}); best: {self.parity.figures()}{self_test} with "
                f"{len(self.float_layers)} layers in float; {cost}")

    def refs(self, extra: int = 0) -> tuple[list[np.ndarray], set[str]]:
        """(weights, keys) of the float layers and of the next `extra` layers by harm: what
        `export.graph.same_layers` finds the same layers of another graph by (the halves)."""
        chosen = set(self.float_layers)
        weights, keys = [], set()
        for name in self.float_layers + [n for n, _ in self.harm if n not in chosen][:extra]:
            w, key = self.layer_refs.get(name, (None, None))
            if w is not None:
                weights.append(w)
            elif key is not None:
                keys.add(key)
        return weights, keys

    def record(self, source: Path) -> str:
        """The `toolkit.int8_search` metadata value (JSON)."""
        import json

        return json.dumps({"float_layers": self.named(), "in_float_in_effect": self.in_effect,
                           "layers": self.layer_count, "speedup_vs_fp32_batch8": round(self.speedup, 3),
                           "seconds": round(self.seconds, 1), "candidates": self.evaluated, "fp32": source.name,
                           "ranked_by_harm": [[n, round(h, 4)] for n, h in self.harm[:10]]}, sort_keys=True)


def layers_of(qdq: onnx.ModelProto) -> list[str]:
    """Names of the nodes that read a dequantised tensor (the quantised layers), in graph order."""
    made_by_dq = {o for n in qdq.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in qdq.graph.node if n.op_type not in QDQ_OPS and any(i in made_by_dq for i in n.input)]


def _prune(graph: onnx.GraphProto) -> None:
    """Remove nodes no graph output depends on, then initializers no node reads."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = {i for n in graph.node for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def keep_in_float(qdq: onnx.ModelProto, fp32: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """A copy of the Q/DQ model `qdq` in which the nodes `names` read float inputs: an activation
    through a Q -> DQ pair is read before its Q, a quantised weight or bias is replaced by the fp32
    model's (`fp32`: the graph `qdq` was quantised from, same node names). A layer whose every
    reader is then in float loses the Q on its output: it reads int8 values but computes in float
    (no QLinearConv without the Q); `float_in_effect` names those too. Measured both ways on the
    epoch-12 weights: reading the float tensor passes the gate with 2 chosen layers at 1.7x fp32,
    reading the neighbour's dequantised output (what ONNX Runtime's `nodes_to_exclude` does)
    needed 15 at 1.1x: the Q/DQ pairs between a float layer and its neighbours cost accuracy."""
    model = onnx.ModelProto.FromString(qdq.SerializeToString())
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    float_nodes = {n.name: n for n in fp32.graph.node}
    float_inits = {t.name: t for t in fp32.graph.initializer}
    present = {t.name for t in graph.initializer}
    made = set(producer)
    for node in graph.node:
        if node.name not in names:
            continue
        original = float_nodes.get(node.name)
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
            elif original is not None and i < len(original.input) and original.input[i] in float_inits:
                weight = float_inits[original.input[i]]
                name = weight.name if weight.name not in made else f"{weight.name}_float"  # a DQ may output the old name
                node.input[i] = name
                if name not in present:
                    copy = onnx.TensorProto()
                    copy.CopyFrom(weight)
                    copy.name = name
                    graph.initializer.append(copy)
                    present.add(name)
    _prune(graph)
    return model


WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def float_in_effect(model: onnx.ModelProto, layers: list[str]) -> list[str]:
    """Which of the quantised `layers` (of the Q/DQ model `model` was edited from) run in float in
    `model`: those reading no dequantised input, and the weighted ones whose output no longer
    goes through a Q (ONNX Runtime runs them as float convolutions of dequantised values)."""
    made_by_dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantised = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    by_name = {n.name: n for n in model.graph.node}
    out = []
    for name in layers:
        node = by_name.get(name)
        if node is None:
            continue
        reads_int8 = any(i in made_by_dq for i in node.input)
        if not reads_int8 or (node.op_type in WEIGHTED_OPS and not any(o in quantised for o in node.output)):
            out.append(name)
    return out


def harm_of(result: ParityResult, thresholds: Thresholds) -> float:
    """How far a candidate's gate figures are from fp32's, each in units of its gate's margin:
    (1 - mask IoU) / (1 - gate) + depth RMSE / gate (the mask IoU over decided pixels where it is
    higher, as the gate reads it). Not clipped at the gate, so that it ranks layers that each
    pass alone but fail together."""
    iou = max(result.mask_iou, result.mask_iou_decided or 0.0)
    t_iou = thresholds.mask_iou if thresholds.mask_iou is not None else 0.97
    t_rmse = thresholds.depth_rmse if thresholds.depth_rmse is not None else 0.02
    value = (1.0 - iou) / max(1.0 - t_iou, 1e-6) + result.depth_rmse / max(t_rmse, 1e-9)
    return value if np.isfinite(value) else float("inf")


class _Judge:
    """Gate runs of candidate models beside fp32 outputs computed once, and same-run timing."""

    def __init__(self, source: Path, feeds: list[dict[str, np.ndarray]], thresholds: Thresholds, workdir: Path,
                 props: list[onnx.StringStringEntryProto], min_speedup: float = 0.0):
        reference = open_runner(source)
        with reference:
            self.refs = [reference.infer(f) for f in feeds]
        self.source, self.feeds, self.thresholds, self.workdir, self.props = source, feeds, thresholds, workdir, props
        self.evaluated = 0
        self.min_speedup = min_speedup  # Int8Options.min_speedup

    def write(self, model: onnx.ModelProto, name: str = "candidate.onnx") -> Path:
        del model.metadata_props[:]
        model.metadata_props.extend(self.props)  # the fp32 export's, precision int8: a runner reads them
        path = self.workdir / name
        path.write_bytes(model.SerializeToString())
        return path

    def gate(self, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]] | None = None,
             refs: list[dict[str, np.ndarray]] | None = None) -> ParityResult:
        """The gate's verdict on `model` (with its self-test, as the export judges it), or its
        figures on other `feeds` (the harm ranking's)."""
        self.evaluated += 1
        runner = open_runner(self.write(model))
        result = compare_to_outputs(str(self.source), refs or self.refs, [runner], feeds or self.feeds, [self.thresholds]).results[0]
        return result if feeds is not None else with_self_test(result, runner)

    def speedup(self, model: onnx.ModelProto) -> float:
        """Pairs/s of `model` over fp32's at batch 8 (ONNX Runtime, CPU), timed interleaved here."""
        from toolkit.tasks.bench import open_targets, time_interleaved

        targets = open_targets([self.source, self.write(model, "timed.onnx")], ["cpu"], None)
        time_interleaved(targets, [TIMING_BATCH], 3, TIMING_ROUNDS)
        fp32, int8 = (float(np.median(t.times[TIMING_BATCH])) for t in targets)
        return fp32 / int8


def name_all(model: onnx.ModelProto) -> list[str]:
    """`quantise_with`'s exclusion for the search: every node named, none kept in float."""
    from ..graph import ensure_node_names

    ensure_node_names(model.graph)
    return []


def _subset(pairs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    from toolkit.data.holdout import evenly

    picks = evenly(int(next(iter(pairs.values())).shape[0]), n)
    return {k: v[picks] for k, v in pairs.items()}


RANK_PAIRS = 16  # calibration pairs the harm of each layer is measured on (not the gate's pairs)


def search_float_layers(source: Path, calib: dict[str, np.ndarray], gate: dict[str, np.ndarray],
                        options: Int8Options | None = None, *, say: Callable[[str], None] | None = None,
                        out: Path | None = None) -> SearchResult:
    """See the module docstring. `calib` calibrates and ranks; `gate` (held-out pairs) judges;
    `options`: target, calibration method, thresholds and time budget (`options.budget_s`);
    `out` (the int8 file to be) names the file in errors."""
    from ..metadata import read_metadata
    from .quantise import quantise_with

    o = options or Int8Options()
    target, budget_s = o.target, o.budget_s
    say = say or (lambda _: None)
    start = time.monotonic()
    judged = thresholds_for("int8", o.thresholds)
    with tempfile.TemporaryDirectory(prefix="toolkit-int8-search-") as tmp:
        qdq, pre, _, settings = quantise_with(source, calib, target=target, method=o.method, out=out or source, exclude=name_all,
                                              keep_activations=True)
        props = read_metadata(onnx.load(str(source))) | {"toolkit.precision": "int8"}
        entries = [onnx.StringStringEntryProto(key=k, value=v) for k, v in props.items()]
        judge = _Judge(source, batches(gate), judged, Path(tmp), entries, o.min_speedup)
        rank_feeds = batches(_subset(calib, RANK_PAIRS))
        with open_runner(source) as reference:
            rank_refs = [reference.infer(f) for f in rank_feeds]
        layers = layers_of(qdq)
        everything = judge.gate(qdq)
        if everything:  # every layer int8 passes: nothing to search
            found = _timed(qdq, [], everything, judge, target == "cpu", len(layers), say)
            return _finish(found, source, pre, [], layers, judge, start, settings)
        ranked_on = int(next(iter(rank_feeds[0].values())).shape[0]) * len(rank_feeds) if rank_feeds else 0
        say(f"int8 search: {len(layers)} quantised layers; the harm of each, quantised alone, on {ranked_on} calibration pairs")
        harm = []
        for i, name in enumerate(layers):
            if time.monotonic() - start > budget_s:
                break
            alone = judge.gate(keep_in_float(qdq, pre, set(layers) - {name}), rank_feeds, rank_refs)
            harm.append((name, harm_of(alone, judged)))
            if (i + 1) % 16 == 0:
                say(f"int8 search: {i + 1}/{len(layers)} layers measured ({time.monotonic() - start:.0f} s)")
        ranked = sorted(harm, key=lambda h: -h[1])
        result = _greedy(qdq, pre, judge, ranked, target=target, start=start, budget_s=budget_s, say=say, total=len(layers),
                         everything=everything)
        if len(harm) < len(layers) and not result.passed:
            result.stopped = f"the time budget ({budget_s:.0f} s) ran out after measuring {len(harm)} of {len(layers)} layers"
        return _finish(result, source, pre, ranked, layers, judge, start, settings)


def _finish(result: SearchResult, source: Path, pre: onnx.ModelProto, ranked: list[tuple[str, float]], layers: list[str],
            judge: _Judge, start: float, settings: dict[str, Any]) -> SearchResult:
    """What the search result records besides its model: cost, ranking, names and keys of its layers."""
    from toolkit.verify.layers import module_name

    from ..graph import structural_keys, weights_of

    result.harm, result.seconds, result.evaluated = ranked, time.monotonic() - start, judge.evaluated
    result.layer_count, result.settings = len(layers), settings
    if result.model is not None:
        result.in_effect = float_in_effect(result.model, layers)
    keys, weights = structural_keys(pre.graph), weights_of(pre.graph)
    result.layer_refs = {n: (weights.get(n), keys.get(n)) for n in layers if n in weights or n in keys}
    result.labels = {n.name: module_name(n) for n in onnx.load(str(source)).graph.node if n.name}
    return result


def _fewest(qdq: onnx.ModelProto, pre: onnx.ModelProto, judge: _Judge, chosen: list[str], passed: ParityResult,
            deadline: float) -> tuple[list[str], ParityResult]:
    """Backward elimination: drop each chosen layer (the least harmful first) whose float-ness
    the gate does not need, while time is left."""
    kept, best = list(chosen), passed
    for name in reversed(chosen):
        if time.monotonic() > deadline:
            break
        trial = [n for n in kept if n != name]
        result = judge.gate(keep_in_float(qdq, pre, set(trial)))
        if result:
            kept, best = trial, result
    return kept, best


def _greedy(qdq: onnx.ModelProto, pre: onnx.ModelProto, judge: _Judge, ranked: list[tuple[str, float]], *, target: str,
            start: float, budget_s: float, say: Callable[[str], None], total: int, everything: ParityResult) -> SearchResult:
    """Keep layers in float in order of harm until the gate passes (see the module docstring);
    `everything` is the gate's verdict on the model with every layer int8."""
    timed = target == "cpu"  # a TensorRT-target model's speed is TensorRT's, on a GPU: not measurable here
    chosen: list[str] = []
    best_set: list[str] = []
    best = everything
    for step, (name, _) in enumerate(ranked, 1):
        if time.monotonic() - start > budget_s:
            return SearchResult(None, best_set, best, 0.0, 0.0, 0, stopped=f"the time budget ({budget_s:.0f} s) ran out")
        chosen.append(name)
        result = judge.gate(keep_in_float(qdq, pre, set(chosen)))
        if harm_of(result, judge.thresholds) < harm_of(best, judge.thresholds):
            best, best_set = result, list(chosen)
        if result:
            kept, result = _fewest(qdq, pre, judge, chosen, result, start + budget_s)
            return _timed(keep_in_float(qdq, pre, set(kept)), kept, result, judge, timed, total, say)
        no_gain = (timed and step % 8 == 0 and judge.min_speedup > 0
                   and judge.speedup(keep_in_float(qdq, pre, set(chosen))) <= judge.min_speedup) \
            or (not timed and len(chosen) > total // 2)
        if no_gain:
            return SearchResult(None, best_set, best, 0.0, 0.0, 0,
                                stopped=f"with {len(chosen)} of {total} layers in float it would be no faster than fp32")
    return SearchResult(None, best_set, best, 0.0, 0.0, 0, stopped="every layer in float and the gate still fails")


def _timed(model: onnx.ModelProto, kept: list[str], result: ParityResult, judge: _Judge, timed: bool, total: int,
           say: Callable[[str], None]) -> SearchResult:
    """A passing candidate, refused when it is no faster than fp32 (on the CPU target)."""
    speed = judge.speedup(model) if timed else 0.0
    say(f"int8 search: the gate passes with {len(kept)} of {total} layers in float"
        + (f", {speed:.2f}x fp32 at batch {TIMING_BATCH}" if timed else ""))
    if timed and speed <= judge.min_speedup:
        return SearchResult(None, kept, result, speed, 0.0, 0,
                            stopped=f"it passes with {len(kept)} layers in float, but at {speed:.2f}x fp32: no faster")
    return SearchResult(model, kept, result, speed, 0.0, 0)
