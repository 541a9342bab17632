"""fp32 ONNX export of the epoch-12 fixture: graph, metadata, agreement with PyTorch."""

import numpy as np
import onnx
import pytest
import torch

from export.onnx import FP32_TOLERANCE, export_onnx
from tests.conftest import golden_inputs
from toolkit.core.errors import CheckFailed
from toolkit.core.fsutil import sha256_file
from toolkit.core.spec import SEED_SPEC, IOSpec
from toolkit.net.checkpoint import build_model, load_checkpoint
from toolkit.runtime.onnx_runner import OnnxRunner


def test_graph_contract(exported_onnx, imported_ckpt):
    m = onnx.load(str(exported_onnx))
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["bg", "fgbg"]
    assert [o.name for o in m.graph.output] == ["mask", "depth"]
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert dims[0].dim_param  # dynamic batch
        assert [d.dim_value for d in dims[2:]] == [128, 128]
    props = {p.key: p.value for p in m.metadata_props}
    assert props["toolkit.precision"] == "fp32"
    assert props["toolkit.input_size"] == "128x128"
    assert props["toolkit.checkpoint_sha256"] == sha256_file(imported_ckpt)
    assert IOSpec.from_metadata(props) == SEED_SPEC
    assert "clip" in props["toolkit.decoding"] or "affine_clip" in props["toolkit.decoding"]
    ops = {n.op_type for n in m.graph.node}
    assert {"Sub", "Div", "Clip", "Resize"} <= ops  # normalisation, decoding, upsampling in-graph


def test_onnxruntime_matches_pytorch_on_golden_input_and_batches(exported_onnx, imported_ckpt):
    model = build_model(load_checkpoint(imported_ckpt))
    bg, fg = golden_inputs()
    rng = np.random.default_rng(3)
    for batch in (1, 3):
        feed = {
            "bg": np.concatenate([bg] + [rng.random(bg.shape, dtype=np.float32) for _ in range(batch - 1)]),
            "fgbg": np.concatenate([fg] + [rng.random(fg.shape, dtype=np.float32) for _ in range(batch - 1)]),
        }
        with OnnxRunner(exported_onnx) as r:
            got = r.infer(feed)
        with torch.no_grad():
            ref = model(torch.from_numpy(feed["bg"]), torch.from_numpy(feed["fgbg"]))
        for name, t in zip(("mask", "depth"), ref):
            assert got[name].shape == (batch, 1, 128, 128)
            assert np.abs(got[name] - t.numpy()).max() <= FP32_TOLERANCE
    # architecture.md's golden raw values, decoded with the seed recipe's affine + clip.
    assert got["mask"][0, 0, 64, 64] == pytest.approx(0.079 + 0.254 * 2.661829, abs=1e-4)
    assert got["depth"][0, 0, 64, 64] == pytest.approx(0.35 - 0.208 * 0.175016, abs=1e-4)


def test_export_refuses_a_model_that_disagrees(imported_ckpt, tmp_path, monkeypatch):
    import export.onnx as mod

    real = mod.compare_with_torch

    def broken(path, checkpoint, size=None):
        check = real(path, checkpoint, size)
        check.max_abs = {name: 0.5 for name in check.max_abs}  # as if ONNX Runtime disagreed
        return check.judge()

    monkeypatch.setattr(mod, "compare_with_torch", broken)
    with pytest.raises(CheckFailed, match="not written"):
        export_onnx(imported_ckpt, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_improved_recipe_sigmoid_decoding_is_in_the_graph_and_matches(tmp_path):
    """The decoding follows the recipe recorded in the checkpoint: a sigmoid mask exports as a
    Sigmoid node, its metadata says so, and ONNX Runtime agrees with PyTorch."""
    from toolkit.net.checkpoint import make_checkpoint, save_checkpoint
    from toolkit.net.model import EVA4Net
    from train.config import RECIPES

    torch.manual_seed(0)
    spec = RECIPES["improved"].spec.with_size(32)
    ckpt = tmp_path / "improved.pt"
    save_checkpoint(ckpt, make_checkpoint(EVA4Net().state_dict(), spec, recipe="improved"))
    onnx_path, _ = export_onnx(ckpt, tmp_path / "model.onnx")
    m = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in m.metadata_props}
    assert props["toolkit.recipe"] == "improved"
    assert IOSpec.from_metadata(props).mask.kind == "sigmoid" and IOSpec.from_metadata(props).depth == SEED_SPEC.depth
    assert "Sigmoid" in {n.op_type for n in m.graph.node}
    rng = np.random.default_rng(0)
    feed = {k: rng.random((2, 3, 32, 32), dtype=np.float32) for k in ("bg", "fgbg")}
    with OnnxRunner(onnx_path) as r:
        got = r.infer(feed)
    model = build_model(load_checkpoint(ckpt))
    with torch.no_grad():
        ref = model(torch.from_numpy(feed["bg"]), torch.from_numpy(feed["fgbg"]))
    for name, t in zip(("mask", "depth"), ref):
        assert np.abs(got[name] - t.numpy()).max() <= FP32_TOLERANCE
    assert 0.0 < got["mask"].min() and got["mask"].max() < 1.0  # a sigmoid, not a clip


def test_literal_and_folded_graphs_compute_the_same(exported_onnx, imported_ckpt, tmp_path):
    literal, _ = export_onnx(imported_ckpt, tmp_path / "literal.onnx", graph="literal")
    graphs = {"folded": onnx.load(str(exported_onnx)), "literal": onnx.load(str(literal))}
    for name, m in graphs.items():
        props = {p.key: p.value for p in m.metadata_props}
        assert props["toolkit.graph"] == name
        ops = [n.op_type for n in m.graph.node]
        # the folded tail upsamples once per head (then a pixel shuffle), the literal one twice
        assert ops.count("Resize") == (2 if name == "folded" else 4)
        assert ("DepthToSpace" in ops) == (name == "folded")
    gflop = {k: float({p.key: p.value for p in m.metadata_props}["toolkit.gflop_per_pair"]) for k, m in graphs.items()}
    assert gflop["literal"] == pytest.approx(6.14, abs=0.005) and gflop["folded"] < 0.6 * gflop["literal"]
    rng = np.random.default_rng(11)
    feed = {k: rng.random((2, 3, 128, 128), dtype=np.float32) for k in ("bg", "fgbg")}
    with OnnxRunner(exported_onnx) as a, OnnxRunner(literal) as b:
        got, want = a.infer(feed), b.infer(feed)
    for k in want:
        assert np.abs(got[k] - want[k]).max() <= 1e-5


def test_export_at_another_size_is_checked_at_that_size(imported_ckpt, tmp_path):
    """The network is fully convolutional: a 16:9 camera gets 64x112, checked against the
    checkpoint at 64x112, recorded in the metadata; parity and bench follow the model's size."""
    from toolkit.runtime import open_runner
    from toolkit.tasks.bench import bench
    from toolkit.verify.parity import run_parity

    out, check = export_onnx(imported_ckpt, tmp_path / "wide.onnx", size=(64, 112))
    assert check and max(check.max_abs.values()) <= FP32_TOLERANCE
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["toolkit.input_size"] == "64x112" and props["toolkit.training_size"] == "128x128"
    assert open_runner(out).spec.size == (64, 112)
    report = run_parity([out], imported_ckpt, limit=2, batch_size=2)
    assert report and report.results[0].pairs == 2
    rows = bench([imported_ckpt, out], [1], warmup=0, iters=1)
    assert {(r.height, r.width) for r in rows} == {(64, 112)}  # the checkpoint ran at the export's size


def test_image_size_option_is_checked_before_anything_is_written(imported_ckpt, tmp_path):
    from export.options import ExportOptions
    from toolkit.core.errors import UserError

    assert ExportOptions(image_size="128x224").image_size == (128, 224)
    for bad in ("128x222", "0", "wide", "1x2x3"):
        with pytest.raises(UserError, match="--image-size"):
            ExportOptions(image_size=bad)


def test_exports_name_no_file_of_the_machine_that_made_them(exported_onnx, exported_halves):
    """torch's exporter records stack traces with source paths per node: stripped; module scopes kept."""
    from tests.conftest import ROOT

    for path in (exported_onnx, exported_halves.with_name("model.frame.onnx")):
        model = onnx.load(str(path))
        values = [p.value for n in model.graph.node for p in n.metadata_props]
        keys = {p.key for n in model.graph.node for p in n.metadata_props}
        assert values and not any(str(ROOT) in v or 'File "' in v for v in values), path
        assert "pkg.torch.onnx.name_scopes" in keys and "pkg.torch.onnx.stack_trace" not in keys
