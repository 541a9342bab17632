"""ONNX Runtime provider choice: TensorRT EP -> CUDA EP -> CPU, with a note for every fallback.

The chain logic and the TensorRT EP options are checked everywhere; the sessions run on whatever
this onnxruntime has (CPU only here; the GPU providers with onnxruntime-gpu on a GPU machine)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import golden_inputs
from toolkit.core.errors import UserError
from toolkit.core.install import install_hint, pip_command
from toolkit.runtime import open_runner
from toolkit.runtime.gpu_libs import driver_problem
from toolkit.runtime.onnx_runner import (
    EP_NAMES,
    OnnxRunner,
    ProviderUnavailable,
    ort_reason,
    plan_providers,
    prepare_cache_dir,
    trt_cache_dir,
    trt_provider_options,
)

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.mark.parametrize(
    "requested, available, chosen, note",
    [
        ("cpu", [CPU], ["cpu"], None),
        ("cpu", [TRT, CUDA, CPU], ["cpu"], None),
        ("cuda", [CUDA, CPU], ["cuda", "cpu"], None),
        ("cuda", [CPU], ["cpu"], "CUDAExecutionProvider is not available"),
        ("tensorrt", [TRT, CUDA, CPU], ["tensorrt", "cuda", "cpu"], None),
        ("tensorrt", [CUDA, CPU], ["cuda", "cpu"], "TensorrtExecutionProvider is not available"),
        ("tensorrt", ["AzureExecutionProvider", CPU], ["cpu"], "TensorrtExecutionProvider and CUDAExecutionProvider are not available"),
    ],
)
def test_plan_providers(requested, available, chosen, note, monkeypatch):
    monkeypatch.setattr("toolkit.runtime.gpu_libs.distribution_version", lambda name: None)  # no GPU build installed
    got, notes = plan_providers(requested, available)
    assert got == chosen
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and note in notes[0] and "\n" not in notes[0]
        assert f"using {EP_NAMES[chosen[0]]}" in notes[0]
        assert install_hint("gpu") in notes[0] if chosen[0] == "cpu" else notes[0].endswith("--provider cuda")  # a build without TensorRT


def test_unknown_provider_is_a_user_error(exported_onnx):
    with pytest.raises(UserError, match="unknown ONNX Runtime provider 'gpu'"):
        plan_providers("gpu", [CPU])
    with pytest.raises(UserError, match="unknown ONNX Runtime provider 'gpu'"):
        OnnxRunner(exported_onnx, provider="gpu")
    with pytest.raises(UserError, match="1 <= min <= opt <= max"):
        OnnxRunner(exported_onnx, provider="tensorrt", trt_batch=(4, 2, 8))


def test_trt_options_cover_both_inputs(tmp_path):
    opts = trt_provider_options(tmp_path / "c", 128, 96, (1, 8, 32))
    assert opts["trt_profile_min_shapes"] == "bg:1x3x128x96,fgbg:1x3x128x96"
    assert opts["trt_profile_opt_shapes"] == "bg:8x3x128x96,fgbg:8x3x128x96"
    assert opts["trt_profile_max_shapes"] == "bg:32x3x128x96,fgbg:32x3x128x96"
    assert opts["trt_engine_cache_enable"] == opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(tmp_path / "c")
    assert not any(k in opts for k in ("trt_fp16_enable", "trt_int8_enable"))  # strongly typed: precision from the model
    assert "trt_engine_cache_path" not in trt_provider_options(None, 8, 8)
    assert trt_cache_dir(tmp_path / "model.onnx") == tmp_path / "model.onnx.ort-trt-cache"


def test_cache_dir_is_wiped_when_the_stamp_changes(tmp_path):
    cache = tmp_path / "m.onnx.ort-trt-cache"
    stamp = {"model_sha256": "a", "onnxruntime": "1.32.0", "tensorrt": "?", "gpu": "?"}
    prepare_cache_dir(cache, stamp)
    (cache / "engine.bin").write_bytes(b"cached")
    prepare_cache_dir(cache, stamp)
    assert (cache / "engine.bin").exists()  # same model/ORT/TRT/GPU: kept
    prepare_cache_dir(cache, stamp | {"gpu": "NVIDIA L4 (8.9)"})
    assert not (cache / "engine.bin").exists()
    assert json.loads((cache / "toolkit-stamp.json").read_text())["gpu"] == "NVIDIA L4 (8.9)"


def test_cpu_default_is_unchanged(exported_onnx):
    r = OnnxRunner(exported_onnx)
    assert r.provider == "cpu" and r.providers == [] and r.notes == []  # no session until activate()
    with r:
        assert r.providers == [CPU] and r.notes == [] and r.backend_used == "onnxruntime"
    if TRT not in ort.get_available_providers():
        assert not trt_cache_dir(exported_onnx).exists()  # the cache folder is only made for the TensorRT EP


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_runs_or_falls_back_with_a_note(exported_onnx, provider):
    available = ort.get_available_providers()
    runner = open_runner(exported_onnx, provider=provider)
    if EP_NAMES[provider] in available and driver_problem():  # the GPU build without a GPU: one line, never a CPU run
        with pytest.raises(ProviderUnavailable, match=f"{EP_NAMES[provider]} did not load: no NVIDIA driver") as e:
            runner.activate()
        assert "\n" not in str(e.value) and not runner.active
        return
    runner.activate()  # a listed provider that fails to load raises
    assert runner.providers, "the session reports the providers it uses"
    assert runner.providers[-1] == CPU
    if EP_NAMES[provider] in available:  # a GPU machine: the provider asked for is the one in use, never a silent CPU run
        assert runner.providers[0] == EP_NAMES[provider] and runner.uses_requested_provider
        assert runner.backend_used == f"onnxruntime ({EP_NAMES[provider].removesuffix('ExecutionProvider')})"  # what reports say
    else:  # not in this onnxruntime at all: the CPU, and a note that says so and how to install it
        assert runner.providers == [CPU] and any("not available in this onnxruntime" in n for n in runner.notes)
        assert all("\n" not in n for n in runner.notes)
    bg, fg = golden_inputs()
    feed = {"bg": np.repeat(bg, 2, 0), "fgbg": np.repeat(fg, 2, 0)}
    with runner, OnnxRunner(exported_onnx) as cpu:
        got, want = runner.infer(feed), cpu.infer(feed)
    on_cpu_only = runner.providers == [CPU]
    for name in ("mask", "depth"):
        assert got[name].shape == (2, 1, 128, 128)
        assert np.abs(got[name] - want[name]).max() <= (1e-6 if on_cpu_only else 1e-2)
    if provider == "tensorrt" and TRT in runner.providers:
        assert (trt_cache_dir(exported_onnx) / "toolkit-stamp.json").is_file()


def test_ort_reason_keeps_the_message_not_the_source_location():
    """ORT's status prefix, the model path and its C++ source location and signature go; what is
    wrong stays (it used to be cut off at 200 characters inside the signature)."""
    text = ("[ONNXRuntimeError] : 1 : FAIL : Load model from /m/plain.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
            "model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&, const onnxruntime::"
            "IOnnxRuntimeOpSchemaRegistryList*, const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) "
            "Unsupported model IR version: 14, max supported IR version: 13")
    assert ort_reason(RuntimeError(text)) == "FAIL: Unsupported model IR version: 14, max supported IR version: 13"
    assert ort_reason(RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : bad node")) == "INVALID_GRAPH: bad node"


def test_the_gpu_build_under_the_cpu_one_refuses_a_gpu_provider_and_auto_says_why(exported_onnx, monkeypatch):
    """onnxruntime-gpu installed but the CPU build's files imported (what `pip install '.[gpu]'`
    may leave): a GPU was meant, so --provider cuda is one line with the fix, not a CPU run."""
    from toolkit.runtime import gpu_libs
    from toolkit.runtime.auto import pick_provider

    if CUDA in ort.get_available_providers():
        pytest.skip("the GPU build is the one imported here")
    monkeypatch.setattr(gpu_libs, "distribution_version", lambda name: "1.31.1" if name == "onnxruntime-gpu" else None)
    for provider in ("cuda", "tensorrt"):
        with pytest.raises(ProviderUnavailable, match="onnxruntime-gpu 1.31.1 is installed but the onnxruntime module is the CPU build's") as e:
            OnnxRunner(exported_onnx, provider=provider)
        assert str(e.value).endswith(f"{pip_command()} install --force-reinstall --no-deps onnxruntime-gpu==1.31.1")
    _, note = pick_provider(exported_onnx, open_runner)
    assert note.endswith(f"the CPU build's (both write one folder): {pip_command()} install --force-reinstall --no-deps onnxruntime-gpu==1.31.1")
