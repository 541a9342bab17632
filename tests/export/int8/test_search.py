"""The int8 search (export/int8/search.py): a gate miss finds the layers to keep in float by itself."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from export.int8 import Int8Options, quantize_int8, synthetic_pairs
from export.int8.quantise import quantise_with
from export.int8.search import keep_in_float, layers_of, name_all
from export.options import ExportOptions
from toolkit.core.errors import CheckFailed, UserError
from toolkit.runtime import open_runner
from toolkit.verify.compare import Thresholds, check_model

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


def test_a_passing_gate_writes_what_its_self_test_passes(small, tmp_path):
    """The gate as such, and one verdict: the file is written, not forced, and the self-test
    serve and doctor run passes on it, naming the figures that decided it."""
    from toolkit.verify.selftest import check_self_test

    source, pairs = small
    path, report = quantize_int8(source, tmp_path / "model.int8.onnx", pairs, Int8Options(method="minmax", search="off"))
    assert path.is_file() and report.passed and not report.forced and report.search is None
    assert "self-test passed on its golden pairs: mask IoU" in report.summary() and "gate passed: mask IoU" in report.summary()
    gate = {p.key: p.value for p in onnx.load(str(path)).metadata_props}["toolkit.int8_gate"]
    assert gate.endswith(": passed") and "self-test passed" in gate
    with open_runner(path) as runner:
        assert check_self_test(runner).startswith("self-test passed on model.int8.onnx (onnxruntime): mask IoU ")


def test_a_gate_miss_is_searched_and_the_file_records_its_float_layers(small, tmp_path):
    source, pairs = small
    out = tmp_path / "model.int8.onnx"
    # min_speedup 0: the test never depends on how fast this machine is now (CI shares its cores);
    # the speed is still measured and reported (benchmarks/int8_search.py makes the speed claims)
    path, report = quantize_int8(source, out, pairs, Int8Options(method="minmax", thresholds=STRICT, budget_s=120, min_speedup=0))
    found = report.search
    assert report.passed and not report.forced and found is not None and found.passed
    assert 0 < len(found.float_layers) < found.layer_count and found.speedup > 0
    assert f"{found.speedup:.2f}x fp32" in report.summary()
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    record = json.loads(props["toolkit.int8_search"])
    assert record["layers"] == found.layer_count and len(record["float_layers"]) == len(found.float_layers)
    assert props["toolkit.int8_float_nodes"].split(",") == found.in_effect == record["in_float_in_effect"]
    assert set(found.float_layers) <= set(found.in_effect)  # the chosen ones, and any neighbour left computing in float
    assert "int8 search:" in report.summary() and "kept in float" in report.summary()
    again = check_model(source, path, [{k: v for k, v in pairs.gate.items()}], STRICT)  # the file as written passes
    assert again, again.failures
    runner = open_runner(path)
    assert runner.precision == "int8"


def test_a_search_that_cannot_pass_fails_in_one_line_with_its_best_figures(small, tmp_path):
    source, pairs = small
    impossible = Thresholds(mask_iou=1.0, depth_rmse=1e-6)
    with pytest.raises(CheckFailed, match=r"int8 search found no passing model \(the time budget \(1 s\) ran out.*best: mask IoU") as e:
        quantize_int8(source, tmp_path / "model.int8.onnx", pairs, Int8Options(method="minmax", thresholds=impossible, budget_s=1))
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []


def test_search_off_refuses_as_before(small, tmp_path):
    source, pairs = small
    with pytest.raises(CheckFailed, match="accuracy gate") as e:
        quantize_int8(source, tmp_path / "model.int8.onnx", pairs, Int8Options(method="minmax", thresholds=STRICT, search="off"))
    assert "int8 search" not in str(e.value)


def test_the_tensorrt_target_is_searched_without_timing(small, tmp_path, monkeypatch):
    import export.int8.search

    def timed(*_):
        raise AssertionError("a TensorRT-target model was timed on the CPU")

    monkeypatch.setattr(export.int8.search._Judge, "speedup", timed)
    source, pairs = small
    # --force: whether a model passes here depends on the golden pairs' tiny masks at 64 px; what
    # is tested is that the search ran, untimed, and that every zero point of what it wrote is 0
    path, report = quantize_int8(source, tmp_path / "model.int8.onnx", pairs,
                                 Int8Options(target="tensorrt", method="minmax", thresholds=STRICT, budget_s=120, force=True))
    assert report.search is not None and report.search.evaluated > 1  # TensorRT's speed is measured on the GPU, not here
    zero_points = [numpy_zero for numpy_zero in _zero_points(onnx.load(str(path)))]
    assert zero_points and all(z == 0 for z in zero_points)


def _zero_points(model):
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            yield from numpy_helper.to_array(inits[node.input[2]]).ravel().tolist()


def test_search_flags_need_int8():
    with pytest.raises(UserError, match="--int8-search.*--int8"):
        ExportOptions.from_given(int8_search="off")


def test_the_frame_half_finds_the_whole_models_layers_by_structure(exported_halves):
    from export.graph import nodes_to_outputs, structural_keys

    whole = onnx.load(str(exported_halves))
    frame = onnx.load(str(exported_halves.with_name("model.frame.onnx")))
    wk, fk = structural_keys(whole.graph), structural_keys(frame.graph)
    _, final_convs = nodes_to_outputs(whole.graph, {"Conv"})
    _, frame_final = nodes_to_outputs(frame.graph, {"Conv"})
    by_key = {v: k for k, v in fk.items()}
    assert sorted(by_key[wk[n]] for n in final_convs) == sorted(frame_final)  # the heads, whatever their names
    assert len(set(wk.values())) == len(wk)  # unique within a graph


def test_what_runs_in_float_is_said_whole(small):
    """A float layer reads its neighbour's float output; a weighted neighbour whose every reader
    is float then loses its output Q (no QLinearConv): it runs in float too, and is named."""
    from export.int8.search import float_in_effect

    source, pairs = small
    qdq, pre, _, _ = quantise_with(source, pairs.calib, target="cpu", method="minmax", out=source, exclude=name_all,
                                   keep_activations=True)
    layers = layers_of(qdq)
    producer = {o: n for n in qdq.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in qdq.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1

    def made_by(node):  # the layer behind input 0 of `node`, through its DQ and Q
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        return producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None

    relu = next(n for n in qdq.graph.node if n.op_type == "Relu" and made_by(n) is not None and made_by(n).op_type == "Conv"
                and readers[made_by(n).output[0]] == 1)
    conv = made_by(relu)
    before = set(float_in_effect(qdq, layers))
    after = set(float_in_effect(keep_in_float(qdq, pre, {relu.name}), layers))
    assert conv.name not in before and {relu.name, conv.name} <= after
    assert len(after - before) == 2  # nothing else changed


def test_the_halves_find_the_stems_and_heads_by_their_weights(exported_halves, tmp_path):
    """What int8_halves matches on: the pre-processed graphs (ONNX Runtime folds the whole model's
    BatchNorms into its convolutions; the halves were exported folded)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from export.graph import nodes_from_inputs, nodes_to_outputs, same_layers, weights_of

    def pre(path):
        out = tmp_path / f"pre-{path.name}"
        quant_pre_process(str(path), str(out), skip_symbolic_shape=True)
        return onnx.load(str(out))

    whole = pre(exported_halves)
    bg, frame = (pre(exported_halves.with_name(f"model.{p}.onnx")) for p in ("bg", "frame"))
    _, stems = nodes_from_inputs(whole.graph, {"Conv"}, only=("bg", "fgbg"))
    _, heads = nodes_to_outputs(whole.graph, {"Conv"})
    weights = weights_of(whole.graph)
    assert stems and heads
    assert same_layers(bg.graph, [weights[n] for n in stems], set())  # the bg half's stem
    assert len(same_layers(frame.graph, [weights[n] for n in stems + heads], set())) >= len(heads) + 1
    assert not same_layers(bg.graph, [weights[n] for n in heads], set())  # no head in the bg half


def test_a_searched_models_halves_keep_the_same_layers_and_more_until_they_pass(tmp_path, imported_ckpt):
    from export.fixed_camera import export_halves
    from export.int8.halves import int8_halves
    from export.onnx import export_onnx
    from toolkit.runtime.fixed import open_fixed_camera

    model = tmp_path / "model.onnx"
    export_onnx(imported_ckpt, model, size=SIZE)
    export_halves(imported_ckpt, model)
    pairs = synthetic_pairs(tmp_path, SIZE, calib_pairs=16, gate_pairs=8)
    out, report = quantize_int8(model, tmp_path / "model.int8.onnx", pairs,
                                Int8Options(method="minmax", thresholds=STRICT, budget_s=120, min_speedup=0))
    assert report.search.passed and report.search.layer_refs
    weights, keys = report.search.refs(3)
    assert len(weights) + len(keys) >= len(report.search.float_layers) + 1  # the next layers by harm, as the halves need them
    bg, frame, check = int8_halves(model, report, pairs)
    assert bg.is_file() and frame.is_file() and check.pairs == 8
    runner = open_fixed_camera(out)
    assert runner.precision == "int8" and type(runner).__name__ == "HalvesRunner"
