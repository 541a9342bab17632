"""`toolkit parity --layers`: every intermediate tensor of a model beside the same tensor of its fp32 reference.

When an export misses its gate, the outputs say *that* it differs; this says *where*. As
Polygraphy's `--onnx-outputs mark all`: both graphs get every float tensor a node makes as an
extra output, run in ONNX Runtime on the same pairs (one pair at a time: all of a model's
intermediates at once are tens of MB a pair), and each tensor the two graphs share by name and
shape is compared. The error of a tensor is its relative L2 error, ||model - ref|| / ||ref||,
pooled over the pairs: scale-free, so one tolerance per precision serves the stem's
activations and the heads' alike. The report names the first tensor in graph order over its
tolerance, and the first where a NaN or inf appears that the reference does not have.

Names a user recognises: each tensor is labelled with the module that made it, read from the
reference export's node metadata (`pkg.torch.onnx.name_scopes`, which torch's exporter writes;
`convblock4.pointwise`), else the node's name. fp16 and int8 files keep the fp32 export's tensor
names (the converters add Cast and Q/DQ nodes around them), so a tensor is found in both.

The reference: `--reference` an fp32 `.onnx`, or a `.pt` (exported here at the model's size and
graph form, the export itself checked against PyTorch as every export is); by default the fp32
ONNX the model was converted from (its metadata names it), else its checkpoint. Marking every
tensor as an output stops ONNX Runtime fusing across them (int8 runs as float arithmetic on
dequantised values, as TensorRT's explicit-quantisation semantics define it): the figures
locate an error, `parity` judges the deployed model.
"""

from __future__ import annotations

import ast
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..core.errors import UserError, positive
from ..core.spec import INPUT_NAMES

# Relative L2 error each precision's tensors may have against fp32 (an fp32 file computed
# by another runtime or kernel order differs by ~1e-6; fp16 by ~1e-3; int8 by a few %).
LAYER_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.15}
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
# Operators whose output is a float tensor here, for tensors shape inference could not type.
FLOAT_OPS = {"Conv", "Relu", "Add", "Mul", "Sub", "Div", "MaxPool", "Concat", "Resize", "Clip", "Sigmoid",
             "BatchNormalization", "DequantizeLinear", "Transpose", "Slice", "Split"}


@dataclass
class LayerDiff:
    index: int  # position in the model's graph order
    tensor: str
    layer: str  # the module that made it (or the node's name)
    op: str
    shape: list[int]
    rel_error: float  # ||model - ref|| / ||ref|| over every pair
    max_abs: float
    nonfinite: int  # NaN/inf values in the model's tensor where the reference has none
    tolerance: float

    @property
    def over(self) -> bool:
        return not self.rel_error <= self.tolerance


@dataclass
class LayerReport:
    model: str
    reference: str
    precision: str
    pairs: int
    layers: list[LayerDiff]
    notes: list[str] = field(default_factory=list)

    @property
    def first_over(self) -> LayerDiff | None:
        return next((d for d in self.layers if d.over), None)

    @property
    def first_nonfinite(self) -> LayerDiff | None:
        return next((d for d in self.layers if d.nonfinite), None)

    def __bool__(self) -> bool:
        return self.first_over is None and self.first_nonfinite is None

    def to_dict(self) -> dict[str, Any]:
        def clean(d: LayerDiff) -> dict[str, Any]:
            return {k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in asdict(d).items()}

        first, nan = self.first_over, self.first_nonfinite
        return {"model": self.model, "reference": self.reference, "precision": self.precision, "pairs": self.pairs,
                "passed": bool(self), "first_over": first.layer if first else None,
                "first_nonfinite": nan.layer if nan else None, "layers": [clean(d) for d in self.layers],
                "notes": list(self.notes)}


def module_name(node: onnx.NodeProto) -> str:
    """'convblock4.pointwise' from torch's name scopes (the module path, less the wrappers'
    prefixes), else the node's own name."""
    scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
    if scopes:
        try:
            parts = [s for s in ast.literal_eval(scopes) if s]
        except (ValueError, SyntaxError):
            parts = []
        if len(parts) >= 2:
            name = parts[-2]
            for prefix in ("net.net.", "net."):
                name = name.removeprefix(prefix)
            return name if name != "net" else f"net.{parts[-1]}"  # an op of the network's own forward
    return node.name or node.op_type


def _marked(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[tuple[str, onnx.NodeProto]]]:
    """A copy of `model` with every float tensor its nodes make as a graph output, and those
    tensors with their producers in graph order."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is a help here, not a need
        inferred = model
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    present = {o.name for o in model.graph.output}
    tensors = []
    for node in model.graph.node:
        for name in node.output:
            known = types.get(name, onnx.TensorProto.UNDEFINED)
            if not name or not (known in FLOAT_TYPES or (known == onnx.TensorProto.UNDEFINED and node.op_type in FLOAT_OPS)):
                continue
            if node.op_type != "DequantizeLinear":  # a DQ's output is read as its layer's value (`seen_values`), not listed
                tensors.append((name, node))
            if name not in present:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, known or onnx.TensorProto.FLOAT, None))
                present.add(name)
    return model, tensors


def seen_values(model: onnx.ModelProto) -> dict[str, str]:
    """For each tensor that goes through a Q -> DQ pair, the DQ's output: the value the next layer
    reads (ONNX Runtime folds a ReLU after a Conv into the Q's range and gives the Conv's output
    the ReLU's name: before its Q that tensor is not yet the ReLU's output)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    seen = {}
    for node in model.graph.node:
        for name in node.output:
            q = next((r for r in readers.get(name, []) if r.op_type == "QuantizeLinear"), None)
            dq = next((r for r in readers.get(q.output[0], []) if r.op_type == "DequantizeLinear"), None) if q else None
            if dq is not None:
                seen[name] = dq.output[0]
    return seen


def _session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class _Sums:
    def __init__(self) -> None:
        self.diff2 = self.ref2 = self.max_abs = 0.0
        self.nonfinite = 0
        self.shape: list[int] = []


def _accumulate(sums: dict[str, _Sums], got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    for name, a in got.items():
        b = ref.get(name)
        if b is None or a.shape != b.shape:
            continue
        s = sums.setdefault(name, _Sums())
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        bad = ~np.isfinite(a64) & np.isfinite(b64)
        s.nonfinite += int(bad.sum())
        d = np.where(np.isfinite(a64), a64 - b64, 0.0)
        s.diff2 += float(np.sum(d * d)) + (float("inf") if bad.any() else 0.0)
        s.ref2 += float(np.sum(np.nan_to_num(b64) ** 2))
        s.max_abs = max(s.max_abs, float(np.abs(d).max()) if d.size else 0.0)
        s.shape = [int(v) for v in a.shape[1:]]


def _reference_for(model: Path, runner: Any, reference: str | Path | None, tmp: Path) -> tuple[Path, str]:
    """The fp32 ONNX to compare against, and how it was found. A checkpoint is exported here
    at the model's size, graph form and size mode, so that its tensors carry the same names."""
    from ..core.fsutil import sha256_file
    from .parity import find_reference

    meta = runner.metadata
    if reference is None:
        source, digest = meta.get("toolkit.source_onnx"), meta.get("toolkit.source_onnx_sha256")
        beside = model.parent / source if source else None
        if beside is not None and beside.is_file() and sha256_file(beside) == digest:
            return beside, f"{beside.name} (the fp32 ONNX it was converted from)"
        reference = find_reference(model, runner)
    reference = Path(reference)
    if reference.suffix.lower() == ".onnx":
        return reference, reference.name
    if reference.suffix.lower() != ".pt":
        raise UserError(f"{reference}: --layers compares against an fp32 .onnx or a .pt checkpoint")
    try:
        import torch  # noqa: F401

        from export.onnx import export_onnx
    except ImportError:
        raise UserError(f"{model.name}: its reference is the checkpoint {reference.name}, and exporting it needs PyTorch "
                        "(the train extra); pass --reference an fp32 .onnx") from None
    out = tmp / "reference.onnx"
    export_onnx(reference, out, graph=meta.get("toolkit.graph", "folded"), size=runner.spec.size,
                dynamic=bool(getattr(runner, "dynamic_size", False)))
    return out, f"{reference.name} (exported here at {runner.spec.height}x{runner.spec.width}, checked against PyTorch)"


def _run_all(model: onnx.ModelProto) -> tuple[Any, list[str], list[tuple[str, onnx.NodeProto]]]:
    """A CPU session of `model` with its float tensors marked, its output names, and the tensors."""
    marked, tensors = _marked(model)
    session = _session(marked)
    return session, [o.name for o in session.get_outputs()], tensors


def compare_layers(model: str | Path, reference: str | Path | None = None, data: str | Path | None = None, *,
                   limit: int = 4, tolerance: float | None = None) -> LayerReport:
    """Every float tensor of the ONNX `model` beside its reference's (see the module docstring)."""
    from ..runtime import open_runner
    from .parity import parity_feeds

    model = Path(model)
    if model.suffix.lower() != ".onnx":
        what = ("a checkpoint is the reference, not the model under test (give its .onnx export as --model)"
                if model.suffix.lower() == ".pt" else
                "an engine's layers are TensorRT's own (compare the .onnx it was built from)")
        raise UserError(f"{model}: --layers reads an ONNX graph; {what}")
    positive(limit, "--limit")
    runner = open_runner(model)
    tol = LAYER_TOLERANCE.get(runner.precision, LAYER_TOLERANCE["fp32"]) if tolerance is None else float(tolerance)
    if not tol > 0:
        raise UserError(f"--layer-tol must be positive, got {tolerance}")
    feeds = [{k: f[k][i:i + 1] for k in INPUT_NAMES} for f in parity_feeds(data, runner.spec.size, limit=limit)
             for i in range(len(f[INPUT_NAMES[0]]))]
    with tempfile.TemporaryDirectory(prefix="toolkit-layers-") as tmp:
        ref_path, ref_note = _reference_for(model, runner, reference, Path(tmp))
        ref_graph = onnx.load(str(ref_path))
        cand_graph = onnx.load(str(model))
        labels = {out: module_name(node) for node in ref_graph.graph.node for out in node.output}
        cand, cand_names, order = _run_all(cand_graph)
        ref, ref_names, _ = _run_all(ref_graph)
        seen = seen_values(cand_graph)
        ref_ops = {out: node.op_type for node in ref_graph.graph.node for out in node.output}
        unlike = {n for n, node in order if n not in seen and n in ref_ops and ref_ops[n] != node.op_type
                  and "Cast" not in (ref_ops[n], node.op_type)}
        sums: dict[str, _Sums] = {}
        for feed in feeds:
            raw = dict(zip(cand_names, cand.run(None, feed)))
            got = {n: raw[seen.get(n, n)] for n in raw if seen.get(n, n) in raw and n not in unlike}
            want = dict(zip(ref_names, ref.run(None, feed)))
            _accumulate(sums, got, want)
    layers = [LayerDiff(i, name, labels.get(name, module_name(node)), node.op_type, sums[name].shape,
                        float(np.sqrt(sums[name].diff2 / sums[name].ref2)) if sums[name].ref2 else (0.0 if not sums[name].diff2 else float("inf")),
                        sums[name].max_abs, sums[name].nonfinite, tol)
              for i, (name, node) in enumerate(order) if name in sums]
    if not layers:
        raise UserError(f"{model.name} shares no tensor with {ref_path.name} (by name and shape): "
                        "give the fp32 ONNX it was made from as --reference")
    notes = [f"reference: {ref_note}; {len(layers)} tensors compared of {len(order)}, tolerance {tol:g} "
             f"(relative L2 error, {runner.precision})"]
    if seen:
        notes.append(f"{len(seen)} tensors pass through a Q/DQ pair: compared as the next layer reads them (dequantised)")
    if unlike:
        notes.append(f"{len(unlike)} tensors left out: the model makes them with another operator than the reference")
    return LayerReport(str(model), str(ref_note), runner.precision, len(feeds), layers, notes)


def layers_png(report: LayerReport) -> np.ndarray:
    """Relative error per tensor in graph order (log scale), the tolerance as a line, the first
    tensor over it and the first NaN/inf marked, every few tensors named under the axis."""
    from ..render.plot import series_png

    values = [d.rel_error for d in report.layers]
    marks = {}
    if report.first_over is not None:
        marks[report.layers.index(report.first_over)] = f"first over: {report.first_over.layer}"
    if report.first_nonfinite is not None:
        marks[report.layers.index(report.first_nonfinite)] = f"first NaN/inf: {report.first_nonfinite.layer}"
    return series_png(values, [d.layer for d in report.layers], threshold=report.layers[0].tolerance, marks=marks,
                      title=f"{Path(report.model).name} vs {report.reference}: relative L2 error per tensor, graph order "
                            f"({report.pairs} pairs)", y_label="||model - ref|| / ||ref||")
