"""The int8 search (export/int8_search.py): a gate miss finds the layers to keep in float by itself."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from export.int8 import quantize_int8, synthetic_pairs
from export.int8_search import keep_in_float, layers_of, name_all
from export.options import ExportOptions
from export.quantise import quantise_with
from toolkit.compare import Thresholds, check_model
from toolkit.errors import CheckFailed, UserError
from toolkit.runtime import open_runner

SIZE = (64, 64)  # the epoch-12 network at 64 px: a quarter of the arithmetic, the same layers
STRICT = Thresholds(mask_iou=0.97, depth_rmse=0.008)  # what the fixed rule misses here (it reaches ~0.012)


@pytest.fixture(scope="module")
def small(tmp_path_factory, imported_ckpt):
    from export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("search")
    export_onnx(imported_ckpt, folder / "model.onnx", size=SIZE)
    pairs = synthetic_pairs(folder, SIZE, calib_pairs=16, gate_pairs=8)
    return folder / "model.onnx", pairs


def _outputs(model: onnx.ModelProto, feed, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_keeping_every_layer_in_float_gives_back_the_fp32_model(small, tmp_path):
    source, pairs = small
    qdq, pre, keep, _ = quantise_with(source, pairs.calib, target="cpu", method="minmax", out=source, exclude=name_all,
                                      keep_activations=True)
    layers = layers_of(qdq)
    assert keep == [] and len(layers) > 50
    feed = {k: v[:2] for k, v in pairs.gate.items()}
    fp32 = _outputs(onnx.load(str(source)), feed, tmp_path)
    quantised = _outputs(qdq, feed, tmp_path)
    floated = _outputs(keep_in_float(qdq, pre, set(layers)), feed, tmp_path)
    assert max(float(np.abs(a - b).max()) for a, b in zip(floated, fp32)) < 5e-3  # only the output's own Q/DQ remains
    assert max(float(np.abs(a - b).max()) for a, b in zip(quantised, fp32)) > 2e-2
    assert len(keep_in_float(qdq, pre, set()).graph.node) == len(qdq.graph.node)


def test_a_gate_miss_is_searched_and_the_file_records_its_float_layers(small, tmp_path):
    source, pairs = small
    out = tmp_path / "model.int8.onnx"
    path, report = quantize_int8(source, out, pairs, method="minmax", thresholds=STRICT, budget_s=120)
    found = report.search
    assert report.passed and not report.forced and found is not None and found.passed
    assert 0 < len(found.float_layers) < found.layer_count and found.speedup > 1.0
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    record = json.loads(props["toolkit.int8_search"])
    assert record["layers"] == found.layer_count and len(record["float_layers"]) == len(found.float_layers)
    assert props["toolkit.int8_float_nodes"].split(",") == found.float_layers
    assert "int8 search:" in report.summary() and "kept in float" in report.summary()
    again = check_model(source, path, [{k: v for k, v in pairs.gate.items()}], STRICT)  # the file as written passes
    assert again, again.failures
    runner = open_runner(path)
    assert runner.precision == "int8"


def test_a_search_that_cannot_pass_fails_in_one_line_with_its_best_figures(small, tmp_path):
    source, pairs = small
    impossible = Thresholds(mask_iou=1.0, depth_rmse=1e-6)
    with pytest.raises(CheckFailed, match=r"int8 search found no passing model \(the time budget \(1 s\) ran out.*best: mask IoU") as e:
        quantize_int8(source, tmp_path / "model.int8.onnx", pairs, method="minmax", thresholds=impossible, budget_s=1)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []


def test_search_off_refuses_as_before(small, tmp_path):
    source, pairs = small
    with pytest.raises(CheckFailed, match="accuracy gate") as e:
        quantize_int8(source, tmp_path / "model.int8.onnx", pairs, method="minmax", thresholds=STRICT, search="off")
    assert "int8 search" not in str(e.value)


def test_the_tensorrt_target_is_searched_without_timing(small, tmp_path):
    source, pairs = small
    path, report = quantize_int8(source, tmp_path / "model.int8.onnx", pairs, target="tensorrt", method="minmax",
                                 thresholds=STRICT, budget_s=120)
    assert report.search.passed and report.search.speedup == 0.0  # TensorRT's speed is measured on the GPU, not here
    zero_points = [numpy_zero for numpy_zero in _zero_points(onnx.load(str(path)))]
    assert zero_points and all(z == 0 for z in zero_points)


def _zero_points(model):
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            yield from numpy_helper.to_array(inits[node.input[2]]).ravel().tolist()


@pytest.mark.parametrize("kw, says", [
    ({"int8": True, "int8_search": "maybe"}, "--int8-search must be one of auto, off"),
    ({"int8": True, "search_budget_s": 0}, "--int8-search-budget must be in"),
    ({"int8": True, "search_budget_s": float("nan")}, "--int8-search-budget must be in"),
])
def test_search_options_are_checked(kw, says):
    with pytest.raises(UserError, match=says):
        ExportOptions(**kw)


def test_search_flags_need_int8():
    with pytest.raises(UserError, match="--int8-search.*--int8"):
        ExportOptions.from_given(int8_search="off")


def test_the_frame_half_finds_the_whole_models_layers_by_structure(exported_pair):
    from export.graph import nodes_to_outputs, structural_keys

    whole = onnx.load(str(exported_pair))
    frame = onnx.load(str(exported_pair.with_name("model.frame.onnx")))
    wk, fk = structural_keys(whole.graph), structural_keys(frame.graph)
    _, final_convs = nodes_to_outputs(whole.graph, {"Conv"})
    _, frame_final = nodes_to_outputs(frame.graph, {"Conv"})
    by_key = {v: k for k, v in fk.items()}
    assert sorted(by_key[wk[n]] for n in final_convs) == sorted(frame_final)  # the heads, whatever their names
    assert len(set(wk.values())) == len(wk)  # unique within a graph
