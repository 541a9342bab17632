"""OpenVINO as a runtime for the .onnx files: picked by --provider, same answers, falls back with a note."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_cli
from toolkit.core.errors import UserError
from toolkit.core.install import install_hint
from toolkit.runtime.openvino_runner import plan_device


def test_device_plan_falls_back_to_the_cpu_with_a_note():
    assert plan_device("openvino", ["CPU"]) == ("CPU", [])
    assert plan_device("openvino:GPU", ["CPU", "GPU.0"]) == ("GPU", [])
    device, notes = plan_device("openvino:npu", ["CPU"])
    assert device == "CPU" and notes == ["OpenVINO has no NPU device here (it has CPU): using CPU"]
    with pytest.raises(UserError, match="unknown OpenVINO device 'TPU'"):
        plan_device("openvino:TPU", ["CPU"])


def test_parity_passes_at_the_fp32_thresholds_on_openvino(exported_onnx, imported_ckpt):
    pytest.importorskip("openvino", reason="openvino is not installed (its extra)")
    from toolkit.verify.parity import run_parity

    report = run_parity([exported_onnx], imported_ckpt, limit=4, batch_size=2, provider="openvino")
    r = report.results[0]
    assert report and r.backend == "openvino" and max(r.max_abs.values()) <= 1e-4, r.failures


def test_infer_on_a_missing_device_notes_the_fallback(exported_onnx, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed (its extra)")
    from PIL import Image

    for name in ("bg.png", "fgbg.png"):
        Image.new("RGB", (64, 48), (90, 120, 150)).save(tmp_path / name)
    r = run_cli("infer", str(tmp_path / "bg.png"), str(tmp_path / "fgbg.png"), "--model", str(exported_onnx),
                "--provider", "openvino:NPU", "--out", str(tmp_path / "out"), block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "OpenVINO has no NPU device here" in r.stderr and (tmp_path / "out" / "panel.png").is_file()


def test_missing_openvino_names_its_extra(exported_onnx):
    code = ("import sys\nsys.modules['openvino'] = None\nfrom toolkit.runtime import open_runner\n"
            "from toolkit.core.errors import UserError\n"
            f"try:\n    open_runner({str(exported_onnx)!r}, provider='openvino')\nexcept UserError as e:\n    print(e)\n")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"OpenVINO \(needed for --provider openvino\) is not installed: " + re.escape(install_hint("openvino")), out), out
