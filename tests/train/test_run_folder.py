"""A new run over a folder that holds one is refused (one line, exit 2, nothing changed) unless
--force starts over; and the command's own wording: counts, --help."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from toolkit.core.errors import UserError
from toolkit.net.checkpoint import load_checkpoint
from train import loop


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_folder_is_refused_unless_forced_and_force_starts_over(tiny_data, tmp_path, small_config, capsys):
    import toolkit.cli as cli

    run = tmp_path / "run"
    loop.run(small_config(tiny_data, run, max_steps=1, seed=1), progress=False)
    before = _snapshot(run)
    args = ["train", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--batch-size", "4",
            "--image-size", "32", "--workers", "0", "--device", "cpu", "--recipe", "seed", "--max-steps", "1"]
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert f"--resume {run} continues it" in err[0] and "--force starts a new one" in err[0], err
    assert _snapshot(run) == before  # nothing in the folder changed
    with pytest.raises(UserError, match="holds a run already"):  # the library refuses as the command does
        loop.run(small_config(tiny_data, run, max_steps=1), progress=False)
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--resume", str(run), "--force"])
    assert info.value.code == 2 and "give one or the other" in capsys.readouterr().err
    assert _snapshot(run) == before

    with pytest.raises(SystemExit) as info:
        cli.main([*args, "--force"])
    captured = capsys.readouterr()
    assert info.value.code == 0, captured.err
    assert f"trained 1 step (0 epochs complete) in {run}" in captured.out.splitlines()
    assert "--force: starting a new run" in captured.err
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["training"]["config"]["seed"] == 0 and ckpt["training"]["config"]["force"] is True
    assert len(ckpt["training"]["history"]) == 1
    assert load_checkpoint(run / "best.pt")["training"]["config"]["seed"] == 0  # not the old run's
    # a resume of the forced run does not inherit --force
    loop.run(small_config(tiny_data, None, max_steps=2, resume=run), progress=False)
    assert load_checkpoint(run / "last.pt")["training"]["config"]["force"] is False


def test_help_gives_each_default_once_and_counts_read_right():
    import typer

    from toolkit.cli import train_cmd
    from train.speed import SpeedOptions

    app = typer.Typer()
    train_cmd.register(app)

    @app.command("noop", hidden=True)
    def noop() -> None:  # a second command keeps `train` a named sub-command
        pass

    text = " ".join(CliRunner().invoke(app, ["train", "--help"]).output.split())
    nproc = text[text.index("--nproc <int>"):text.index("--clip-grad <float>")]
    assert nproc.count("default") == 1, nproc
    assert "--force" in text and "Ctrl-C" in text and "val_depth_above_half_iou" in text
    assert [train_cmd.count(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert SpeedOptions(threads=1).describe().endswith("1 thread")


def test_force_leaves_a_folder_without_a_run_alone(tmp_path):
    from train.checkpointer import remove_previous_run

    (tmp_path / "metrics.csv").write_text("someone else's\n")
    (tmp_path / "tensorboard").mkdir()
    assert remove_previous_run(tmp_path) == []
    assert (tmp_path / "metrics.csv").read_text() == "someone else's\n" and (tmp_path / "tensorboard").is_dir()


def test_an_interrupt_inside_a_library_error_is_still_an_interrupt():
    from toolkit.cli.train_cmd import _caused_by_interrupt

    try:
        try:
            raise KeyboardInterrupt
        finally:
            raise AttributeError("module 'sympy' has no attribute 'printing'")  # what a cut-short import raises
    except AttributeError as e:
        assert _caused_by_interrupt(e)
    assert not _caused_by_interrupt(ValueError("plain"))
