"""The demo pipeline end to end, at toy size: every stage runs and leaves its artefact."""

from PIL import Image

from toolkit.demo import DemoSettings, run_demo


def test_demo_runs_every_stage(tmp_path):
    lines = []
    settings = DemoSettings(image_size=32, backgrounds=3, foregrounds=2, placements=1, synth_size=48, epochs=1, batch_size=4)
    result = run_demo(tmp_path / "demo", settings, say=lines.append, progress=False)
    assert result.parity_passed
    for stage in ("synth", "train", "export", "infer"):
        assert result.artefacts[stage].exists(), stage
    assert result.artefacts["export"].name == "model.onnx"
    panel = Image.open(result.artefacts["infer"])
    assert panel.size[0] >= 4 * 48  # bg | fgbg | mask | depth at the input's size
    assert lines[-1].startswith("panel: ") and any(line.startswith("[parity]") and "PASS" in line for line in lines)
