"""The fixed-camera cut: background half once, frame half per frame, the whole model's outputs."""

import pytest
import torch

from toolkit.core.spec import FEATURE_CHANNELS, IOSpec
from toolkit.net.cut import split
from toolkit.net.folded import fold
from toolkit.net.model import EVA4Net, MaskDepthModel


def _model(seed: int) -> MaskDepthModel:
    torch.manual_seed(seed)
    net = EVA4Net()
    for m in net.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return MaskDepthModel(net, IOSpec()).eval()


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("height, width", [(32, 32), (36, 52)])
def test_the_two_halves_compute_the_whole_model(folded, height, width):
    model = _model(3)
    model = fold(model) if folded else model
    bg_half, frame_half = split(model)
    bg = torch.rand(1, 3, height, width)
    frames = torch.rand(3, 3, height, width)
    with torch.inference_mode():
        features = bg_half(bg)
        assert features.shape == (1, FEATURE_CHANNELS, height // 2, width // 2)
        got = frame_half(features.expand(3, -1, -1, -1), frames)
        want = model(bg.expand(3, -1, -1, -1), frames)
    for g, w in zip(got, want):
        assert g.shape == w.shape == (3, 1, height, width)
        assert (g - w).abs().max().item() <= 1e-5
    assert not torch.equal(got[0][0], got[0][1])  # the frames differ, so do their masks: the test can fail


def test_the_exported_halves_match_the_whole_export(imported_ckpt, exported_onnx, tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from export.fixed_camera import export_halves
    from toolkit.runtime.fixed import half_paths

    model = tmp_path / "model.onnx"
    model.write_bytes(exported_onnx.read_bytes())
    bg_path, frame_path, check = export_halves(imported_ckpt, model)
    assert (bg_path, frame_path) == half_paths(model) and check and max(check.max_abs.values()) <= 1e-4
    meta = [{p.key: p.value for p in onnx.load(str(p)).metadata_props} for p in (bg_path, frame_path)]
    assert [m["toolkit.split"] for m in meta] == ["bg", "frame"]
    assert meta[0]["toolkit.split_pair"] == meta[1]["toolkit.split_pair"] and meta[0]["toolkit.bg_features"] == "192x64x64"
    rng = np.random.default_rng(5)
    bg = rng.random((1, 3, 128, 128), dtype=np.float32)
    frames = rng.random((4, 3, 128, 128), dtype=np.float32)
    features = ort.InferenceSession(str(bg_path)).run(None, {"bg": bg})[0]  # once for the camera
    got = ort.InferenceSession(str(frame_path)).run(None, {"bg_features": np.repeat(features, 4, 0), "fgbg": frames})
    want = ort.InferenceSession(str(exported_onnx)).run(None, {"bg": np.repeat(bg, 4, 0), "fgbg": frames})
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= 1e-5
