"""The edge install's promise: the library and CLI import, and .onnx models run, without torch."""

import subprocess
import sys

from tests.conftest import ROOT

EDGE_MODULES = [
    "toolkit.core.spec", "toolkit.render.imageio", "toolkit.verify.metrics", "toolkit.data.names", "toolkit.data.reader",
    "toolkit.data.holdout", "toolkit.data.synth", "toolkit.runtime.base", "toolkit.runtime.onnx_runner",
    "toolkit.verify.compare", "toolkit.tasks.bench", "toolkit.tasks.infer", "toolkit.tasks.doctor", "toolkit.cli",
]


def test_edge_modules_import_without_torch():
    code = (
        "import sys\nsys.modules['torch'] = None\n"
        + "".join(f"import {m}\n" for m in EDGE_MODULES)
        + "assert sys.modules['torch'] is None\nprint('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_help_and_doctor_without_torch(tmp_path):
    import json

    from tests.conftest import run_cli

    r = run_cli("--help", block_torch=True)
    assert r.returncode == 0, r.stderr
    for command in ("train", "export", "infer", "parity", "bench", "import-legacy", "summary", "doctor", "demo", "data"):
        assert command in r.stdout
    r = run_cli("doctor", "--json", str(tmp_path / "d.json"), block_torch=True)
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads((tmp_path / "d.json").read_text())}
    assert checks["torch"]["ok"] is False and "[train]" in checks["torch"]["fix"]
    assert checks["onnxruntime"]["ok"] is True and "CPUExecutionProvider" in checks["onnxruntime"]["verdict"]
