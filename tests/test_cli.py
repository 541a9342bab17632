"""Exit codes of the contract: 0 ok, 1 a check failed, 2 bad input with one line and no traceback."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli


def _one_clean_line(r):
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_import_legacy_and_summary(legacy_fixture, tmp_path):
    r = run_cli("import-legacy", str(legacy_fixture), "--out", str(tmp_path / "new.pt"))
    assert r.returncode == 0, r.stderr
    assert "convblock3" in r.stdout and "493,408" in r.stdout
    r = run_cli("summary", str(tmp_path / "new.pt"))
    assert r.returncode == 0, r.stderr
    assert "493,408" in r.stdout and "677,824" in r.stdout and "91 layer calls" in r.stdout


def test_import_legacy_refuses_a_forbidden_global(tmp_path):
    import pickle

    from toolkit.net.legacy import LEGACY_MAGIC

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("touch PWNED",))

    head = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, 1001, {}))
    (tmp_path / "evil.pt").write_bytes(head + pickle.dumps(Evil(), protocol=4))
    r = run_cli("import-legacy", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "o.pt"), cwd=tmp_path)
    assert r.returncode == 2
    assert "posix.system" in _one_clean_line(r)
    assert not (tmp_path / "o.pt").exists() and not (tmp_path / "PWNED").exists()




@pytest.mark.parametrize(
    "make_args",
    [
        lambda t: ["export", str(t / "missing.pt"), "--out", str(t / "o")],
        lambda t: ["export", str(t / "junk.pt"), "--out", str(t / "o")],
        lambda t: ["summary", str(t / "junk.pt")],
        lambda t: ["import-legacy", str(t / "junk.pt"), "--out", str(t / "o.pt")],
        lambda t: ["infer", str(t / "junk.jpg"), str(t / "junk.jpg"), "--model", str(t / "junk.onnx"), "--out", str(t / "o")],
        lambda t: ["infer", str(t / "img.png"), str(t / "junk.jpg"), "--model", "MODEL", "--out", str(t / "o")],
        lambda t: ["infer", str(t / "img.png"), str(t / "img.png"), "--model", "MODEL", "--out", str(t / "afile")],
        lambda t: ["infer", str(t / "img.png"), str(t / "img.png"), "--model", "MODEL", "--out", str(t / "o"), "--batch-size", "0"],
        lambda t: ["parity", "--model", str(t / "junk.onnx"), "--reference", str(t / "junk.pt")],
        lambda t: ["train", "--image-size", "30", "--out", str(t / "o")],
        lambda t: ["train", "--batch-size", "-1", "--out", str(t / "o")],
        lambda t: ["data", "check", str(t / "nothing-here")],
    ],
    ids=["missing-ckpt", "junk-ckpt", "summary-junk", "legacy-junk", "junk-model", "junk-image",
         "out-is-file", "zero-batch", "parity-junk", "size-not-div-4", "negative-batch", "missing-data"],
)
def test_bad_input_is_one_line_and_exit_2(make_args, tmp_path, exported_onnx):
    from PIL import Image

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 not onnx")
    (tmp_path / "afile").write_text("x")
    Image.new("RGB", (40, 40)).save(tmp_path / "img.png")
    args = [str(exported_onnx) if a == "MODEL" else a for a in make_args(tmp_path)]
    before = set(tmp_path.rglob("*"))
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    _one_clean_line(r)
    assert set(tmp_path.rglob("*")) == before  # nothing written, nothing half-written


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"x")
    r = run_cli("summary", str(tmp_path / "junk.pt"), "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr


@pytest.mark.parametrize(
    "args,says",
    [(["nosuchcommand"], "--help"), (["infer"], "--help"), (["summary", "--image-size", "abc"], "--help"),
     (["bench", "--model", "x.onnx", "--batch", ","], "--batch"), (["bench", "--model", "x.onnx", "--threads", "-1"], "--threads")],
)
def test_usage_errors_are_one_line(args, says, exported_onnx):
    r = run_cli(*[str(exported_onnx) if a == "x.onnx" else a for a in args])
    assert r.returncode == 2
    assert says in _one_clean_line(r)


def test_summary_explanation_is_one_line_when_piped():
    r = run_cli("summary")
    assert r.returncode == 0, r.stderr
    line = next(line for line in r.stdout.splitlines() if "677,824" in line)
    assert "493,408 used" in line and "155,648" in line


def test_outputs_get_the_usual_file_mode(imported_ckpt, tmp_path):
    import os
    import stat

    r = run_cli("export", str(imported_ckpt), "--out", str(tmp_path / "exp"))
    assert r.returncode == 0, r.stderr
    assert "max abs diff" in r.stdout
    mode = stat.S_IMODE(os.stat(tmp_path / "exp" / "model.onnx").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_every_option_and_argument_has_help():
    import typer.main

    from toolkit.cli import app

    def bare(command, path):
        if hasattr(command, "commands"):
            return [name for sub, c in command.commands.items() for name in bare(c, [*path, sub])]
        return [f"{' '.join(path)} {p.name}" for p in command.params if not getattr(p, "help", None)]

    assert bare(typer.main.get_command(app), ["toolkit"]) == []


def test_a_reader_that_stops_early_does_not_turn_success_into_failure(tmp_path):
    """`toolkit data synth` prints its lines into a pipe whose reader has already gone (as
    `| head -1` leaves it): Rich's own handling exited 1; it must exit 0, as without the pipe,
    with nothing on stderr and its work done."""
    code = ("import os, sys\n"
            "r, w = os.pipe()\n"
            "os.close(r)\n"  # the reader is gone before the first line: every write meets a closed pipe
            "os.dup2(w, 1)\n"
            "from toolkit.cli import main\n"
            "main(sys.argv[1:])\n")
    out = tmp_path / "set"
    r = subprocess.run([sys.executable, "-c", code, "data", "synth", "--out", str(out), "--backgrounds", "2",
                        "--foregrounds", "1", "--placements", "1", "--size", "32"],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr)
    assert (out / "dataset.json").is_file()


def test_help_shows_no_bool_on_flags_and_names_arguments_in_capitals(monkeypatch):
    """Every command's --help: a flag takes no value (no `<bool>`), arguments read like [OPTIONS]."""
    import re

    import typer.main
    from typer.testing import CliRunner

    from toolkit.cli import app

    monkeypatch.setenv("COLUMNS", "100")
    group = typer.main.get_command(app)
    paths = [[]] + [[name] for name in group.commands]
    paths += [["data", name] for name in group.commands["data"].commands]
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        usage = next(line for line in result.output.splitlines() if "Usage:" in line)
        for name in re.findall(r"[{\[]([A-Za-z_]+)[}\]]", usage):
            assert name == name.upper(), (path, usage)
