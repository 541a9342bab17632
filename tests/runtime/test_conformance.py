"""One conformance test over every runner: same protocol, same I/O contract, same answers."""

import re

import numpy as np
import pytest

from tests.conftest import golden_inputs
from toolkit.core.errors import UserError
from toolkit.core.install import install_hint
from toolkit.runtime import RUNNERS, open_runner
from toolkit.runtime.base import ONNX_RUNTIMES

# Every runner: one per model suffix, plus the runtimes that run an .onnx by --provider.
KINDS = sorted(RUNNERS) + sorted(ONNX_RUNTIMES)


@pytest.fixture(params=KINDS)
def model(request, imported_ckpt, exported_onnx, tmp_path_factory):
    """(the kind, the model file, the open_runner options that pick its runner)."""
    if request.param == ".engine":
        pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU extra); engines cannot be built here")
        from export.tensorrt import build_engine

        out = tmp_path_factory.mktemp("engine") / "model.fp32.engine"
        return request.param, build_engine(exported_onnx, out, precision="fp32").engine, {}
    if request.param in ONNX_RUNTIMES:
        pytest.importorskip(request.param, reason=f"{request.param} is not installed (its extra)")
        return request.param, exported_onnx, {"provider": request.param}
    return request.param, {".pt": imported_ckpt, ".onnx": exported_onnx}[request.param], {}


def test_runner_protocol(model):
    _, path, options = model
    runner = open_runner(path, **options)
    assert runner.spec.size == (128, 128)
    with pytest.raises(RuntimeError):
        runner.infer({})
    bg, fg = golden_inputs()
    with runner:
        out = runner.infer({"bg": np.repeat(bg, 2, 0), "fgbg": np.repeat(fg, 2, 0)})
        assert set(out) == {"mask", "depth"}
        for v in out.values():
            assert v.dtype == np.float32 and v.shape == (2, 1, 128, 128)
            assert 0.0 <= v.min() and v.max() <= 1.0
        with pytest.raises(UserError, match="missing input"):
            runner.infer({"bg": bg})
        with pytest.raises(UserError, match="model takes 128x128"):
            runner.infer({"bg": bg[..., :64, :64], "fgbg": fg[..., :64, :64]})
    assert not runner.active


# What loading means per backend: the call that creates a session, reads weights or deserialises
# an engine. Each is wrapped (the real function still runs) to count its calls.
LOADERS = {
    ".onnx": [("onnxruntime", "InferenceSession")],
    ".pt": [("toolkit.net.checkpoint", "load_checkpoint"), ("torch.nn.Module", "load_state_dict")],
    ".engine": [("tensorrt", "Runtime")],
    "openvino": [("openvino.Core", "compile_model")],
}


def _spy(monkeypatch, owner, attr, calls):
    import importlib

    try:
        target = importlib.import_module(owner)
    except ImportError:  # "package.Class"
        module, _, cls = owner.rpartition(".")
        target = getattr(importlib.import_module(module), cls)
    real = getattr(target, attr)

    def counted(*args, **kwargs):
        calls.append(f"{owner}.{attr}")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, counted)


def test_opening_loads_nothing_until_activate(model, monkeypatch):
    """open_runner reads metadata only; the session/weights/engine come with activate() and go
    with deactivate(). The same spies count the load, so a runner that loads at open fails here."""
    kind, path, options = model
    assert set(LOADERS) == set(KINDS)
    calls: list[str] = []
    for owner, attr in LOADERS[kind]:
        _spy(monkeypatch, owner, attr, calls)
    runner = open_runner(path, **options)
    assert calls == [], f"opening {path.name} ({kind}) loaded the model: {calls}"
    assert runner.spec.size == (128, 128) and runner.notes == [] and not runner.active
    assert runner.precision == "fp32"
    bg, fg = golden_inputs()
    notes = runner.notes
    with runner:
        assert calls, "activate() must load the model"
        assert runner.notes is notes  # a caller holding the list sees what activation adds
        runner.infer({"bg": bg, "fgbg": fg})
    held = [v for k, v in vars(runner).items() if k in ("session", "model", "_engine", "_context", "compiled")]
    assert held and all(v is None for v in held), "deactivate() frees what activate() loaded"


def test_runners_agree(imported_ckpt, exported_onnx):
    bg, fg = golden_inputs()
    outs = []
    for path in (imported_ckpt, exported_onnx):
        with open_runner(path) as r:
            outs.append(r.infer({"bg": bg, "fgbg": fg}))
    for name in ("mask", "depth"):
        assert np.abs(outs[0][name] - outs[1][name]).max() < 1e-4


def test_open_runner_errors(tmp_path):
    with pytest.raises(UserError, match="no such model"):
        open_runner(tmp_path / "missing.onnx")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(UserError, match="unknown model type"):
        open_runner(tmp_path / "m.txt")
    (tmp_path / "trunc.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(UserError, match="trunc.onnx: not a loadable ONNX model"):
        open_runner(tmp_path / "trunc.onnx")
    with pytest.raises(UserError, match="is a folder"):
        open_runner(tmp_path)


def test_engine_without_tensorrt_names_the_extra(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        (tmp_path / "m.engine").write_bytes(b"\x00" * 16)
        with pytest.raises(UserError, match=re.escape(install_hint("gpu"))):
            open_runner(tmp_path / "m.engine")
    else:
        pytest.skip("TensorRT is installed: the missing-extra message does not apply")


def test_onnx_with_other_input_names_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "other.onnx")
    with pytest.raises(UserError, match="expected \\['bg', 'fgbg'\\]"):
        open_runner(tmp_path / "other.onnx")


def _identity_model(path, dtype, size=8, props=None):
    import onnx
    from onnx import helper

    ins = [helper.make_tensor_value_info(n, dtype, ["N", 3, size, size]) for n in ("bg", "fgbg")]
    outs = [helper.make_tensor_value_info(n, dtype, ["N", 1, size, size]) for n in ("mask", "depth")]
    nodes = [helper.make_node("ReduceMean", [i], [o], axes=[1], keepdims=1) for i, o in (("bg", "mask"), ("fgbg", "depth"))]
    # IR 10, as exporters write: onnx's default (its newest IR) is more than some onnxruntime releases read
    m = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    if props:
        helper.set_model_props(m, props)
    onnx.save(m, path)
    return path


def test_float16_io_is_refused_in_one_line(tmp_path):
    from onnx import TensorProto

    with pytest.raises(UserError, match="tensor\\(float16\\).*float32"):
        open_runner(_identity_model(tmp_path / "half.onnx", TensorProto.FLOAT16))


def test_metadata_that_disagrees_with_the_graph_is_refused(tmp_path):
    from onnx import TensorProto

    from toolkit.core.spec import IOSpec

    props = IOSpec().with_size(64).to_metadata()
    with pytest.raises(UserError, match="metadata says 64x64 but the graph takes 8x8"):
        open_runner(_identity_model(tmp_path / "lying.onnx", TensorProto.FLOAT, props=props))


def test_foreign_model_without_metadata_runs_at_its_fixed_size(tmp_path):
    from onnx import TensorProto

    with open_runner(_identity_model(tmp_path / "plain.onnx", TensorProto.FLOAT)) as r:
        assert r.spec.size == (8, 8)
        out = r.infer({"bg": np.ones((1, 3, 8, 8), np.float32), "fgbg": np.zeros((1, 3, 8, 8), np.float32)})
    assert out["mask"].shape == (1, 1, 8, 8) and out["mask"].max() == 1.0
