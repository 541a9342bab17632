"""`--provider auto`: the fastest runtime here, timed, said in a note, and the same answers."""

import importlib.util
import re

import numpy as np
import pytest

from toolkit.runtime import open_runner
from toolkit.runtime.auto import candidates, pick_provider
from toolkit.runtime.fixed import open_fixed_camera

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def test_the_candidates_are_what_this_machine_has(exported_onnx):
    found = candidates(exported_onnx)
    assert found[0] == "cpu"
    assert ("openvino" in found) == HAS_OPENVINO


def test_auto_picks_a_timed_runtime_says_so_and_gives_the_same_answers(exported_onnx):
    runner = open_runner(exported_onnx, provider="auto")
    note = runner.notes[0]
    assert note.startswith(f"--provider auto: {runner.opened_with} (")
    if HAS_OPENVINO:  # both were timed: the winner's figure and the other's are in the note
        assert re.search(r"\d+\.\d ms per pair at batch 1, timed here; (cpu|openvino) \d+\.\d ms(, \w+ left out: [^()]+(\([^()]*\))?)*\)$", note), note
        assert runner.backend == ("openvino" if runner.opened_with == "openvino" else "onnxruntime")
    rng = np.random.default_rng(1)
    feed = {k: rng.random((2, 3, 128, 128), dtype=np.float32) for k in ("bg", "fgbg")}
    with runner, open_runner(exported_onnx) as cpu:
        got, want = runner.infer(feed), cpu.infer(feed)
    assert max(float(np.abs(got[k] - want[k]).max()) for k in got) <= 1e-5


def test_a_checkpoint_runs_on_the_cpu_without_a_gpu(imported_ckpt):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert pick_provider(imported_ckpt, open_runner) == ("cpu", "--provider auto: PyTorch on CPU")


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed (pip install openvino): one runtime, nothing to pick")
def test_a_fixed_camera_times_its_frame_half(exported_halves):
    runner = open_fixed_camera(exported_halves, provider="auto")
    assert "ms per frame at batch 1" in runner.notes[0]
    assert all(h.opened_with == runner.opened_with for h in runner.halves)


def test_a_runtime_that_cannot_load_the_model_is_left_out(exported_onnx, monkeypatch):
    from toolkit.core.errors import UserError
    from toolkit.runtime import auto

    monkeypatch.setattr(auto, "candidates", lambda path: ["cpu", "openvino"])

    def opener(path, **options):
        if options["provider"] == "openvino":
            raise UserError(f"{path}: not a loadable ONNX model: OpenVINO refuses it (test)")
        return open_runner(path, **options)

    provider, note = pick_provider(exported_onnx, opener)
    assert provider == "cpu"
    assert re.fullmatch(r"--provider auto: cpu \(\d+\.\d ms per pair at batch 1, timed here; openvino left out: .*OpenVINO refuses it \(test\)\)", note)


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed (pip install openvino): one runtime, nothing timed")
def test_a_half_can_be_opened_with_auto(exported_halves):
    from toolkit.runtime.fixed import half_paths

    runner = open_runner(half_paths(exported_halves)[1], part="frame", provider="auto")
    assert runner.interface.part == "frame" and "ms per frame" in runner.notes[0]
