"""`toolkit train` as a command: options reach the config, errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from toolkit.errors import UserError

# Skips only while the rest of the CLI package is still being assembled (it imports all areas).
train_cmd = pytest.importorskip("toolkit.cli.train_cmd", exc_type=ImportError)


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

    from toolkit.checkpoint import load_checkpoint

    config = load_checkpoint(out / "last.pt")["training"]["config"]
    assert (config["batch_size"], config["image_size"], config["seed"], config["workers"]) == (4, 32, 3, 0)

    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--batch-size", "8"])
    assert isinstance(result.exception, UserError) and "--batch-size" in str(result.exception)


def test_help_describes_the_run_folder(app):
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for word in ("last.pt", "best.pt", "metrics.csv", "--resume", "--max-steps", "--recipe"):
        assert word in result.output


@pytest.mark.parametrize("args, message", [
    (["--image-size", "30"], "multiple of 4"),
    (["--batch-size", "0"], "batch size"),
    (["--device", "tpu"], "device"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    pytest.importorskip("toolkit.cli", exc_type=ImportError)
    proc = subprocess.run([sys.executable, "-m", "toolkit", "train", "--out", str(tmp_path / "r"), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
