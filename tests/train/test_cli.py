"""`toolkit train` as a command: options reach the config, errors are one line with exit code 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from toolkit.cli import train_cmd
from toolkit.core.errors import UserError


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    train_cmd.register(app)

    @app.command("noop", hidden=True)
    def noop() -> None:  # a second command keeps `train` a named sub-command
        pass

    return app


def test_train_command_runs_and_reports_its_files(app, tiny_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--epochs", "1", "--batch-size", "4", "--image-size", "32",
            "--workers", "0", "--device", "cpu", "--out", str(out), "--seed", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "last.pt" in result.output and "best.pt" in result.output and "metrics.csv" in result.output
    assert (out / "last.pt").is_file() and (out / "metrics.csv").is_file()

    from toolkit.net.checkpoint import load_checkpoint

    config = load_checkpoint(out / "last.pt")["training"]["config"]
    assert (config["batch_size"], config["image_size"], config["seed"], config["workers"]) == (4, 32, 3, 0)

    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--batch-size", "8"])
    assert isinstance(result.exception, UserError) and "--batch-size" in str(result.exception)


def test_improved_recipe_on_zips_with_the_speed_and_logging_options(app, tmp_path):
    """The other recipe, from the data set as zips, with the options a user turns on."""
    from toolkit.data.synth import synthesize
    from toolkit.net.checkpoint import load_checkpoint

    synthesize(tmp_path / "zips", backgrounds=3, foregrounds=2, placements=1, size=48, zip=True)
    assert sorted(p.suffix for p in (tmp_path / "zips").iterdir()) == [".json"] + [".zip"] * 4  # + dataset.json
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "zips"), "--recipe", "improved", "--epochs", "1", "--batch-size", "2",
            "--image-size", "32", "--workers", "1", "--device", "cpu", "--out", str(out), "--clip-grad", "0.5",
            "--amp", "off", "--no-channels-last", "--preview-every", "1", "--log-every", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["recipe"] == "improved" and ckpt["iospec"]["mask"]["kind"] == "sigmoid"
    config = ckpt["training"]["config"]
    assert (config["clip_grad"], config["amp"], config["channels_last"], config["preview_every"]) == (0.5, "off", False, 1)
    assert (out / "curves.png").is_file() and (out / "samples.png").is_file()


def test_help_describes_the_run_folder(app):
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for word in ("last.pt", "best.pt", "metrics.csv", "--resume", "--max-steps", "--recipe", "--deterministic"):
        assert word in result.output
    text = " ".join(result.output.split())
    assert "on the CPU" in text and "only with --deterministic" in text


@pytest.mark.parametrize("args, message", [
    (["--image-size", "30"], "multiple of 4"),
    (["--batch-size", "0"], "batch size"),
    (["--device", "tpu"], "device"),
    (["--amp", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (["--amp", "fp8"], "amp must be"),
    (["--clip-grad", "-1"], "clip-grad"),
    (["--nproc", "0"], "--nproc"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "toolkit", "train", "--out", str(tmp_path / "r"), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--data", "missing"], "no such data folder"),
    (["--data", "garbage.txt"], "garbage.txt"),
    (["--device", "cuda"], "CUDA is not available"),
])
def test_bad_data_or_device_leaves_no_run_folder(tmp_path, monkeypatch, capsys, args, message):
    """In-process `toolkit.cli.main` (the same path as the command, without a new interpreter)."""
    import toolkit.cli as cli

    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("needs a machine without CUDA")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.txt").write_text("not a data set")
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--out", "t1", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "t1").exists()


def toolkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m toolkit ...` in `cwd`, its output piped (not a terminal) and no COLUMNS set."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "toolkit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_resume_from_another_folder_with_repeated_and_default_valued_options(tiny_data, tmp_path):
    """The data path is kept absolute; options repeated with the run's values are fine; --epochs
    12 (the default) still extends; a moved data set is found again with --data; and lines are
    never wrapped at 80 columns when piped."""
    pytest.importorskip("toolkit.cli", exc_type=ImportError)
    from toolkit.net.checkpoint import load_checkpoint

    first = tmp_path / ("a-folder-with-a-name-long-enough-that-paths-in-it-pass-eighty-columns-" + "x" * 30)
    shutil.copytree(tiny_data, first / "set")
    proc = toolkit("train", "--data", "set", "--out", "run", "--epochs", "1", "--batch-size", "4", "--image-size",
                   "32", "--workers", "0", "--device", "cpu", "--max-steps", "1", "--deterministic", cwd=first)
    assert proc.returncode == 0, proc.stderr
    run = first / "run"
    config = load_checkpoint(run / "last.pt")["training"]["config"]
    assert config["data"] == str(first / "set") and config["deterministic"] is True
    assert "  last.pt      run/last.pt" in proc.stdout.splitlines()
    summary = [line for line in proc.stderr.splitlines() if line.startswith("epoch 0.3333 step 1: ")]
    assert summary and summary[0].endswith(tuple("0123456789")) and "val_depth_rmse" in summary[0], proc.stderr

    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    proc = toolkit("train", "--resume", str(run), "--batch-size", "4", "--image-size", "32", "--epochs", "12",
                   "--max-steps", "4", "--workers", "0", "--device", "cpu", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["training"]["position"]["step"] == 4 and ckpt["training"]["config"]["epochs"] == 12
    assert f"  last.pt      {run / 'last.pt'}" in proc.stdout.splitlines()  # a path over 80 columns, whole
    assert f"run folder {run}" in proc.stderr

    shutil.move(first / "set", tmp_path / "moved")
    proc = toolkit("train", "--resume", str(run), "--data", "../moved", "--max-steps", "5", "--workers", "0",
                   "--device", "cpu", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(run / "last.pt")["training"]["config"]["data"] == str(tmp_path / "moved")
