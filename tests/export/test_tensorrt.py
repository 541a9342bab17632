"""Engine building: argument and source checks and the sidecar run everywhere (no TensorRT
needed); the build itself only where TensorRT and a GPU are installed."""

from __future__ import annotations

import json
import os
import re

import pytest

from export.tensorrt import (
    build_engine,
    check_source,
    make_sidecar,
    read_onnx_source,
    trt_major,
    validate_build_args,
)
from toolkit.core.errors import MissingDependency, UserError
from toolkit.core.fsutil import sha256_file
from toolkit.core.install import install_hint
from toolkit.core.spec import IOSpec
from toolkit.runtime.tensorrt_runner import load_sidecar, sidecar_path


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precision": "bf16"}, "precision must be one of fp32, fp16, int8"),
        ({"precision": "fp32", "batch": (0, 1, 1)}, "1 <= min <= opt <= max"),
        ({"precision": "fp32", "batch": (8, 1, 32)}, "min=8 opt=1 max=32"),
        ({"precision": "fp32", "batch": (1, 8, 4)}, "min=1 opt=8 max=4"),
        ({"precision": "fp32", "batch": (1, 8)}, "must be min,opt,max"),
        ({"precision": "fp32", "workspace_mb": 0}, "workspace must be a positive"),
    ],
)
def test_arguments_are_checked_before_tensorrt_is_imported(tmp_path, exported_onnx, kwargs, match):
    with pytest.raises(UserError, match=match) as e:
        build_engine(exported_onnx, tmp_path / "m.engine", **kwargs)
    assert not isinstance(e.value, MissingDependency)
    assert not (tmp_path / "m.engine").exists()


def test_validate_build_args_returns_the_profile():
    assert validate_build_args("int8", (1, 8, 32), 1024).as_tuple() == (1, 8, 32)
    assert validate_build_args("fp16", [4, 4, 4], 1).as_tuple() == (4, 4, 4)


def test_missing_onnx_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such ONNX file"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.engine", precision="fp32")


def test_read_onnx_source(exported_onnx):
    src = read_onnx_source(exported_onnx)
    assert src.spec.size == (128, 128)
    assert src.fixed_batch is None and not src.has_qdq
    assert src.metadata["toolkit.precision"] == "fp32"


def test_source_must_be_of_the_asked_precision(exported_onnx):
    src = read_onnx_source(exported_onnx)
    check_source(src, "fp32", (1, 8, 32))
    with pytest.raises(UserError, match="is an fp32 model, not fp16.*from the fp16 export"):
        check_source(src, "fp16", (1, 8, 32))
    unlabelled = src.__class__(src.path, src.spec, {}, None, False)
    with pytest.raises(UserError, match="no QuantizeLinear/DequantizeLinear nodes"):
        check_source(unlabelled, "int8", (1, 8, 32))
    check_source(src.__class__(src.path, src.spec, {}, None, True), "int8", (1, 8, 32))


def _model(path, batch="N", size=8, props=None, op="ReduceMean", domain=""):
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 3, size, size]) for n in ("bg", "fgbg")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 1, size, size]) for n in ("mask", "depth")]
    kw = {"axes": [1], "keepdims": 1} if op == "ReduceMean" else {}
    nodes = [helper.make_node(op, [i], [o], domain=domain, **kw) for i, o in (("bg", "mask"), ("fgbg", "depth"))]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=opsets)
    helper.set_model_props(m, props if props is not None else IOSpec().with_size(size).to_metadata())
    onnx.save(m, path)
    return path


def test_fixed_batch_needs_a_matching_profile(tmp_path):
    src = read_onnx_source(_model(tmp_path / "fixed.onnx", batch=4))
    assert src.fixed_batch == 4
    check_source(src, "fp32", (4, 4, 4))
    with pytest.raises(UserError, match="batch is fixed at 4, so the profile must be 4,4,4"):
        check_source(src, "fp32", (1, 8, 32))


def test_foreign_or_inconsistent_onnx_is_refused(tmp_path):
    with pytest.raises(UserError, match="no toolkit I/O spec"):
        read_onnx_source(_model(tmp_path / "plain.onnx", props={}))
    with pytest.raises(UserError, match="metadata says 64x64 but the graph takes 8x8"):
        read_onnx_source(_model(tmp_path / "lying.onnx", props=IOSpec().with_size(64).to_metadata()))
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        read_onnx_source(tmp_path / "junk.onnx")


def test_trt_major():
    assert trt_major("10.13.0.35") == 10
    assert trt_major("11.1.0") == 11
    assert trt_major("weird") == 0


def test_sidecar_records_everything_and_reanchors_the_checkpoint(tmp_path, exported_onnx, imported_ckpt):
    engine = tmp_path / "engines" / "model.fp32.engine"
    engine.parent.mkdir()
    src = read_onnx_source(exported_onnx)
    side = make_sidecar(
        engine=engine, plan_sha256="ab" * 32, source=src, precision="fp32", batch=(1, 8, 32), trt_version="10.13.0.35",
        gpu_name="NVIDIA L4", compute_capability="8.9", checkpoint_sha256="", build_seconds=12.3456,
        built_at="2026-01-01T00:00:00+00:00",
    )
    assert side["tensorrt_version"] == "10.13.0.35"
    assert (side["gpu_name"], side["compute_capability"]) == ("NVIDIA L4", "8.9")
    assert side["input_size"] == [128, 128] and IOSpec.from_dict(side["iospec"]) == src.spec
    assert side["precision"] == "fp32" and side["batch_profile"] == {"min": 1, "opt": 8, "max": 32}
    assert side["source_onnx"] == exported_onnx.name and side["source_onnx_sha256"] == sha256_file(exported_onnx)
    assert side["checkpoint_sha256"] == sha256_file(imported_ckpt)  # from the ONNX metadata when not given
    assert side["toolkit_version"] and side["built_at"] == "2026-01-01T00:00:00+00:00" and side["build_seconds"] == 12.346
    rel = side["metadata"]["toolkit.checkpoint_relpath"]
    assert os.path.samefile(engine.parent / rel, imported_ckpt)
    assert make_sidecar(
        engine=engine, plan_sha256="", source=src, precision="fp32", batch=(1, 8, 32), trt_version="x",
        gpu_name="g", compute_capability="c", checkpoint_sha256="given", build_seconds=0,
    )["checkpoint_sha256"] == "given"
    sidecar_path(engine).write_text(json.dumps(side))
    assert load_sidecar(engine)["engine_sha256"] == "ab" * 32  # what the runner reads back
    assert (side["compat"], side["tf32"], side["dla_core"]) == ("none", False, None)  # fp32 means fp32: TF32 cleared
    half = make_sidecar(engine=engine, plan_sha256="", source=src, precision="fp16", batch=(1, 8, 32), trt_version="x",
                        gpu_name="g", compute_capability="c", checkpoint_sha256="", build_seconds=0)
    assert half["tf32"] is True  # TF32 stays on (TensorRT's default) in an fp16 engine's float layers: the sidecar says so


def test_without_tensorrt_the_extra_is_named(tmp_path, exported_onnx):
    if _has_tensorrt():
        pytest.skip("TensorRT is installed: the missing-extra message does not apply")
    with pytest.raises(MissingDependency, match=re.escape(f"TensorRT (needed for --engine) is not installed: {install_hint('gpu')}")):
        build_engine(exported_onnx, tmp_path / "m.engine", precision="fp32")
    assert not (tmp_path / "m.engine").exists()


# ---- below: real builds (TensorRT + a GPU) ---------------------------------------------------


def test_build_fp32_engine_with_timing_cache(tmp_path, exported_onnx):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU extra)")
    cache = tmp_path / "timing.cache"
    report = build_engine(exported_onnx, tmp_path / "model.engine", precision="fp32", batch=(1, 2, 4), workspace_mb=256, timing_cache=cache)
    assert report.engine.stat().st_size == report.size_bytes > 0
    assert cache.is_file() and cache.stat().st_size > 0
    side = load_sidecar(report.engine)
    assert side["engine_sha256"] == sha256_file(report.engine)
    assert side["batch_profile"] == {"min": 1, "opt": 2, "max": 4}
    again = build_engine(exported_onnx, tmp_path / "model2.engine", precision="fp32", batch=(1, 2, 4), workspace_mb=256, timing_cache=cache)
    assert not again.notes  # the cache written by the first build was accepted


def test_parser_error_is_one_line(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU extra)")
    bad = _model(tmp_path / "custom.onnx", op="NoSuchOp", domain="com.example")
    with pytest.raises(UserError, match="TensorRT could not parse the model") as e:
        build_engine(bad, tmp_path / "m.engine", precision="fp32")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.parametrize("part, inputs, outputs", [("bg", ["bg"], ["bg_features"]), ("frame", ["bg_features", "fgbg"], ["mask", "depth"])])
def test_a_fixed_camera_half_gets_its_own_io_in_the_sidecar(tmp_path, exported_halves, part, inputs, outputs):
    from toolkit.runtime.fixed import half_paths

    half = half_paths(exported_halves)[0 if part == "bg" else 1]
    source = read_onnx_source(half)
    assert source.interface.part == part and list(source.interface.inputs) == inputs
    engine = tmp_path / f"model.fp32.{part}.engine"
    side = make_sidecar(engine=engine, plan_sha256="ab" * 32, source=source, precision="fp32", batch=(1, 8, 32),
                        trt_version="10.13.0.35", gpu_name="NVIDIA L4", compute_capability="8.9", checkpoint_sha256="",
                        build_seconds=1.0)
    assert (side["inputs"], side["outputs"]) == (inputs, outputs) and side["metadata"]["toolkit.split"] == part
    sidecar_path(engine).write_text(json.dumps(side))
    assert load_sidecar(engine)["inputs"] == inputs  # read back as the half's interface, not the whole model's
    sidecar_path(engine).write_text(json.dumps(side | {"inputs": ["bg", "fgbg"]}))
    with pytest.raises(UserError, match=re.escape(f"expected {inputs} -> {outputs}")):
        load_sidecar(engine)


def test_portability_flags_need_engine():
    from export.options import ExportOptions

    with pytest.raises(UserError, match="--engine-compat.*--engine"):
        ExportOptions.from_given(engine_compat="version")
    with pytest.raises(UserError, match="--dla-core.*--engine"):
        ExportOptions.from_given(dla_core=0)
    assert ExportOptions(engine=True, fp16=True, dla_core=0, engine_compat="none").dla_core == 0
