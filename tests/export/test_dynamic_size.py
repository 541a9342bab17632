"""`--dynamic-size`: H and W symbolic, any multiple of 4, the same model at every size; engines get a size range."""

import importlib.util

import numpy as np
import onnx
import pytest

from export.options import ExportOptions
from toolkit.core.errors import UserError
from toolkit.core.sizes import SizeProfile
from toolkit.runtime import open_runner

NOMINAL = (32, 48)


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory, imported_ckpt):
    from export.formats import run_exports

    out = tmp_path_factory.mktemp("dynamic")
    outcomes = run_exports(imported_ckpt, out, options=ExportOptions(dynamic_size=True, image_size=NOMINAL))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    return out / "model.onnx"


def _pairs(size, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.random((n, 3, *size), dtype=np.float32) for k in ("bg", "fgbg")}


def test_the_graph_has_symbolic_sizes_and_says_so(dynamic_model):
    model = onnx.load(str(dynamic_model))
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert all(isinstance(d[2], str) and isinstance(d[3], str) for d in dims), dims
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["toolkit.dynamic_size"] == "1" and meta["toolkit.input_size"] == "32x48"


@pytest.mark.parametrize("size", [NOMINAL, (64, 112), (20, 28)])
def test_every_multiple_of_4_gives_the_checkpoints_answers(dynamic_model, imported_ckpt, size):
    from toolkit.runtime.fixed import open_fixed_camera
    from toolkit.verify.compare import open_at

    feed = _pairs(size)
    with open_runner(dynamic_model) as onnx_runner, open_at(imported_ckpt, size) as torch_runner:
        got, want = onnx_runner.infer(feed), torch_runner.infer(feed)
    with open_fixed_camera(dynamic_model) as pair:  # the halves are dynamic too
        split = pair.infer(feed)
    for k in ("mask", "depth"):
        assert got[k].shape == (2, 1, *size)
        assert float(np.abs(got[k] - want[k]).max()) <= 1e-4 and float(np.abs(split[k] - want[k]).max()) <= 1e-4
    assert not np.allclose(got["mask"][0], got["mask"][1])  # two different pairs: the comparison can fail


def test_a_size_the_network_cannot_take_is_one_line(dynamic_model):
    with open_runner(dynamic_model) as runner, pytest.raises(UserError, match="30x48 is not a size the network takes"):
        runner.infer(_pairs((30, 48)))


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed (pip install openvino)")
def test_openvino_runs_it_at_another_size(dynamic_model):
    feed = _pairs((48, 80))
    with open_runner(dynamic_model, provider="openvino") as ov, open_runner(dynamic_model) as ort:
        got, want = ov.infer(feed), ort.infer(feed)
    assert max(float(np.abs(got[k] - want[k]).max()) for k in got) <= 1e-4


def test_the_options_are_checked(exported_onnx, tmp_path):
    from export.formats import check_source
    from export.tensorrt import read_onnx_source, size_profile_for

    with pytest.raises(UserError, match="--size-profile only applies to --engine"):
        ExportOptions.from_given(size_profile="96x160,128x224,256x448")
    with pytest.raises(UserError, match="--size-profile: .*min <= opt <= max"):
        ExportOptions(engine=True, size_profile="128x224,96x160,256x448")
    with pytest.raises(UserError, match="the Triton repository needs a fixed input size"):
        ExportOptions(dynamic_size=True, triton=tmp_path / "repo")
    with pytest.raises(UserError, match="--dynamic-size only applies to a checkpoint"):
        check_source(exported_onnx, ExportOptions(fp16=True, dynamic_size=True))
    fixed = read_onnx_source(exported_onnx)
    with pytest.raises(UserError, match="takes 128x128 only; --size-profile needs a model exported with --dynamic-size"):
        size_profile_for(fixed, SizeProfile.of("96x96,128x128,160x160"))
    assert size_profile_for(fixed, None) == SizeProfile.fixed((128, 128))


def test_an_engine_size_range_must_be_sizes_the_network_takes(dynamic_model):
    from export.tensorrt import read_onnx_source, size_profile_for

    source = read_onnx_source(dynamic_model)
    assert size_profile_for(source, None) == SizeProfile.fixed(NOMINAL)
    assert size_profile_for(source, SizeProfile.of("16x16,32x48,64x96")).max == (64, 96)
    with pytest.raises(UserError, match="leaves out the model's own size 32x48"):
        size_profile_for(source, SizeProfile.of("64x96,96x128,128x160"))
    with pytest.raises(UserError, match="over the largest size"):
        size_profile_for(source, SizeProfile.of("16x16,32x48,64x8192"))
    with pytest.raises(ValueError, match="multiples of 4"):
        SizeProfile.of("16x18,32x48,64x96")
