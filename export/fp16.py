"""fp16 ONNX (`model.fp16.onnx`) converted from the fp32 export; no torch needed.

Converter: `onnxconverter_common.float16.convert_float_to_float16` (the `train` extra). Chosen over
`onnxruntime.transformers.float16` because its output passes `onnx.checker` as is (ORT's leaves the
nodes unsorted and needs onnxslim to pass) and its default op block list keeps `Resize` in fp32,
so the upsampling `scales` never become fp16 (its figures against fp32: benchmarks/README.md).
Two converter quirks are undone after it runs (`_tidy_casts`): the constants of nodes kept in fp32
are rounded to fp16 and cast back (the original fp32 values are restored), and an output produced
by a node kept in fp32 is declared fp16 despite `keep_io_types` (it is made fp32 again).

What stays fp32, found by graph structure (never by node names):
  * the inputs and outputs (`keep_io_types=True`: same names, types and shapes as the fp32 file);
  * the input normalisation (the nodes between the inputs and the first convolutions) and the
    output decoding (the nodes between the last convolutions and the outputs: Mul/Add/Clip), so
    the normalisation constants and the decoded [0, 1] values keep full precision;
  * every Resize (the converter's op block list);
  * any node holding a constant beyond the fp16 range (65504), which would otherwise be clamped
    (folding BatchNorm into a convolution can make its weights overflow fp16).

The converter's own clamp is set to the fp16 range (its default of 1e4 would clamp representable
weights). The result is checked with `onnx.checker`, then run in ONNX Runtime beside the fp32 model
on validation pairs: any NaN/inf output (an fp16 overflow in an activation) or a parity failure
against the fp16 thresholds (mask IoU >= 0.99, depth RMSE <= 0.01) refuses the file (CheckFailed;
nothing is written). fp16 on ORT's CPU runs slower than fp32: the file is meant for GPUs.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnx.numpy_helper

from toolkit.core.errors import CheckFailed, UserError
from toolkit.core.fsutil import atomic_path
from toolkit.core.optional import distribution_version, import_optional
from toolkit.core.spec import INPUT_NAMES, METADATA_PREFIX
from toolkit.runtime import open_runner
from toolkit.verify.compare import ParityResult, Thresholds, check_model
from toolkit.verify.selftest import with_self_test

from .graph import ensure_node_names, nodes_from_inputs, nodes_to_outputs
from .metadata import derived_metadata, load_fp32_source, read_metadata, set_metadata

FP16_MAX = 65504.0
CONVERTER = "onnxconverter_common.float16"


@dataclass
class Fp16Report:
    path: Path
    parity: ParityResult  # vs the fp32 model
    kept_fp32: list[str] = field(default_factory=list)  # node names kept in fp32 (besides Resize)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"vs fp32: {self.parity.judged()}{self.parity.and_self_test}; {len(self.kept_fp32)} nodes + Resize kept fp32"


def _converter() -> ModuleType:
    return import_optional("onnxconverter_common.float16", "onnxconverter-common (needed for --fp16)", "train")


def _converter_version() -> str:
    return distribution_version("onnxconverter-common") or "?"


def fp32_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(node names to keep in fp32, notes): normalisation, decoding, out-of-range constants."""
    graph = model.graph
    ensure_node_names(graph)
    normalisation, _ = nodes_from_inputs(graph, {"Conv"}, only=INPUT_NAMES)
    decoding, _ = nodes_to_outputs(graph, {"Conv"})
    big = set()
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            values = onnx.numpy_helper.to_array(init)
            if values.size and float(np.abs(values).max()) > FP16_MAX:
                big.add(init.name)
    oversized = [n.name for n in graph.node if big & set(n.input)]
    notes = [f"{len(oversized)} nodes hold constants beyond the fp16 range: kept in fp32"] if oversized else []
    keep = list(dict.fromkeys(normalisation + decoding + oversized))
    return keep, notes


def convert_fp16_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """The fp16 ModelProto (fp32 I/O), the node names kept in fp32, and notes."""
    float16 = _converter()
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the converter edits in place
    keep, notes = fp32_nodes(model)
    original = {i.name: onnx.TensorProto.FromString(i.SerializeToString()) for i in model.graph.initializer}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            max_finite_val=FP16_MAX,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST),
            node_block_list=keep,
        )
    truncated = sum("truncated" in str(w.message) for w in caught)
    if truncated:
        notes.append(f"{truncated} tiny weight{'s' if truncated > 1 else ''} rounded to the fp16 minimum")
    _tidy_casts(converted, original)
    return converted, keep, notes


def _tidy_casts(model: onnx.ModelProto, original: dict[str, onnx.TensorProto]) -> None:
    """Undo three artefacts of the converter around the nodes kept in fp32.

    * The constants of kept nodes (normalisation mean/std, decoding scale/offset, Resize scales)
      are rounded to fp16 and cast back: feed the kept nodes the original fp32 constants.
    * An fp32 constant feeding a kept node behind a Cast to fp32 (a no-op): feed it directly.
    * A kept node that produces a graph output gets a Cast to fp16 after it, and the output is then
      declared fp16 (`keep_io_types` misses it): drop that Cast, so the output stays fp32.
    `original`: the fp32 model's initializers by name.
    """
    from onnx import TensorProto

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name: o for o in graph.output}
    info = {v.name: v for v in graph.value_info}
    producer = {o: n for n in graph.node for o in n.output}
    rename: dict[str, str] = {}
    drop = []
    for node in graph.node:
        if node.op_type != "Cast" or len(node.input) != 1:
            continue
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        src, dst = node.input[0], node.output[0]
        if to == TensorProto.FLOAT and src in inits:
            if inits[src].data_type == TensorProto.FLOAT:
                rename[dst] = src
            elif src in original and original[src].data_type == TensorProto.FLOAT:
                kept = f"{src}_fp32"
                if kept not in inits:
                    restored = graph.initializer.add()
                    restored.CopyFrom(original[src])
                    restored.name = kept
                    inits[kept] = restored
                rename[dst] = kept
            else:
                continue
            drop.append(node)
        elif dst in outputs and to == TensorProto.FLOAT16 and src in info and info[src].type.tensor_type.elem_type == TensorProto.FLOAT:
            before = producer.get(src)
            if before is None:
                continue
            before.output[list(before.output).index(src)] = dst
            outputs[dst].type.tensor_type.elem_type = TensorProto.FLOAT
            graph.value_info.remove(info[src])
            drop.append(node)
    for node in drop:
        graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for name in rename:
        if name in info:
            graph.value_info.remove(info[name])
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def convert_fp16(
    source: str | Path,
    out: str | Path,
    feeds: list[dict[str, np.ndarray]],
    *,
    thresholds: Thresholds | None = None,
) -> tuple[Path, Fp16Report]:
    """Convert the fp32 ONNX `source` to fp16 at `out`, check it, and write it only if it passes.

    `feeds`: validation batches (`{"bg", "fgbg"}` float32 `[N, 3, H, W]` at the model's size).
    `thresholds` (a `toolkit.verify.compare.Thresholds`): the values it sets replace the fp16 ones.
    """
    source, out = Path(source), Path(out)
    if not feeds:
        raise UserError("fp16: no validation pairs to check the converted model on")
    model, props = load_fp32_source(source, "fp16")
    converted, keep, notes = convert_fp16_model(model)
    set_metadata(
        converted,
        derived_metadata(props, "fp16", source, out, {
            f"{METADATA_PREFIX}fp16_converter": f"{CONVERTER} {_converter_version()}",
            f"{METADATA_PREFIX}fp16_kept_fp32": ",".join(["Resize", *keep]),
        }),
    )
    try:
        onnx.checker.check_model(converted, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError, InferenceError
        raise CheckFailed(f"{out}: not written: the fp16 model fails onnx.checker ({str(e).strip().splitlines()[0][:200]})") from e
    with tempfile.TemporaryDirectory(prefix="toolkit-fp16-") as tmp:
        candidate = Path(tmp) / "model.fp16.onnx"
        candidate.write_bytes(converted.SerializeToString())
        result = with_self_test(check_model(source, candidate, feeds, thresholds), open_runner(candidate))
        if not result:
            bad = sum(result.nonfinite.values())
            why = "overflow (NaN/inf outputs)" if bad else "; ".join(result.failures)
            raise CheckFailed(f"{out}: not written: fp16 model fails its check: {why} (vs fp32: {result.figures()})")
    set_metadata(converted, read_metadata(converted) | {f"{METADATA_PREFIX}fp16_check": f"vs fp32: {result.figures()}"})
    with atomic_path(out) as dst:
        dst.write_bytes(converted.SerializeToString())
    return out, Fp16Report(out, result, keep, notes)
