"""bench: percentiles and same-run ratios against a PyTorch eager baseline."""

import json

import pytest

from tests.conftest import run_cli
from toolkit.core.errors import UserError
from toolkit.tasks.bench import bench, with_baseline


def test_baseline_is_the_source_checkpoint(exported_onnx, imported_ckpt, tmp_path):
    import shutil

    model = shutil.copy(exported_onnx, tmp_path / "model.onnx")
    shutil.copy(imported_ckpt, tmp_path / imported_ckpt.name)  # found beside the model via its metadata
    models, note = with_baseline([model], None)
    assert models[0].suffix == ".pt" and "PyTorch eager" in note
    models, note = with_baseline([model], model)
    assert models == [model] and "given" in note


def test_rows_and_ratios(exported_onnx, imported_ckpt):
    rows = bench([imported_ckpt, exported_onnx], [1, 2], warmup=0, iters=2, threads=1)
    assert [(r.backend, r.batch) for r in rows] == [("pytorch", 1), ("pytorch", 2), ("onnxruntime", 1), ("onnxruntime", 2)]
    for r in rows:
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms and r.images_per_s > 0
    assert rows[0].speedup == 1.0 and rows[2].speedup == pytest.approx(rows[2].images_per_s / rows[0].images_per_s)
    for r in rows:  # images/s is the batch over the median call: the statistic of the p50 beside it
        assert r.images_per_s == pytest.approx(r.batch * 1000 / r.p50_ms)


def fake_load(*readings):
    """A load average that reads `readings` in turn (before the timing, after it)."""
    values = iter(readings)
    return lambda: next(values)


@pytest.mark.parametrize("before, after, busy", [(2.6, 2.9, True), (0.3, 2.2, False), (0.4, 3.1, True), (None, None, False)])
def test_a_busy_machine_is_said(exported_onnx, before, after, busy):
    """bench on 2 CPUs beside another job (load 2.4-2.9 there): the figures come with a warning."""
    from toolkit.tasks.busy import BusyCheck

    check = BusyCheck(fake_load(before, after), cpus=2).start()
    line = check.note("times and ratios")
    assert (line is not None) is busy
    if busy:
        assert line.startswith(f"warning: the machine was busy during this run (load average {before:.1f} before, {after:.1f} after, on 2 CPUs)")
    notes = []
    bench([exported_onnx], [1], warmup=0, iters=1, on_note=notes.append, load=fake_load(2.6, 2.9))
    assert any(n.startswith("warning: the machine was busy") for n in notes)  # whatever this machine's real load
    notes = []
    bench([exported_onnx], [1], warmup=0, iters=1, on_note=notes.append, load=fake_load(0.1, 1.0))
    assert not any("busy" in n for n in notes)


def test_bad_options(exported_onnx):
    with pytest.raises(UserError, match="batch sizes"):
        bench([exported_onnx], [0])
    with pytest.raises(UserError, match="threads"):
        bench([exported_onnx], [1], threads=0)


def test_cli_json(exported_onnx, imported_ckpt, tmp_path):
    r = run_cli("bench", "--model", str(exported_onnx), "--baseline", str(imported_ckpt), "--batch", "1",
                "--iters", "2", "--warmup", "0", "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "b.json").read_text())
    assert [row["backend"] for row in rows] == ["pytorch", "onnxruntime"]
    assert {(row["height"], row["width"]) for row in rows} == {(128, 128)}  # the input size timed, beside every row
    assert "speed-up vs the baseline" in r.stdout


def test_one_table_over_two_runtimes(exported_onnx):
    pytest.importorskip("openvino", reason="openvino is not installed (its extra)")
    rows = bench([exported_onnx], [1], warmup=1, iters=2, provider="cpu,openvino")
    assert [(r.backend, r.batch) for r in rows] == [("onnxruntime", 1), ("openvino", 1)]
    assert rows[0].speedup == 1.0 and rows[1].speedup > 0


def test_onnx_runtime_threads_do_not_spin_in_bench(exported_onnx, monkeypatch):
    import onnxruntime as ort

    seen = []
    real = ort.InferenceSession

    def recording(path, options=None, *args, **kwargs):
        seen.append(options.get_session_config_entry("session.intra_op.allow_spinning") if options else None)
        return real(path, options, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    bench([exported_onnx], [1], warmup=0, iters=1)
    assert seen and set(seen) == {"0"}


def test_rows_of_two_models_with_one_file_name_are_told_apart():
    from toolkit.cli.run_cmd import short_names

    names = short_names(["x/folded/model.onnx", "x/literal/model.onnx", "run/best.pt"])
    assert names == {"x/folded/model.onnx": "folded/model.onnx", "x/literal/model.onnx": "literal/model.onnx", "run/best.pt": "best.pt"}


def test_what_each_runtime_fell_back_to_is_said_and_the_backend_names_its_provider(exported_onnx, imported_ckpt):
    """`--provider cuda` on this onnxruntime: the note says it ran on the CPU (bench used to say
    nothing, and CPU figures read as CUDA ones), and the backend column names what ran it."""
    import onnxruntime as ort

    from toolkit.runtime.gpu_libs import driver_problem

    notes = []
    if "CUDAExecutionProvider" in ort.get_available_providers() and driver_problem():  # the GPU build without a GPU
        with pytest.raises(UserError, match="CUDAExecutionProvider did not load: "):
            bench([exported_onnx], [1], warmup=0, iters=2, provider="cuda")
        return
    rows = bench([exported_onnx], [1], warmup=0, iters=2, provider="cuda", on_note=notes.append,
                 load=lambda: None)  # this machine's own load would add its warning (tested apart)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert rows[0].backend == "onnxruntime (CUDA)"
    else:
        assert rows[0].backend == "onnxruntime" and len(notes) == 1 and "CUDAExecutionProvider is not available" in notes[0]
    r = run_cli("bench", "--model", str(exported_onnx), "--baseline", str(imported_ckpt), "--batch", "1", "--iters", "2",
                "--warmup", "0", "--provider", "cuda")
    assert r.returncode == 0, r.stderr
    if not notes:
        return
    assert f"note: {notes[0][:60]}" in " ".join(r.stderr.split())  # said on the console too (before the table)
