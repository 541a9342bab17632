"""Quantising a graph: ONNX Runtime's static Q/DQ tools, with the settings of each int8 target.

Shared by the int8 export (export.int8.convert: the fixed rule of what stays in float, the gate),
the int8 search (export.int8.search: every layer quantised once, then put back in float one by
one) and the fixed camera's int8 halves (export.int8.halves). The choices and their
measurements are export.int8.convert's docstring.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from toolkit.core.errors import CheckFailed, UserError
from toolkit.core.spec import INPUT_NAMES
from toolkit.verify.compare import batches

from ..graph import ensure_node_names, nodes_from_inputs, nodes_to_outputs

if TYPE_CHECKING:
    from onnxruntime.quantization import CalibrationDataReader

CALIB_BATCH = 4  # pairs per calibration run (the calibrator keeps every activation of a batch)

# Optimum's TensorRT preset plus no bias quantisation (TensorRT quantises biases itself), and no
# Q/DQ on Conv outputs: TensorRT's explicit-quantisation guide puts Q/DQ on the inputs of
# weighted layers only; a pair between a Conv and its ReLU (what ActivationSymmetric alone gives)
# blocks the Conv+ReLU fusion and costs accuracy (ONNX Runtime's own TensorRT example does this).
TENSORRT_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": True,
    "QuantizeBias": False,
    "OpTypesToExcludeOutputQuantization": ["Conv"],
}


# -- what to quantise -------------------------------------------------------------------------
def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes kept in float: the first convolutions and each output's head (the
    nodes after the last Resize on the way to an output; the final convolutions when the graph
    has no Resize). Found by structure, so it follows the graph, not its node names."""
    graph = model.graph
    ensure_node_names(graph)
    _, first_convs = nodes_from_inputs(graph, {"Conv"}, only=INPUT_NAMES)
    heads, resizes = nodes_to_outputs(graph, {"Resize"})
    if not resizes:  # no upsampling: keep only the final convolutions and the decoding
        decoding, final_convs = nodes_to_outputs(graph, {"Conv"})
        heads = decoding + final_convs
    return list(dict.fromkeys(first_convs + heads))


def _x86_without_vnni() -> bool:
    """U8S8 can saturate on x86 without VNNI; ORT then advises `reduce_range` (7-bit weights)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def quant_settings(target: str) -> dict[str, Any]:
    """quantize_static keyword arguments of a target (see the module docstring)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    if target == "tensorrt":
        return dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, reduce_range=False, extra_options=copy.deepcopy(TENSORRT_OPTIONS))
    return dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=True, reduce_range=_x86_without_vnni(), extra_options={})


def _reader(pairs: dict[str, np.ndarray], batch: int = CALIB_BATCH) -> CalibrationDataReader:
    """A CalibrationDataReader over `pairs`, in batches; `set_range` lets the calibrator reduce
    batch by batch (CalibStridedMinMax) instead of keeping every activation of every batch."""
    from onnxruntime.quantization import CalibrationDataReader

    feeds = batches(pairs, batch)

    class PairReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.start, self.end = 0, len(feeds)

        def __len__(self) -> int:
            return len(feeds)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end = start_index, min(end_index, len(feeds))

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= self.end:
                return None
            self.start += 1
            return feeds[self.start - 1]

    return PairReader()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantisation tools print progress and log warnings on the root logger: not ours to show."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantise_graph(source: Path, calib: dict[str, np.ndarray], *, target: str, method: str,
                   out: Path) -> tuple[onnx.ModelProto, list[str], dict[str, Any]]:
    """The Q/DQ model of the fp32 ONNX `source` calibrated on `calib` (arrays named as its
    inputs: the whole model's pairs, or one half's inputs), the nodes kept in float, and the
    settings used. `out` names the file in errors."""
    model, _, keep, settings = quantise_with(source, calib, target=target, method=method, out=out, exclude=float_nodes)
    return model, keep, settings


def quantise_with(source: Path, calib: dict[str, np.ndarray], *, target: str, method: str, out: Path,
                  exclude: Any, keep_activations: bool = False) -> tuple[onnx.ModelProto, onnx.ModelProto, list[str], dict[str, Any]]:
    """`quantise_graph` with the nodes to keep in float chosen by `exclude(pre_processed_model)`;
    also returns the pre-processed fp32 model (its node names are the Q/DQ model's).
    `keep_activations`: every ReLU stays a node (ORT otherwise drops a ReLU into the range of
    the Q after a Conv, and a Conv later kept in float would lose it)."""
    from onnxruntime.quantization import CalibrationMethod, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = quant_settings(target)
    settings["extra_options"]["CalibStridedMinMax"] = 1  # reduce per batch (any method)
    if keep_activations:
        settings["extra_options"]["QDQKeepRemovableActivations"] = True
    calibrate_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="toolkit-int8-") as tmp:
        pre, quantised = Path(tmp) / "pre.onnx", Path(tmp) / "quant.onnx"
        try:
            with _quiet():
                quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
                pre_model = onnx.load(str(pre))
                keep = exclude(pre_model)
                onnx.save(pre_model, str(pre))
                quantize_static(str(pre), str(quantised), _reader(calib), calibrate_method=calibrate_method,
                                nodes_to_exclude=keep, **settings)
        except (UserError, CheckFailed):
            raise
        except Exception as e:  # ORT's tools raise ValueError, RuntimeError, its own Fail, ...
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CheckFailed(f"{out}: not written: int8 quantisation failed ({first})") from e
        return onnx.load(str(quantised)), pre_model, keep, settings


