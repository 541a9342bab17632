"""The epoch progress: a live bar on a terminal, one plain line per epoch in a log file."""

from __future__ import annotations

import io

from rich.console import Console

from train.progress import EpochProgress


def _two_epochs(console: Console) -> list[str]:
    bar = EpochProgress(console=console)
    for epoch in (1, 2):
        bar.start_epoch(epoch, 2, total=3)
        for _ in range(3):
            bar.step(0.5, 4)
        bar.end_epoch()
        bar.print(f"epoch {epoch} summary")  # what the loop prints after each epoch
    bar.close()
    return console.file.getvalue().splitlines()


def test_a_log_file_gets_one_line_per_epoch_as_it_ends():
    """Redirected, the ten bars of a run all came after its last epoch line."""
    lines = _two_epochs(Console(file=io.StringIO(), force_terminal=False, width=100))
    assert len(lines) == 4 and lines[1] == "epoch 1 summary" and lines[3] == "epoch 2 summary"
    assert lines[0].startswith("epoch 1/2: 3/3 steps, loss 0.5000, ") and lines[0].endswith(" s") and "img/s" in lines[0]
    assert lines[2].startswith("epoch 2/2: 3/3 steps")


def test_a_terminal_gets_the_live_bar():
    lines = _two_epochs(Console(file=io.StringIO(), force_terminal=True, width=100))
    assert any("epoch 1/2" in line and "loss" in line and "img/s" in line for line in lines)
    assert not any(line.startswith("epoch 1/2: 3/3 steps") for line in lines)
