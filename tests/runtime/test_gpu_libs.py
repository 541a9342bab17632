"""Why ONNX Runtime's GPU providers load or not, and the fix each case gets (runtime/gpu_libs.py).

The reading of what ORT prints and the fixes are checked everywhere. The real GPU build of ONNX
Runtime runs in a subprocess when a folder holding it is named by TOOLKIT_TEST_ORT_GPU (`.ci/run`
puts `onnxruntime-gpu` there with `pip install --target`): it cannot share this process's
`onnxruntime` module. Without a GPU it shows the case a user meets most (the GPU wheels on a
machine or container without a driver); on a GPU machine, that the provider really runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli
from toolkit.install import install_hint
from toolkit.runtime import gpu_libs

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
# What onnxruntime-gpu 1.31.1's preload_dlls() printed on a machine without the nvidia-* wheels.
PRELOAD_PRINTED = """Failed to load libcublasLt.so.13: libcublasLt.so.13: cannot open shared object file: No such file or directory
Failed to load libcublas.so.13: libcublas.so.13: cannot open shared object file: No such file or directory
Failed to load libcurand.so.10: libcurand.so.10: cannot open shared object file: No such file or directory
Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.
"""


def test_the_libraries_preload_could_not_load_are_read_from_what_it_prints():
    assert gpu_libs.failed_preloads(PRELOAD_PRINTED) == ["libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10"]
    assert gpu_libs.failed_preloads("") == []


def test_an_installed_gpu_build_under_the_cpu_one_is_rewritten_not_uninstalled(monkeypatch):
    """`pip install '...[gpu]'` leaves the CPU build's files over the GPU build's; uninstalling
    onnxruntime would delete the shared module, so the fix writes the GPU wheel's files again."""
    monkeypatch.setattr(gpu_libs, "distribution_version", lambda name: "1.31.1" if name == "onnxruntime-gpu" else None)
    assert gpu_libs.shadowed_gpu_build(CPU_ONLY) == "1.31.1"
    assert gpu_libs.shadowed_gpu_build(GPU) is None  # the GPU build is the one imported
    why, fix = gpu_libs.ort_gpu_missing(CPU_ONLY)
    assert "onnxruntime-gpu 1.31.1 is installed" in why and "CPU build" in why
    assert fix == "pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"
    assert "uninstall" not in fix


@pytest.mark.parametrize("extra, spec", [("gpu", "'onnxruntime-gpu>=1.31'"), ("gpu-cu12", "'onnxruntime-gpu>=1.21,<1.27'")])
def test_without_a_gpu_build_the_fix_installs_the_extra_then_writes_its_files(monkeypatch, extra, spec):
    monkeypatch.setattr(gpu_libs, "distribution_version", lambda name: None)
    assert gpu_libs.shadowed_gpu_build(CPU_ONLY) is None
    assert gpu_libs.gpu_build_fix(CPU_ONLY, extra) == f"{install_hint(extra)} && pip install --force-reinstall --no-deps {spec}"
    assert gpu_libs.ort_gpu_missing(CPU_ONLY)[0] == "this onnxruntime is the CPU build"


def test_a_provider_that_did_not_load_names_the_driver_before_the_libraries(monkeypatch):
    monkeypatch.setattr(gpu_libs, "driver_problem", lambda: "no NVIDIA driver (libcuda.so.1 does not load)")
    why, fix = gpu_libs.provider_failure("CUDAExecutionProvider", ["libcublas.so.13 not found"])
    assert why == "CUDAExecutionProvider did not load: no NVIDIA driver (libcuda.so.1 does not load)"
    assert fix == "run on a machine with an NVIDIA GPU, or --provider cpu"  # no install fixes a missing GPU
    monkeypatch.setattr(gpu_libs, "driver_problem", lambda: None)
    why, fix = gpu_libs.provider_failure("CUDAExecutionProvider", ["libcublas.so.13, libcurand.so.10 not found"])
    assert why == "CUDAExecutionProvider did not load: libcublas.so.13, libcurand.so.10 not found"
    assert fix.startswith(install_hint("gpu")) and fix.endswith("or --provider cpu")
    assert "another CUDA major" in gpu_libs.provider_failure("TensorrtExecutionProvider", [])[0]


# ---- the real onnxruntime-gpu, in a subprocess ------------------------------------------------


@pytest.fixture(scope="module")
def ort_gpu() -> Path:
    folder = os.environ.get("TOOLKIT_TEST_ORT_GPU", "")
    if not folder or not (Path(folder) / "onnxruntime").is_dir():
        pytest.skip("no onnxruntime-gpu folder given (TOOLKIT_TEST_ORT_GPU, made by .ci/run with pip install --target)")
    return Path(folder)


def _pair(folder: Path) -> tuple[str, str]:
    from PIL import Image

    rng = np.random.default_rng(1)
    for name in ("bg.jpg", "fgbg.jpg"):
        Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8)).save(folder / name)
    return str(folder / "bg.jpg"), str(folder / "fgbg.jpg")


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_the_gpu_build_runs_on_its_provider_or_says_why_not_in_one_line(ort_gpu, trained_onnx, tmp_path, provider):
    bg, fg = _pair(tmp_path)
    r = run_cli("infer", bg, fg, "--model", str(trained_onnx), "--provider", provider, "--out", str(tmp_path / "o"),
                path_first=ort_gpu)
    if gpu_libs.driver_problem() is None:  # a GPU machine: it ran there, on the provider asked for (or TensorRT's libraries are missing: said)
        assert r.returncode == 0 or (provider == "tensorrt" and "TensorrtExecutionProvider did not load" in r.stderr), r.stderr
        return
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()  # ORT's own log of each library it could not load is silenced
    assert f"--provider {provider}: {gpu_libs.GPU_PROVIDERS[provider == 'tensorrt']} did not load: no NVIDIA driver" in line
    assert line.endswith("or --provider cpu") and not (tmp_path / "o").exists()


def test_the_gpu_build_without_a_gpu_is_left_out_of_auto_and_judged_by_doctor(ort_gpu, trained_onnx, tmp_path):
    if gpu_libs.driver_problem() is None:
        pytest.skip("this machine has an NVIDIA driver: the GPU providers are not left out")
    bg, fg = _pair(tmp_path)
    r = run_cli("infer", bg, fg, "--model", str(trained_onnx), "--provider", "auto", "--out", str(tmp_path / "o"), path_first=ort_gpu)
    assert r.returncode == 0, r.stderr
    assert "cuda left out: CUDAExecutionProvider did not load: no NVIDIA driver" in r.stderr
    assert "tensorrt left out: TensorrtExecutionProvider did not load" in r.stderr
    assert "[E:onnxruntime" not in r.stderr and (tmp_path / "o" / "mask.png").is_file()
    d = run_cli("doctor", "--require", "onnxruntime-gpu", path_first=ort_gpu)
    assert d.returncode == 1 and "execution providers listed, but no NVIDIA driver" in d.stdout + d.stderr


def test_with_a_driver_the_missing_libraries_are_named(ort_gpu, trained_onnx, tmp_path):
    """The other case: a driver, but no CUDA/cuDNN wheels (`onnxruntime-gpu` without its extras).
    Where there is no driver, the driver check is set aside to reach it."""
    code = (
        "import sys\nfrom toolkit.runtime import gpu_libs\ngpu_libs.driver_problem = lambda: None\n"
        "from toolkit.runtime.onnx_runner import OnnxRunner\nfrom toolkit.errors import UserError\n"
        f"try:\n    OnnxRunner({str(trained_onnx)!r}, provider='cuda').activate()\nexcept UserError as e:\n    print(e)\n"
        "else:\n    print('ran')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ort_gpu), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout.strip()
    if out == "ran":
        pytest.skip("this machine has the CUDA and cuDNN libraries: nothing is missing")
    assert "--provider cuda: CUDAExecutionProvider did not load: " in out and "not found" in out, out
    assert "libcublas" in out and out.endswith("or --provider cpu") and "\n" not in out
