"""`toolkit parity --layers`: the first tensor over tolerance, and the first NaN, named by module."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import run_cli
from toolkit.core.errors import UserError
from toolkit.verify.layers import compare_layers, module_name


def _edit_conv(src, out, index, edit):
    """A copy of `src` with convolution number `index`'s weights changed; returns (path, the
    output of the first node that uses them: the two branches' stems share their weights)."""
    m = onnx.load(str(src))
    conv = [n for n in m.graph.node if n.op_type == "Conv"][index]
    for init in m.graph.initializer:
        if init.name == conv.input[1]:
            init.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(init).copy()), init.name))
    onnx.save(m, str(out))
    return out, next(n for n in m.graph.node if conv.input[1] in n.input).output[0]


def test_an_untouched_export_passes_against_its_checkpoint(trained_onnx):
    report = compare_layers(trained_onnx, limit=2)  # the checkpoint from the metadata, exported here
    assert report and report.first_over is None and report.first_nonfinite is None
    assert len(report.layers) > 60 and max(d.rel_error for d in report.layers) < 1e-5


def test_a_scaled_convolution_is_the_first_layer_named(trained_onnx, tmp_path):
    tampered, tensor = _edit_conv(trained_onnx, tmp_path / "tampered.onnx", 9, lambda w: w * 1.5)
    report = compare_layers(tampered, reference=trained_onnx.with_name("model.pt"), limit=2)
    first = report.first_over
    assert not report and first.tensor == tensor and first.op == "Conv"
    assert all(d.rel_error <= 1e-5 for d in report.layers if d.index < first.index)
    assert "convblock" in first.layer  # the module's name, not the exporter's node name


def test_the_first_nan_is_found_where_it_starts(trained_onnx, tmp_path):
    def poison(w):
        w.flat[0] = np.nan
        return w

    broken, tensor = _edit_conv(trained_onnx, tmp_path / "nan.onnx", 5, poison)
    report = compare_layers(broken, reference=trained_onnx, limit=1)
    assert report.first_nonfinite.tensor == tensor and report.first_nonfinite.nonfinite > 0


def test_the_cli_names_the_layer_writes_png_and_json_and_exits_1(trained_onnx, tmp_path):
    tampered, tensor = _edit_conv(trained_onnx, tmp_path / "tampered.onnx", 9, lambda w: w * 1.5)
    r = run_cli("parity", "--layers", "--model", str(tampered), "--reference", str(trained_onnx), "--limit", "2",
                "--png-dir", str(tmp_path / "png"), "--json", str(tmp_path / "l.json"))
    assert r.returncode == 1 and "first tensor over tolerance" in r.stdout, r.stderr
    doc = json.loads((tmp_path / "l.json").read_text())[0]
    first = next(d for d in doc["layers"] if d["tensor"] == tensor)
    assert doc["first_over"] == first["layer"] and doc["passed"] is False
    assert (tmp_path / "png" / "layers-tampered.png").stat().st_size > 5000


def test_layers_refuses_what_it_cannot_compare(trained_onnx, tmp_path):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(UserError, match="reads an ONNX graph"):
        compare_layers(engine)
    r = run_cli("parity", "--layers", "--golden", str(tmp_path), "--model", str(trained_onnx))
    assert r.returncode == 2 and "do not go with it" in r.stderr


def test_module_names_come_from_the_exporters_scopes():
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="node_Conv_7")
    assert module_name(node) == "node_Conv_7"
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'net', 'net.net.convblock4', 'net.net.convblock4.1', 'conv2d_9']")
    assert module_name(node) == "convblock4.1"


def test_a_gate_passing_int8_model_is_compared_as_its_layers_read_it(trained_onnx, tmp_path):
    """ONNX Runtime folds each ReLU after a Conv into the Q and names the Conv's output after the
    ReLU: compared before its Q it would look 100 % wrong; as the next layer reads it, it is not."""
    from export.int8 import Int8Options, quantize_int8, synthetic_pairs

    pairs = synthetic_pairs(tmp_path / "pairs", (64, 64), calib_pairs=8, gate_pairs=4)
    # The fixed rule's model passes its gate vs fp32 here, not its self-test on the golden pairs
    # (mask IoU ~0.95): --force writes it, and the layers it compares are the fixed rule's.
    int8, report = quantize_int8(trained_onnx, tmp_path / "model.int8.onnx", pairs, Int8Options(method="minmax", search="off", force=True))
    assert report.parity.failures and all(f.startswith("its self-test") for f in report.parity.failures)  # the gate vs fp32 passed
    layers = compare_layers(int8, limit=2)  # the fp32 model it was converted from, found by its metadata
    assert any("dequantised" in n for n in layers.notes)
    assert len(layers.layers) > 40 and max(d.rel_error for d in layers.layers) < 0.5, layers.first_over
