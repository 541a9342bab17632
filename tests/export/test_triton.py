"""Triton model repository: the layout, and config.pbtxt checked against the ONNX model's I/O.

Where `tritonclient` is importable, config.pbtxt is parsed as Triton's own `inference.ModelConfig`
(protobuf text format); elsewhere those tests skip and the always-run checks read the text and
compare it with the model's I/O as ONNX Runtime reports it. (tritonclient is not in the dev
extra: it pins ml-dtypes<=0.5.4 while onnx here needs >=0.5.4 and the venv has 0.6.)
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from export.triton import check_max_batch, config_pbtxt, onnx_io, write_triton_repo
from toolkit.core.errors import UserError


@functools.cache
def _model_config_module():
    """tritonclient's generated model_config_pb2, without needing its grpc extra installed."""
    try:
        from tritonclient.grpc import model_config_pb2

        return model_config_pb2
    except Exception:  # no tritonclient, or tritonclient without grpcio
        pass
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location("toolkit_test_model_config_pb2", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def _parse(text: str):
    pb2 = _model_config_module()
    if pb2 is None:
        pytest.skip("tritonclient is not installed: config.pbtxt not parsed as Triton's ModelConfig (pip install tritonclient)")
    from google.protobuf import text_format

    return pb2, text_format.Parse(text, pb2.ModelConfig())


def _ort_io(onnx_path):
    """The model's I/O as ONNX Runtime sees it: name -> (type, dims without batch)."""
    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return {v.name: (v.type, list(v.shape[1:])) for v in [*s.get_inputs(), *s.get_outputs()]}


def test_repository_layout(tmp_path, exported_onnx):
    model_dir = write_triton_repo(tmp_path / "repo", "eva4", exported_onnx)
    assert model_dir == tmp_path / "repo" / "eva4"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == ["1", "1/model.onnx", "config.pbtxt"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == exported_onnx.read_bytes()
    assert not (tmp_path / "repo" / "eva4_trt").exists()
    assert not [p for p in model_dir.rglob("*.tmp")]  # atomic writes leave no temporaries
    # writing again refreshes in place
    write_triton_repo(tmp_path / "repo", "eva4", exported_onnx, max_batch_size=8)
    assert "max_batch_size: 8" in (model_dir / "config.pbtxt").read_text()


def test_config_text_matches_the_onnx_model(tmp_path, exported_onnx):
    """Always runs: the text's fields against the model's I/O as ONNX Runtime reports it."""
    text = (write_triton_repo(tmp_path, "eva4", exported_onnx) / "config.pbtxt").read_text()
    assert re.search(r'^name: "eva4"$', text, re.M)
    assert re.search(r'^platform: "onnxruntime_onnx"$', text, re.M)
    assert re.search(r"^max_batch_size: 32$", text, re.M)
    assert "dynamic_batching { max_queue_delay_microseconds: 100 }" in text
    assert "instance_group [ { count: 1 kind: KIND_GPU } ]" in text
    io = _ort_io(exported_onnx)
    rows = re.findall(r'\{ name: "(\w+)" data_type: (\w+) dims: \[ ([\d, ]+) \] \}', text)
    assert [r[0] for r in rows] == ["bg", "fgbg", "mask", "depth"]
    for name, dtype, dims in rows:
        assert io[name][0] == "tensor(float)" and dtype == "TYPE_FP32"
        assert [int(d) for d in dims.split(",")] == io[name][1]
    assert io["bg"][1] == [3, 128, 128] and io["mask"][1] == [1, 128, 128]


def test_config_parses_as_triton_model_config(tmp_path, exported_onnx):
    text = (write_triton_repo(tmp_path, "eva4", exported_onnx, onnx_instance_kind="KIND_CPU") / "config.pbtxt").read_text()
    pb2, cfg = _parse(text)
    assert cfg.name == "eva4" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    io = _ort_io(exported_onnx)
    for tensors in (cfg.input, cfg.output):
        for t in tensors:
            assert list(t.dims) == io[t.name][1]
            assert t.data_type == pb2.TYPE_FP32
    assert [t.name for t in cfg.input] == ["bg", "fgbg"] and [t.name for t in cfg.output] == ["mask", "depth"]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert len(cfg.instance_group) == 1
    assert cfg.instance_group[0].count == 1 and cfg.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU


def test_plan_config_parses_as_triton_model_config(exported_onnx):
    io = onnx_io(exported_onnx)
    text = config_pbtxt("eva4_trt", "tensorrt_plan", 16, io, "KIND_GPU", "a comment\nover two lines")
    pb2, cfg = _parse(text)
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16
    assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU


def test_onnx_io_reads_the_graph(exported_onnx):
    io = onnx_io(exported_onnx)
    assert [(t.name, t.data_type, t.dims) for t in io.inputs] == [("bg", "TYPE_FP32", (3, 128, 128)), ("fgbg", "TYPE_FP32", (3, 128, 128))]
    assert [(t.name, t.dims) for t in io.outputs] == [("mask", (1, 128, 128)), ("depth", (1, 128, 128))]
    from toolkit.core.spec import MAX_BATCH

    assert io.max_batch == MAX_BATCH


def test_max_batch_limits():
    check_max_batch(32, 256)
    check_max_batch(32, 256, 32)
    with pytest.raises(UserError, match="must be in 1..256"):
        check_max_batch(0, 256)
    with pytest.raises(UserError, match="must be in 1..256"):
        check_max_batch(257, 256)
    with pytest.raises(UserError, match="exceeds the engine's optimisation profile max 16"):
        check_max_batch(32, 256, 16)


def test_bad_arguments_are_one_line(tmp_path, exported_onnx):
    with pytest.raises(UserError, match="must be in 1..256"):
        write_triton_repo(tmp_path, "eva4", exported_onnx, max_batch_size=1000)
    with pytest.raises(UserError, match="Triton model name"):
        write_triton_repo(tmp_path, "../up", exported_onnx)
    with pytest.raises(UserError, match="instance kind"):
        write_triton_repo(tmp_path, "eva4", exported_onnx, onnx_instance_kind="KIND_TPU")
    with pytest.raises(UserError, match="no such ONNX file"):
        write_triton_repo(tmp_path, "eva4", tmp_path / "missing.onnx")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00")  # no sidecar: refused before anything is written
    with pytest.raises(UserError, match="model.engine.json is missing"):
        write_triton_repo(tmp_path / "repo", "eva4", exported_onnx, engine=engine)
    assert not (tmp_path / "repo").exists()


def test_fixed_batch_onnx_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("bg", "fgbg")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 8, 8]) for n in ("mask", "depth")]
    nodes = [helper.make_node("ReduceMean", [i], [o], axes=[1], keepdims=1) for i, o in (("bg", "mask"), ("fgbg", "depth"))]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "f.onnx")
    with pytest.raises(UserError, match="fixed batch of 1; Triton batching needs a dynamic batch axis"):
        write_triton_repo(tmp_path / "repo", "m", tmp_path / "f.onnx")


def test_repository_with_a_real_engine(tmp_path, exported_onnx):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU extra)")
    from export.tensorrt import build_engine

    report = build_engine(exported_onnx, tmp_path / "model.engine", precision="fp32", batch=(1, 4, 16), workspace_mb=256)
    with pytest.raises(UserError, match="profile max 16"):
        write_triton_repo(tmp_path / "repo", "eva4", exported_onnx, engine=report.engine, max_batch_size=32)
    write_triton_repo(tmp_path / "repo", "eva4", exported_onnx, engine=report.engine, max_batch_size=16)
    plan_dir = tmp_path / "repo" / "eva4_trt"
    assert (plan_dir / "1" / "model.plan").read_bytes() == report.engine.read_bytes()
    text = (plan_dir / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in text and "max_batch_size: 16" in text and "kind: KIND_GPU" in text
    if _model_config_module() is not None:
        _, cfg = _parse(text)
        assert [list(t.dims) for t in cfg.input] == [[3, 128, 128]] * 2
    shutil.rmtree(tmp_path / "repo")
