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
from toolkit.core.install import install_hint, pip_command
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
    # a library found in a wheel but not loadable is named by its path, then its name; Windows paths have a drive
    printed = ("Failed to load /v/lib/nvidia/cu13/lib/libcublas.so.13: libcublasLt.so.13: cannot open shared object file\n"
               "Failed to load libcublas.so.13: libcublasLt.so.13: cannot open shared object file\n"
               "Failed to load C:\\py\\Lib\\site-packages\\nvidia\\cu13\\bin\\cublasLt64_13.dll: [WinError 126]\n")
    assert gpu_libs.failed_preloads(printed) == ["libcublas.so.13", "cublasLt64_13.dll"]


def test_a_driver_older_than_the_builds_cuda_names_the_extra_of_its_own(monkeypatch):
    assert gpu_libs.driver_too_old((13, 0), (13, 0)) is None and gpu_libs.driver_too_old((13, 2), (12, 4)) is None
    assert gpu_libs.driver_too_old(None, (13, 0)) is None and gpu_libs.driver_too_old((12, 4), None) is None
    why, fix = gpu_libs.driver_too_old((12, 4), (13, 0))
    assert why == "the NVIDIA driver supports CUDA 12.4, this onnxruntime-gpu is built for CUDA 13.0"
    assert fix == f"update the NVIDIA driver, or {install_hint('gpu-cu12')}"
    assert gpu_libs.driver_too_old((11, 8), (12, 2))[1] == "update the NVIDIA driver"  # no extra for CUDA 11
    monkeypatch.setattr(gpu_libs, "_driver", lambda: (None, (12, 4)))
    monkeypatch.setattr(gpu_libs, "ort_cuda_version", lambda: (13, 0))
    why, fix = gpu_libs.provider_failure("CUDAExecutionProvider", ["libcublas.so.13 could not be loaded"])
    assert why.endswith("built for CUDA 13.0") and fix.endswith("[gpu-cu12]', or --provider cpu")  # the driver first


@pytest.mark.parametrize("version, extra", [("1.31.1", "gpu"), ("1.26.0", "gpu-cu12"), ("1.21.1", "gpu-cu12"), (None, "gpu")])
def test_the_fixes_name_the_extra_the_installed_gpu_build_came_from(monkeypatch, version, extra):
    monkeypatch.setattr(gpu_libs, "distribution_version", lambda name: version)
    assert gpu_libs.installed_extra() == extra


def test_an_installed_gpu_build_under_the_cpu_one_is_rewritten_not_uninstalled(monkeypatch):
    """`pip install '...[gpu]'` leaves the CPU build's files over the GPU build's; uninstalling
    onnxruntime would delete the shared module, so the fix writes the GPU wheel's files again."""
    monkeypatch.setattr(gpu_libs, "distribution_version", lambda name: "1.31.1" if name == "onnxruntime-gpu" else None)
    assert gpu_libs.shadowed_gpu_build(CPU_ONLY) == "1.31.1"
    assert gpu_libs.shadowed_gpu_build(GPU) is None  # the GPU build is the one imported
    why, fix = gpu_libs.ort_gpu_missing(CPU_ONLY)
    assert "onnxruntime-gpu 1.31.1 is installed" in why and "CPU build" in why
    assert fix == f"{pip_command()} install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"
    assert "uninstall" not in fix
    why, fix = gpu_libs.ort_gpu_missing(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "not the TensorRT one" in why and fix == "--provider cuda"  # reinstalling the same build would not add it


@pytest.mark.parametrize("extra, spec", [("gpu", "'onnxruntime-gpu>=1.31'"), ("gpu-cu12", "'onnxruntime-gpu>=1.21,<1.27'")])
def test_without_a_gpu_build_the_fix_installs_the_extra_then_writes_its_files(monkeypatch, extra, spec):
    monkeypatch.setattr(gpu_libs, "distribution_version", lambda name: None)
    assert gpu_libs.shadowed_gpu_build(CPU_ONLY) is None
    assert gpu_libs.gpu_build_fix(extra) == f"{install_hint(extra)} && {pip_command()} install --force-reinstall --no-deps {spec}"
    assert gpu_libs.ort_gpu_missing(CPU_ONLY)[0] == "this onnxruntime is the CPU build"


def test_a_provider_that_did_not_load_names_the_driver_before_the_libraries(monkeypatch):
    monkeypatch.setattr(gpu_libs, "distribution_version", lambda name: None)
    monkeypatch.setattr(gpu_libs, "_driver", lambda: ("no NVIDIA driver (libcuda.so.1 does not load)", None))
    why, fix = gpu_libs.provider_failure("CUDAExecutionProvider", ["libcublas.so.13 not found"])
    assert why == "CUDAExecutionProvider did not load: no NVIDIA driver (libcuda.so.1 does not load)"
    assert fix == "run on a machine with an NVIDIA GPU, or --provider cpu"  # no install fixes a missing GPU
    monkeypatch.setattr(gpu_libs, "_driver", lambda: (None, (13, 0)))
    monkeypatch.setattr(gpu_libs, "ort_cuda_version", lambda: (13, 0))
    why, fix = gpu_libs.provider_failure("CUDAExecutionProvider", ["libcublas.so.13, libcurand.so.10 could not be loaded"])
    assert why == "CUDAExecutionProvider did not load: libcublas.so.13, libcurand.so.10 could not be loaded"
    assert fix.startswith(install_hint("gpu")) and fix.endswith("or --provider cpu")
    assert gpu_libs.provider_failure("TensorrtExecutionProvider", [])[0].endswith("libraries did not load")
    # nothing missing that can be named: what ONNX Runtime said when the provider raised
    assert gpu_libs.provider_failure("TensorrtExecutionProvider", [], "TensorRT parser: bad node") == (
        "TensorrtExecutionProvider could not run the model here (TensorRT parser: bad node)", "--provider cpu")


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
    if gpu_libs.driver_problem() is None:  # a GPU machine: it ran on the provider asked for, or says in one line why not
        if r.returncode != 0:  # this folder holds onnxruntime-gpu alone, not its CUDA/cuDNN wheels
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert f"{gpu_libs.GPU_PROVIDERS[provider == 'tensorrt']} did not load: " in r.stderr
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
        "import sys\nfrom toolkit.runtime import gpu_libs\ngpu_libs._driver = lambda: (None, None)\n"
        "from toolkit.runtime.onnx_runner import OnnxRunner\nfrom toolkit.core.errors import UserError\n"
        f"try:\n    OnnxRunner({str(trained_onnx)!r}, provider='cuda').activate()\nexcept UserError as e:\n    print(e)\n"
        "else:\n    print('ran')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ort_gpu), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout.strip()
    if out == "ran":
        pytest.skip("this machine has the CUDA and cuDNN libraries: nothing is missing")
    assert "--provider cuda: CUDAExecutionProvider did not load: " in out and "could not be loaded" in out, out
    assert "libcublas" in out and out.endswith("or --provider cpu") and "\n" not in out
