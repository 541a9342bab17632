"""The GPU benchmark scripts, run here in their --cpu-smoke mode: every code path at tiny sizes.

They are run on a lent GPU machine once, with minutes of device time: a script that crashes or
writes half a report there wastes the run, so each is exercised end to end on the CPU, as a
subprocess exactly as it will be invoked, and its JSON and markdown are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_script(name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), str(out), "--cpu-smoke", *extra], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_gpu_inference_smoke(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    run_script("gpu_inference.py", out, "--work", str(work))
    assert sorted(p.name for p in out.iterdir()) == ["gpu_inference.json", "gpu_inference.md"]  # the rest goes to --work
    report = json.loads((out / "gpu_inference.json").read_text())
    md = (out / "gpu_inference.md").read_text()
    assert report["skipped"] == [], report["skipped"]  # nothing failed, nothing ran out of budget
    assert report["header"]["size"] == 32 and report["header"]["batches"] == [1, 2]

    # Every configuration was timed at its batches: eager ones at both, compile at 2, reduce-overhead at 1.
    timed = {(r["config"], r["batch"]) for r in report["results"]}
    for graph in ("literal", "folded"):
        for cfg in (f"{graph} fp32", f"{graph} bf16", f"{graph} bf16 + channels_last"):
            assert {(cfg, 1), (cfg, 2)} <= timed
        assert (f"{graph} bf16 + channels_last + compile", 2) in timed
        assert (f"{graph} bf16 + channels_last + compile reduce-overhead", 1) in timed
    assert all(r["images_per_s"] > 0 and r["calls"] >= 3 for r in report["results"])
    assert report["copy"]["images_per_s"] > 0

    # One parity result per configuration, filled in and judged by the thresholds of its precision.
    parity = {p["model"]: p for p in report["parity"]}
    assert set(parity) == {r["config"] for r in report["results"]}
    for p in parity.values():
        assert p["pairs"] >= 2 and p["passed"] is True and not p["failures"], p
        assert None not in (p["mask_iou"], p["mask_dice"], p["depth_rmse"], p["max_abs"]["mask"], p["max_abs"]["depth"])
    assert parity["literal fp32"]["max_abs"] == {"mask": 0.0, "depth": 0.0}  # the reference itself
    assert 0 < parity["folded fp32"]["max_abs"]["depth"] < 1e-4  # same function, other order of additions
    assert parity["folded fp32"]["thresholds"]["max_abs"] == 1e-4 and parity["literal bf16"]["thresholds"]["depth_rmse"] == 0.01

    # ONNX: what was tried for the GPU runtimes that this machine lacks, the five exports, CPU reference rows, parity.
    o = report["onnx"]
    tried = "\n".join(o["tried"])
    for line in ("onnxruntime TensorrtExecutionProvider: missing", "onnxruntime CUDAExecutionProvider: missing", "import tensorrt: missing"):
        assert line in tried and f"- {line}" in md
    files = {e["file"]: e for e in o["exports"]}
    assert set(files) == {"onnx/model.onnx", "onnx/model.fp16.onnx", "onnx/model.int8.onnx",
                          "onnx-int8-tensorrt/model.int8.onnx", "onnx-literal/model.onnx"}
    assert all((work / f).is_file() for f in files)
    assert "target tensorrt" in files["onnx-int8-tensorrt/model.int8.onnx"]["summary"]
    assert isinstance(files["onnx/model.int8.onnx"]["gate_passed"], bool)
    assert "reference only" in o["note"] and {r["model"] for r in o["rows"]} == set(files)
    assert all(r["batch"] == 2 and "CPUExecutionProvider" in r["runtime"] and r["images_per_s"] > 0 for r in o["rows"])
    assert {p["model"]: p["precision"] for p in o["parity"]} == {f: e["precision"] for f, e in files.items()}
    assert all(p["mask_iou"] is not None and p["depth_rmse"] is not None for p in o["parity"])

    for heading in ("## PyTorch", "### Parity vs literal fp32 eager", "## ONNX", "### ONNX parity vs the PyTorch fp32 checkpoint"):
        assert heading in md
    assert "| literal fp32 | 2 |" in md and "| 1.00x |" in md and "Seed network on an NVIDIA H200" in md


def test_gpu_train_smoke(tmp_path):
    out = tmp_path / "out"
    run_script("gpu_train.py", out)
    report = json.loads((out / "gpu_train.json").read_text())
    md = (out / "gpu_train.md").read_text()
    assert [r["config"] for r in report["results"]] == ["fp32 NCHW", "bf16 + channels_last + polyphase",
                                                        "bf16 + channels_last + polyphase, sync each step"]
    # train.speed refuses bf16 + channels_last on the CPU without the polyphase conv (oneDNN's wrong
    # weight gradients): the script records that as one line and goes on.
    [(name, why)] = report["skipped"]
    assert name == "bf16 + channels_last" and why.startswith("failed: UserError") and "polyphase" in why
    assert f"| {name} | | skipped: failed: UserError" in md
    assert all(r["images_per_s"] > 0 and r["batch"] == 2 for r in report["results"])
    assert report["polyphase_check"] and all(c["ok"] for c in report["polyphase_check"])
    assert len(report["profiles"]) == 2
    assert "| fp32 NCHW | 2 |" in md and "Polyphase depthwise vs the fp32 reference" in md


def test_gpu_runtimes_reports_each_test_and_why_it_could_not_run(tmp_path):
    """What a GPU session reports: per test, ran or why not; a test not started in time is said."""
    env = {k: v for k, v in os.environ.items() if k != "TOOLKIT_TEST_ORT_GPU"}  # its real-GPU-build tests skip, with their reason
    env["PYTHONPATH"] = str(ROOT)
    script = str(ROOT / "benchmarks" / "gpu_runtimes.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "a"), "--tests", "tests/runtime/test_gpu_libs.py"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "a" / "gpu_runtimes.json").read_text())
    passed = report["counts"]["passed"]
    assert passed >= 5 and report["counts"] == {"passed": passed, "skipped": 4} and report["failed"] == []
    assert [c["tests"] for c in report["could_not_run"]] == [4] and "TOOLKIT_TEST_ORT_GPU" in report["could_not_run"][0]["why"]
    assert {m["name"] for m in report["machine"]} >= {"onnxruntime", "tensorrt", "cuda-python"}  # doctor's checks head it
    md = (tmp_path / "a" / "gpu_runtimes.md").read_text()
    assert f"| ONNX Runtime's GPU build: driver, libraries | {passed} | 0 | 4 |" in md and "Could not run here:" in md
    late = subprocess.run([sys.executable, script, str(tmp_path / "b"), "--seconds", "0", "--tests", "tests/core/test_install.py"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert late.returncode == 0, late.stderr[-2000:]
    late_report = json.loads((tmp_path / "b" / "gpu_runtimes.json").read_text())
    assert late_report["counts"] == {"skipped": late_report["counts"]["skipped"]} and late_report["counts"]["skipped"] >= 5
    assert late_report["could_not_run"][0]["why"] == "the run's time was spent before this test started"


def test_a_benchmark_run_on_a_busy_machine_ends_with_the_warning(monkeypatch, capsys):
    """Every benchmark that prints through `emit` (cpu_inference, fixed_camera, int8_search,
    temporal, adaptation) says when other work shared the CPUs (the load is faked here)."""
    import benchmarks.cpu_inference as bench_common
    from toolkit.tasks.busy import BusyCheck

    readings = iter((2.7, 2.9))
    monkeypatch.setattr(bench_common, "BUSY", BusyCheck(lambda: next(readings), cpus=2).start())
    bench_common.emit(["| row |"], None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| row |" and lines[-1].startswith("warning: the machine was busy during this run (load average 2.7 before")
    idle = iter((0.2, 1.1))
    monkeypatch.setattr(bench_common, "BUSY", BusyCheck(lambda: next(idle), cpus=2).start())
    bench_common.emit(["| row |"], None)
    assert capsys.readouterr().out.splitlines() == ["| row |"]
    busy = iter((0.5, 3.4))  # idle before, more runnable tasks than CPUs after: others joined
    monkeypatch.setattr(bench_common, "BUSY", BusyCheck(lambda: next(busy), cpus=2).start())
    bench_common.say_if_busy()  # the benchmarks that print their own lines end with it
    assert capsys.readouterr().out.startswith("warning: the machine was busy during this run (load average 0.5 before, 3.4 after")


def test_every_benchmark_ends_with_the_busy_check():
    """Each script that times something prints through `emit` or ends with `say_if_busy()`,
    both of which read the load that `benchmarks.cpu_inference` took when it was imported."""
    import ast

    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(script.read_text())
        mains = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main"]
        if not mains or script.name in ("gpu_runtimes.py",):  # gpu_runtimes runs the GPU tests: it times nothing
            continue
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert called & {"emit", "say_if_busy"}, f"{script.name} never says when the machine was busy"
