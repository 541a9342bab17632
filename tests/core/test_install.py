"""Install hints name this project, said right for how it was installed; a build leaves the tree clean."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
import tomllib

from tests.conftest import ROOT
from toolkit.core.install import DISTRIBUTION, hint_for, install_hint, source_of


def test_the_distribution_has_a_name_of_its_own():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "eva4-toolkit"  # `toolkit` on the index is another project
    assert project["scripts"] == {"toolkit": "toolkit.cli:main"}


@pytest.mark.parametrize("record, extra, hint", [
    (None, "gpu", "pip install 'eva4-toolkit[gpu]'"),  # a wheel from an index: no direct_url.json
    ({"url": "file:///src/eva4", "dir_info": {"editable": True}}, "train", "pip install -e '/src/eva4[train]'"),
    ({"url": "file:///src/eva4", "dir_info": {}}, "video", "pip install '/src/eva4[video]'"),
    ({"url": "file:///my%20code/eva4", "dir_info": {"editable": True}}, None, "pip install -e '/my code/eva4'"),
    ({"url": "file:///dl/eva4_toolkit-0.1.0-py3-none-any.whl", "archive_info": {}}, "serve",
     "pip install '/dl/eva4_toolkit-0.1.0-py3-none-any.whl[serve]'"),  # never the index: the name may not be there
    ({"url": "https://example.org/eva4.tar.gz", "archive_info": {}}, "gpu", "pip install 'eva4-toolkit[gpu] @ https://example.org/eva4.tar.gz'"),
])
def test_hints_follow_the_install(record, extra, hint):
    assert hint_for(source_of(record), extra) == hint


def test_the_pip_of_a_fix_is_the_one_of_this_interpreter():
    """An activated environment's (or the system's) pip sits beside its python: `pip`. A venv run
    without activating it (a service, /opt/venv/bin/toolkit) would install elsewhere with `pip`."""
    from toolkit.core.install import pip_command

    assert pip_command("/opt/venv/bin/python", "/opt/venv/bin/pip") == "pip"
    assert pip_command("/opt/venv/bin/python", "/usr/bin/pip") == "/opt/venv/bin/python -m pip"
    assert pip_command("/opt/my venv/bin/python", "") == "'/opt/my venv/bin/python' -m pip"  # no pip on PATH at all
    assert hint_for(None, "gpu", pip="/opt/venv/bin/python -m pip") == "/opt/venv/bin/python -m pip install 'eva4-toolkit[gpu]'"


def test_this_checkout_hints_at_itself():
    from toolkit.core.install import pip_command

    hint = install_hint("train")
    assert hint.startswith(f"{pip_command()} install") and "[train]" in hint
    assert str(ROOT) in hint or "eva4-toolkit[train]" in hint


def test_no_hint_is_written_by_hand():
    """Every hint comes from toolkit.core.install: no string in the library spells one out."""
    spelled = []
    for package in ("toolkit", "train", "export"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"(?<![\w-])toolkit\[", node.value):
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert spelled == []


def test_building_a_wheel_leaves_no_build_folder(tmp_path):
    """With the installed build backend (the dev extra has hatchling) and no index: offline."""
    before = {p.name for p in ROOT.iterdir()}
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(ROOT),
                        "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in tmp_path.glob("*.whl")] == ["eva4_toolkit-0.1.0-py3-none-any.whl"]
    assert {p.name for p in ROOT.iterdir()} - before == set()  # no build/, no *.egg-info


def test_each_gpu_extra_is_one_cuda_major_and_tensorrt_10():
    """ONNX Runtime's TensorRT provider links libnvinfer.so.10: an unpinned `tensorrt` resolves to
    11 and the provider cannot load; cuda-python and the TensorRT wheel must name the same CUDA."""
    import re

    from tests.conftest import ROOT
    from toolkit.runtime.gpu_libs import ORT_GPU_PINS

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    gpu = {k: v for k, v in extras.items() if k.startswith("gpu")}
    assert set(gpu) == {"gpu", "gpu-cu12"}
    for name, reqs in gpu.items():
        trt = next(r for r in reqs if r.startswith("tensorrt"))
        cuda = next(r for r in reqs if r.startswith("cuda-python"))
        major = re.match(r"tensorrt-cu(\d+)", trt).group(1)
        assert "<11" in trt, f"{name}: {trt} must stay on TensorRT 10"
        assert re.search(rf"<{int(major) + 1}\b", cuda) and (f">={major}" in cuda), f"{name}: {cuda} is not CUDA {major}"
        [ort] = [r for r in reqs if r.startswith("onnxruntime-gpu")]
        assert ort == f"onnxruntime-gpu[cuda,cudnn]{ORT_GPU_PINS[name]}", "the CUDA/cuDNN wheels, and the pin the fixes name"
        readme = (ROOT / "README.md").read_text()
        assert f"pip install '.[{name}]' && pip install --force-reinstall --no-deps 'onnxruntime-gpu{ORT_GPU_PINS[name]}'" in readme
