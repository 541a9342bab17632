"""Runner notes are read after activation: one added by `activate()` still reaches the report."""

from __future__ import annotations

from PIL import Image

from tests.deploy.poison import PoisonRunner
from toolkit.deploy.footage import walking_frames


class NotingRunner(PoisonRunner):
    """The real model; its activation adds a note, as a GPU provider that failed to load does."""

    def _activate(self) -> None:
        super()._activate()
        self.notes.append("CUDA provider failed to load; running on the CPU")


def test_a_note_added_at_activation_reaches_the_stream_report(tmp_path, exported_onnx):
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    source = tmp_path / "frames"
    source.mkdir()
    for i, frame in enumerate(walking_frames(3, 32, 40)):
        Image.fromarray(frame).save(source / f"{i:02d}.png")
    runner = NotingRunner(exported_onnx)
    assert runner.notes == []  # opened, not yet activated
    report = stream(runner, str(source), tmp_path / "out", StreamOptions(bg_frames=2))
    assert report.frames == 3
    assert "CUDA provider failed to load; running on the CPU" in report.notes
