"""`toolkit doctor`: always exit 0, unless `--require` names something that is not usable here."""

from __future__ import annotations

import pytest

from toolkit.cli import main
from toolkit.core.errors import UserError
from toolkit.core.install import install_hint, pip_command
from toolkit.tasks.doctor import REQUIREMENTS, Check, parse_requirements, run_checks, unmet_requirements


def _run(argv, capfd):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capfd.readouterr()
    return int(e.value.code or 0), out, [line for line in err.splitlines() if line.strip()]


def test_parse_requirements_takes_comma_lists_repeats_and_aliases():
    assert parse_requirements(["cuda,TensorRT", " torch ", "cuda", "trt,,pil"]) == ["cuda", "tensorrt", "torch", "pillow"]
    assert parse_requirements([]) == []
    with pytest.raises(UserError, match="unknown requirement 'tensorflow' \\(known: python, numpy"):
        parse_requirements(["torch,tensorflow"])


def _checks(torch_verdict: str, torch_ok: bool = True) -> list[Check]:
    return [
        Check("python", "3.12", True, "linux"),
        Check("torch", "2.13" if torch_ok else "-", torch_ok, torch_verdict, "" if torch_ok else install_hint("train")),
        Check("onnxruntime GPU providers", "1.23", False, "missing: CUDA and TensorRT execution providers", "pip uninstall x"),
        Check("tensorrt", "10.13.0.35", True, "engines can be built"),
    ]


def test_cuda_means_pytorch_sees_a_cuda_device():
    gpu = _checks("CUDA 12.8: NVIDIA H100, compute 9.0, 80 GiB; cuDNN 91000")
    cpu = _checks("CPU only (no CUDA device): training runs on the CPU")
    assert unmet_requirements(["cuda", "torch", "tensorrt"], gpu) == []
    [line] = unmet_requirements(["cuda", "torch", "tensorrt"], cpu)
    assert line.startswith("required cuda is not usable: CPU only") and "CUDA build of PyTorch" in line
    lines = unmet_requirements(["cuda", "torch", "onnxruntime-gpu"], _checks("missing: train ...", torch_ok=False))
    assert [x.split(" is ")[0] for x in lines] == ["required cuda", "required torch", "required onnxruntime-gpu"]
    assert all("fix: " in x for x in lines)


def test_every_requirement_names_a_real_check():
    names = {c.name for c in run_checks()}
    assert {check for check, _ in REQUIREMENTS.values()} <= names


def test_doctor_exits_0_without_requirements_and_with_met_ones(capfd):
    code, out, err = _run(["doctor", "--require", "python,numpy", "--require", "pillow,onnx,onnxruntime"], capfd)
    assert code == 0 and err == [] and "toolkit doctor" in out


def test_doctor_exits_1_with_one_line_per_unmet_requirement(capfd):
    checks = {c.name: c for c in run_checks()}
    unmet = [name for name in ("tensorrt", "cuda", "onnxruntime-gpu")
             if not REQUIREMENTS[name][1](checks.get(REQUIREMENTS[name][0], Check("", "", False, "")))]
    if not unmet:
        pytest.skip("this machine has TensorRT, CUDA and the ONNX Runtime GPU providers: nothing to fail")
    code, out, err = _run(["doctor", "--require", ",".join(["numpy", *unmet])], capfd)
    assert code == 1
    assert [line.split(" is not usable")[0] for line in err] == [f"error: required {n}" for n in unmet]


def test_doctor_refuses_an_unknown_requirement_with_exit_2(capfd):
    code, out, err = _run(["doctor", "--require", "cuda,warp-drive"], capfd)
    assert code == 2 and len(err) == 1 and "unknown requirement 'warp-drive'" in err[0]
    assert out == ""  # refused before checking anything


def test_every_fix_is_this_installs_command(monkeypatch):
    import toolkit.tasks.doctor as doctor
    from toolkit.core.errors import MissingDependency

    def missing(*_):
        raise MissingDependency("it", "video")

    monkeypatch.setattr(doctor, "_module", lambda name: None)  # nothing importable
    monkeypatch.setattr("toolkit.deploy.video.require_av", missing)
    monkeypatch.setattr("toolkit.deploy.service.require_serve", missing)
    fixes = {c.name: c.fix for c in run_checks()}
    assert not any("'toolkit[" in fix or fix == "pip install toolkit" for fix in fixes.values()), fixes
    assert fixes["numpy"] == install_hint() and fixes["torch"] == install_hint("train")
    assert fixes["tensorrt"] == fixes["cuda-python"] == install_hint("gpu")
    assert fixes["PyAV"] == install_hint("video") and fixes["serve extra"] == install_hint("serve")
    [line] = unmet_requirements(["cuda"], [Check("torch", "2.13", True, "CPU only")])
    assert install_hint("train") in line
    cpu_ort = type("ort", (), {"__version__": "1.23", "get_available_providers": staticmethod(lambda: ["CPUExecutionProvider"])})
    monkeypatch.setattr(doctor, "_module", lambda name: cpu_ort if name == "onnxruntime" else None)
    monkeypatch.setattr("toolkit.runtime.gpu_libs.distribution_version", lambda name: None)  # no GPU build at all
    fix = doctor._ort_gpu_providers().fix
    assert fix.startswith(install_hint("gpu") + f" && {pip_command()} install --force-reinstall --no-deps 'onnxruntime-gpu>=")  # they share one folder
    assert "uninstall" not in fix  # uninstalling onnxruntime deletes the files both builds share
    cuda_only = type("ort", (), {"__version__": "1.31", "get_available_providers": staticmethod(
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])})
    monkeypatch.setattr(doctor, "_module", lambda name: cuda_only if name == "onnxruntime" else None)
    monkeypatch.setattr("toolkit.runtime.gpu_libs.driver_problem", lambda: None)
    assert doctor._ort_gpu_providers().fix == "--provider cuda"  # what the runner says: a reinstall would not add TensorRT


def test_doctor_judges_pyav_and_serve_as_stream_and_serve_do(monkeypatch):
    from toolkit.core.errors import MissingDependency

    checks = {c.name: c for c in run_checks()}
    assert checks["PyAV"].ok and checks["serve extra"].ok  # the dev install has both (pyproject's dev extra)
    assert parse_requirements(["av", "video,serve"]) == ["pyav", "serve"]
    assert unmet_requirements(["pyav", "serve"], list(checks.values())) == []

    def missing():
        raise MissingDependency("Starlette", "serve")

    monkeypatch.setattr("toolkit.deploy.service.require_serve", missing)
    serve = next(c for c in run_checks() if c.name == "serve extra")
    assert not serve.ok and "`toolkit serve` disabled" in serve.verdict
