"""fp16 ONNX from the fp32 export: fp32 I/O, metadata, checker, parity vs fp32, overflow refused."""

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from export.fp16 import FP16_MAX, convert_fp16
from export.int8 import synthetic_pairs
from toolkit.core.errors import CheckFailed, MissingDependency
from toolkit.core.fsutil import sha256_file
from toolkit.core.install import install_hint
from toolkit.verify.compare import DEFAULT_THRESHOLDS, batches
from toolkit.verify.parity import run_parity

pytest.importorskip("onnxconverter_common")


@pytest.fixture(scope="module")
def feeds(tmp_path_factory):
    pairs = synthetic_pairs(tmp_path_factory.mktemp("pairs"), (128, 128), calib_pairs=8, gate_pairs=8)
    return batches(pairs.everything())


@pytest.fixture(scope="module")
def fp16_model(tmp_path_factory, exported_onnx, feeds):
    out = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    path, report = convert_fp16(exported_onnx, out, feeds)
    assert path == out and out.is_file()
    return out, report


def _io(model):
    return [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in [*model.graph.input, *model.graph.output]]


def test_io_stays_float32_with_the_same_names_and_shapes(fp16_model, exported_onnx):
    m16, m32 = onnx.load(str(fp16_model[0])), onnx.load(str(exported_onnx))
    assert _io(m16) == _io(m32)
    assert all(elem == TensorProto.FLOAT for _, elem, _ in _io(m16))
    assert [i.name for i in m16.graph.input] == ["bg", "fgbg"]
    assert [o.name for o in m16.graph.output] == ["mask", "depth"]


def test_weights_are_fp16_but_normalisation_decoding_and_resize_stay_fp32(fp16_model, exported_onnx):
    m16 = onnx.load(str(fp16_model[0]))
    onnx.checker.check_model(m16, full_check=True)
    inits = {i.name: i for i in m16.graph.initializer}
    conv_weights = [inits[n.input[1]] for n in m16.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.data_type == TensorProto.FLOAT16 for w in conv_weights)
    kept = set(fp16_model[1].kept_fp32)
    kept_nodes = [n for n in m16.graph.node if n.name in kept or n.op_type == "Resize"]
    assert {n.op_type for n in kept_nodes} >= {"Sub", "Div", "Mul", "Add", "Clip", "Resize"}  # found by structure
    # their constants (mean/std, scale/offset, clip bounds, Resize scales) keep their exact fp32 values
    originals = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(exported_onnx)).graph.initializer}
    checked = 0
    for node in kept_nodes:
        for name in node.input:
            if name in inits:
                assert inits[name].data_type == TensorProto.FLOAT, (node.name, name)
                np.testing.assert_array_equal(numpy_helper.to_array(inits[name]), originals[name.removesuffix("_fp32")])
                checked += 1
    assert checked >= 4 + 4 + 4  # 2 x (mean, std), 2 x (scale, offset, low, high), 4 Resize scales


def test_metadata_is_copied_with_the_precision_reset(fp16_model, exported_onnx, imported_ckpt):
    props = {p.key: p.value for p in onnx.load(str(fp16_model[0])).metadata_props}
    src = {p.key: p.value for p in onnx.load(str(exported_onnx)).metadata_props}
    assert props["toolkit.precision"] == "fp16"
    for key in ("toolkit.iospec", "toolkit.input_size", "toolkit.checkpoint_sha256", "toolkit.normalisation", "toolkit.decoding"):
        assert props[key] == src[key]
    assert props["toolkit.source_onnx_sha256"] == sha256_file(exported_onnx)
    assert (fp16_model[0].parent / props["toolkit.checkpoint_relpath"]).resolve() == imported_ckpt.resolve()
    assert "onnxconverter_common" in props["toolkit.fp16_converter"]
    assert "mask IoU" in props["toolkit.fp16_check"]


def test_parity_against_fp32_uses_the_fp16_thresholds(fp16_model, exported_onnx):
    report = run_parity([fp16_model[0]], reference=exported_onnx, limit=16, batch_size=8)
    result = report.results[0]
    assert result.precision == "fp16"
    assert result.thresholds == DEFAULT_THRESHOLDS["fp16"]
    assert result, result.failures
    assert result.mask_iou >= 0.99 and result.depth_rmse <= 0.01
    assert sum(result.nonfinite.values()) == 0


def test_overflow_is_refused_and_nothing_is_written(exported_onnx, feeds, tmp_path):
    # Scale the first convolution so its activations exceed the fp16 range (weights stay inside it).
    m = onnx.load(str(exported_onnx))
    inits = {i.name: i for i in m.graph.initializer}
    first_conv = next(n for n in m.graph.node if n.op_type == "Conv")
    w = numpy_helper.to_array(inits[first_conv.input[1]])
    factor = 0.5 * FP16_MAX / float(np.abs(w).max())
    inits[first_conv.input[1]].CopyFrom(numpy_helper.from_array((w * factor).astype(np.float32), first_conv.input[1]))
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    onnx.save(m, str(src))
    out = tmp_path / "out" / "model.fp16.onnx"
    with pytest.raises(CheckFailed, match="not written.*(overflow|NaN)"):
        convert_fp16(src, out, feeds)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_missing_converter_names_the_extra(exported_onnx, feeds, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    with pytest.raises(MissingDependency, match=re.escape(install_hint("train"))):
        convert_fp16(exported_onnx, tmp_path / "model.fp16.onnx", feeds)
    assert not (tmp_path / "model.fp16.onnx").exists()
