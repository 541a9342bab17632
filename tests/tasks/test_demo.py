"""The demo pipeline end to end, at toy size: every stage runs and leaves its artefact."""

import pytest
from PIL import Image

from toolkit.tasks.demo import DemoSettings, run_demo


def test_demo_runs_every_stage(tmp_path):
    lines = []
    settings = DemoSettings(image_size=32, backgrounds=3, foregrounds=2, placements=1, synth_size=48, epochs=1, batch_size=4)
    result = run_demo(tmp_path / "demo", settings, say=lines.append, progress=False)
    assert result.parity_passed
    for stage in ("synth", "train", "export", "infer"):
        assert result.artefacts[stage].exists(), stage
    assert result.artefacts["export"].name == "model.onnx"
    halves = sorted(p.name for p in result.artefacts["export"].parent.glob("model.*.onnx"))
    assert halves == ["model.bg.onnx", "model.frame.onnx"]  # as the README says every X.onnx comes with
    panel = Image.open(result.artefacts["infer"])
    assert panel.size[0] >= 4 * 48  # bg | fgbg | mask | depth at the input's size
    assert lines[-1].startswith("panel: ") and any(line.startswith("[parity]") and "PASS" in line for line in lines)


def test_readme_caption_says_what_the_demo_does():
    """The caption states the demo's steps and settings (they hold on any machine), not a time."""
    from tests.conftest import ROOT
    from toolkit.tasks.demo import DemoSettings

    s = DemoSettings()
    caption = (ROOT / "README.md").read_text(encoding="utf-8").split("*The demo's panel", 1)[1].split("*", 1)[0]
    caption = " ".join(caption.split())
    pairs = s.backgrounds * s.foregrounds * s.placements
    assert f"{pairs} pairs ({s.backgrounds} backgrounds x {s.foregrounds} people x {s.placements} placements, {s.synth_size} px)" in caption
    assert f"{s.epochs} epochs at {s.image_size} px" in caption and f"of {s.batch_size} pairs" in caption
    assert "minute" not in caption and " s " not in caption


def test_the_demo_says_how_to_put_toolkit_on_path(tmp_path):
    """After `make demo` a new user's `toolkit ...` found nothing: .venv/bin was not on PATH."""
    import sys
    from pathlib import Path

    from toolkit.tasks.demo import path_hint

    here = Path(sys.executable).parent
    if not (here / "toolkit").is_file():
        pytest.skip("toolkit is not installed as a script beside this Python")
    hint = path_hint({"PATH": "/usr/bin:/bin"})
    assert hint == f"next: put toolkit on PATH with `source {here / 'activate'}` (or run {here / 'toolkit'})"
    assert path_hint({"PATH": f"/usr/bin:{here}"}) is None
