"""Every table the CLI prints is whole at 80 and at 200 columns: no line wider, no cell cut ("…")."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from toolkit.cli import main
from toolkit.cli.tables import Col, show_table

WIDTHS = (80, 200)


def _fits(lines: list[str], width: int) -> None:
    assert not any("…" in line or len(line) > width for line in lines), "\n".join(lines)


@pytest.fixture
def run_at(monkeypatch, capsys):
    """`toolkit ARGS` in this process with COLUMNS=width: its stdout lines (exit 0), checked to fit
    unless `fit=False`."""

    def run(width: int, *args, fit: bool = True) -> list[str]:
        monkeypatch.setenv("COLUMNS", str(width))
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        out = capsys.readouterr().out
        assert e.value.code in (0, None), out
        if fit:
            _fits(out.splitlines(), width)
        return out.splitlines()

    return run


@pytest.fixture(scope="module")
def data_set(tmp_path_factory):
    from toolkit.data.synth import synthesize

    out = tmp_path_factory.mktemp("tables") / "set"
    synthesize(out, backgrounds=2, foregrounds=1, placements=1, size=32, seed=0)
    return out


def test_parity(run_at, exported_onnx):
    for width in WIDTHS:  # an .onnx as its own reference: the layout is under test, not torch
        out = "\n".join(run_at(width, "parity", "--model", exported_onnx, "--reference", exported_onnx, "--limit", "1"))
        assert "model.onnx" in out and "PASS" in out and "fp32 thresholds: max |d| <= 1e-04, mask IoU >= 0.999" in out


def test_doctor(run_at):
    for width in WIDTHS:
        out = "\n".join(run_at(width, "doctor"))
        assert "onnxruntime GPU providers" in out and "PyAV" in out and "serve extra" in out and "ok arrays" in out


def test_bench(run_at, exported_onnx):
    for width in WIDTHS:
        out = "\n".join(run_at(width, "bench", "--model", exported_onnx, "--baseline", exported_onnx, "--batch", "1",
                               "--iters", "1", "--warmup", "0"))
        assert "model.onnx" in out and "128x128" in out and "1.00x" in out


def test_data_stats_and_check(run_at, data_set):
    for width in WIDTHS:
        out = "\n".join(run_at(width, "data", "stats", data_set))
        assert "original mean" in out and "depth" in out
        out = "\n".join(run_at(width, "data", "check", data_set))
        assert "image sizes" in out and "data check passed" in out


def test_summary_table(run_at):
    for width in WIDTHS:  # the explanation after the table is a sentence, left for the terminal to wrap
        lines = run_at(width, "summary", fit=False)
        table = lines[: next(i for i, line in enumerate(lines) if "layer calls" in line)]
        _fits(table, width)
        assert any("convblock8_.0" in line and "[-1, 1, 128, 128]" in line and "(1,152 shared)" in line for line in table)


def test_optional_columns_go_first_then_rows_become_blocks():
    cols = (Col("model"), Col("extra", optional=True), Col("figure", right=True), Col("verdict", prose=True, verdict=True))
    rows = [("m.onnx", "x" * 30, "0.9", "PASS")]

    def text(width, **kw):
        out = Console(width=width, record=True, file=io.StringIO())
        show_table("t", cols, rows, out=out, **kw)
        return out.export_text()

    assert "xxxx" in text(80) and "left out" not in text(80)
    assert "xxxx" not in text(40) and "(extra left out to fit 40 columns; --wide shows every column)" in " ".join(text(40).split())
    blocks = [line.rstrip() for line in text(40, wide=True).splitlines()]
    assert blocks[1:3] == ["m.onnx", "  verdict  PASS"] and all(len(line) <= 40 for line in blocks)
