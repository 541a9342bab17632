"""int8 Q/DQ from the fp32 export: both targets' graph properties, metadata, the accuracy gate."""

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from export.graph import nodes_to_outputs
from export.int8 import CalibrationPairs, Int8Options, load_pairs, quantize_int8, synthetic_pairs
from export.int8.quantise import float_nodes
from toolkit.core.errors import CheckFailed, UserError
from toolkit.runtime.onnx_runner import OnnxRunner
from toolkit.verify.compare import DEFAULT_THRESHOLDS, Thresholds

CALIB, GATE = 16, 8


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> CalibrationPairs:
    return synthetic_pairs(tmp_path_factory.mktemp("pairs"), (128, 128), calib_pairs=CALIB, gate_pairs=GATE)


def _quantise(exported_onnx, out, pairs, **kw):
    # MinMax keeps the tests fast. The epoch-12 weights on synthetic pairs fail the real gate
    # (their fp32 masks are nearly empty, so IoU is fragile): graph-property tests use --force.
    kw.setdefault("method", "minmax")
    kw.setdefault("search", "off")  # the search has its own tests (test_search.py)
    return quantize_int8(exported_onnx, out, pairs, Int8Options(**kw))


@pytest.fixture(scope="module")
def cpu_model(tmp_path_factory, exported_onnx, pairs):
    return _quantise(exported_onnx, tmp_path_factory.mktemp("cpu") / "model.int8.onnx", pairs, target="cpu", force=True)


@pytest.fixture(scope="module")
def trt_model(tmp_path_factory, exported_onnx, pairs):
    return _quantise(exported_onnx, tmp_path_factory.mktemp("trt") / "model.int8.onnx", pairs, target="tensorrt", force=True)


def _zero_points(model):
    inits = {i.name: i for i in model.graph.initializer}
    zps = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zps.append((node, inits[node.input[2]]))
    return zps


def test_pairs_are_split_by_background(pairs, tmp_path):
    assert pairs.calib_count == CALIB and pairs.gate_count == GATE
    assert pairs.calib["bg"].shape == (CALIB, 3, 128, 128) and pairs.calib["bg"].dtype == np.float32
    # the gate's backgrounds are not among the calibration ones
    calib_bgs = {arr.tobytes() for arr in pairs.calib["bg"]}
    assert not calib_bgs & {arr.tobytes() for arr in pairs.gate["bg"]}


def test_cpu_target_is_qdq_u8s8_with_io_and_metadata(cpu_model, pairs):
    path, report = cpu_model
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    activation_zps = [zp for node, zp in _zero_points(m) if node.op_type == "QuantizeLinear"]
    assert activation_zps and all(zp.data_type == TensorProto.UINT8 for zp in activation_zps)  # uint8 activations
    weight_zps = [zp for node, zp in _zero_points(m) if node.op_type == "DequantizeLinear" and zp.data_type == TensorProto.INT8]
    assert weight_zps and all(not numpy_helper.to_array(zp).any() for zp in weight_zps)  # int8 symmetric weights
    # same I/O as fp32
    with OnnxRunner(path) as r:
        out = r.infer({k: v[:2] for k, v in pairs.gate.items()})
    assert {k: (v.dtype, v.shape) for k, v in out.items()} == {k: (np.float32, (2, 1, 128, 128)) for k in ("mask", "depth")}
    assert [i.name for i in m.graph.input] == ["bg", "fgbg"]
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in [*m.graph.input, *m.graph.output])
    props = {p.key: p.value for p in m.metadata_props}
    assert props["toolkit.precision"] == "int8"
    assert props["toolkit.int8_target"] == "cpu"
    assert props["toolkit.calibration_method"] == "minmax"
    assert props["toolkit.calibration_pairs"] == str(CALIB)
    assert props["toolkit.calibration_data"] == "synthetic"
    assert "mask IoU" in props["toolkit.int8_gate"]
    assert report.gate_pairs == GATE and report.calib_pairs == CALIB


def test_sensitive_nodes_stay_float_found_by_structure(cpu_model):
    m = onnx.load(str(cpu_model[0]))
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]

    def float_weight(conv):
        return conv.input[1] in inits and inits[conv.input[1]].data_type == TensorProto.FLOAT

    by_name = {n.name: n for n in m.graph.node}
    _, last = nodes_to_outputs(m.graph, {"Conv"})  # the last convolution before each output
    final = [by_name[name] for name in last]
    assert len(final) == 2 and all(float_weight(c) for c in final)  # 1 output (x 4 phases in the folded graph)
    assert all(inits[c.input[1]].dims[0] == 4 for c in final)
    first = [c for c in convs if producer.get(c.input[0]) is not None and producer[c.input[0]].op_type == "Div"]
    assert len(first) == 2 and all(float_weight(c) for c in first)  # the first convolutions, fed by the normalisation
    quantised = [c for c in convs if producer.get(c.input[1]) is not None and producer[c.input[1]].op_type == "DequantizeLinear"]
    assert len(quantised) > len(convs) // 2


def test_float_nodes_do_not_depend_on_node_names(exported_onnx):
    named = onnx.load(str(exported_onnx))
    renamed = onnx.load(str(exported_onnx))
    for i, node in enumerate(renamed.graph.node):
        node.name = "" if i % 2 else f"x{i}"  # unnamed and arbitrary names alike

    def picked(model):
        names = set(float_nodes(model))
        return sorted(i for i, n in enumerate(model.graph.node) if n.name in names)

    assert picked(named) == picked(renamed)
    kinds = sorted(named.graph.node[i].op_type for i in picked(named))
    assert kinds.count("Conv") >= 2 + 2 + 2 and "Clip" in kinds and "Resize" not in kinds


def test_tensorrt_target_has_only_int8_zero_points_of_zero(trt_model):
    path, report = trt_model
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    zps = _zero_points(m)
    assert zps
    for node, zp in zps:
        assert zp.data_type == TensorProto.INT8, node.name
        assert not numpy_helper.to_array(zp).any(), node.name
    # weights keep a Q -> DQ pair (AddQDQPairToWeight); biases are not quantised (no int32 DQ)
    inits = {i.name for i in m.graph.initializer}
    assert any(n.op_type == "QuantizeLinear" and n.input[0] in inits for n in m.graph.node)
    assert not any(i.data_type == TensorProto.INT32 for i in m.graph.initializer)
    props = {p.key: p.value for p in m.metadata_props}
    assert props["toolkit.int8_target"] == "tensorrt" and props["toolkit.precision"] == "int8"


def test_tensorrt_target_quantises_conv_inputs_only_not_between_a_conv_and_its_relu(trt_model):
    """TensorRT's explicit quantisation: Q/DQ on the inputs of weighted layers; Conv -> ReLU stays
    one fusable pair (no QuantizeLinear on a Conv's output)."""
    m = onnx.load(str(trt_model[0]))
    producer = {o: n for n in m.graph.node for o in n.output}
    consumers = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    quantised = [c for c in convs if producer.get(c.input[1]) is not None and producer[c.input[1]].op_type == "DequantizeLinear"]
    assert len(quantised) >= 10  # the trunk and branches are quantised (the first convs and heads stay float)
    def through_qdq(name):  # what a tensor reaches through a Q -> DQ pair
        return [c for q in consumers.get(name, []) if q.op_type == "QuantizeLinear"
                for dq in consumers.get(q.output[0], []) if dq.op_type == "DequantizeLinear" for c in consumers.get(dq.output[0], [])]

    for conv in quantised:
        data = producer.get(conv.input[0])
        assert data is not None and data.op_type == "DequantizeLinear", conv.name  # its input: a Q/DQ pair
        assert not any(c.op_type == "Relu" for c in through_qdq(conv.output[0])), conv.name  # Conv -> Q -> DQ -> ReLU
    assert any(c.op_type == "Relu" for conv in quantised for c in consumers.get(conv.output[0], []))  # Conv -> ReLU directly


def _miscalibrated(pairs):
    """A deliberately broken calibration: pixel values 0..255 instead of 0..1 (ranges ~100x too wide)."""
    return dataclasses.replace(pairs, calib={k: v * 255 for k, v in pairs.calib.items()})


def test_gate_refuses_a_broken_quantisation_and_writes_nothing(exported_onnx, pairs, tmp_path):
    out = tmp_path / "model.int8.onnx"
    with pytest.raises(CheckFailed, match=r"not written.*accuracy gate.*depth RMSE 0\.\d+ > 0\.02") as e:
        _quantise(exported_onnx, out, _miscalibrated(pairs))
    assert e.value.exit_code == 1
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_force_writes_a_gate_failure_with_a_warning(exported_onnx, pairs, tmp_path):
    out = tmp_path / "model.int8.onnx"
    path, report = _quantise(exported_onnx, out, _miscalibrated(pairs), force=True)
    assert path == out and out.is_file()
    assert report.forced and not report.passed
    assert report.parity.depth_rmse > DEFAULT_THRESHOLDS["int8"].depth_rmse
    assert any("warning" in n and "--force" in n for n in report.notes)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "FAILED" in props["toolkit.int8_gate"]


def test_a_gate_loosened_past_the_self_test_writes_nothing(exported_onnx, pairs, tmp_path):
    """One verdict: a model its own self-test (what serve, stream and doctor run on it) would
    refuse is not written, however loose the gate it passed."""
    loose = Thresholds(mask_iou=0.0, depth_rmse=0.05)
    with pytest.raises(CheckFailed) as e:
        _quantise(exported_onnx, tmp_path / "model.int8.onnx", pairs, thresholds=loose)
    line = str(e.value)
    assert "not written" in line and "its self-test (what serve, stream and doctor run) fails on its golden pairs: mask IoU" in line
    assert "\n" not in line and list(tmp_path.iterdir()) == []


def test_int8_is_quantised_from_the_fp32_model_only(cpu_model, pairs, tmp_path):
    with pytest.raises(UserError, match="fp32 export"):
        quantize_int8(cpu_model[0], tmp_path / "m.onnx", pairs)


def test_a_single_background_cannot_hold_out_a_gate_set(tmp_path):
    from toolkit.data.synth import synthesize

    synthesize(tmp_path / "one", backgrounds=1, foregrounds=2, placements=1, size=64)
    with pytest.raises(UserError, match="2 backgrounds"):
        load_pairs(tmp_path / "one", (64, 64))


def test_lines_name_the_data_set_quoted(tmp_path):
    """A calibration folder called `data` read "(data data)" in the export's lines."""
    from toolkit.data.synth import synthesize

    synthesize(tmp_path / "data", backgrounds=2, foregrounds=1, placements=1, size=32)
    pairs = load_pairs(tmp_path / "data", (32, 32), calib_pairs=1, gate_pairs=1)
    assert pairs.described == "data set 'data'"
    assert synthetic_pairs(tmp_path / "s", (32, 32), calib_pairs=1, gate_pairs=1).described == "synthetic data"
