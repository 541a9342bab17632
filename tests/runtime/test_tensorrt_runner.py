"""The TensorRT runner: sidecar checks, batch profile checks and CUDA error handling run
everywhere; building and running a real engine only where TensorRT and a GPU are installed."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from tests.conftest import golden_inputs
from toolkit.core.errors import MissingDependency, UserError
from toolkit.core.install import install_hint
from toolkit.core.spec import BatchProfile
from toolkit.runtime.cuda_buffers import check_cuda
from toolkit.runtime.tensorrt_runner import (
    SIDECAR_FORMAT,
    batch_profile,
    check_batch,
    check_sidecar,
    load_sidecar,
    sidecar_path,
)


@pytest.fixture
def sidecar_on_disk(tmp_path, exported_onnx):
    """A sidecar exactly as build_engine writes it (make_sidecar), beside a file that is never
    deserialised here: only the sidecar logic is under test."""
    from export.tensorrt import make_sidecar, read_onnx_source

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine; only its sidecar is read in this test")
    side = make_sidecar(
        engine=engine, plan_sha256="0" * 64, source=read_onnx_source(exported_onnx), precision="fp32", batch=(1, 8, 32),
        trt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", checkpoint_sha256="",
        build_seconds=1.0,
    )
    sidecar_path(engine).write_text(json.dumps(side))
    return engine, side


def test_the_size_profile_is_read_back_and_an_older_sidecar_means_its_input_size(sidecar_on_disk):
    from toolkit.core.sizes import SizeProfile
    from toolkit.runtime.tensorrt_runner import size_profile

    _, side = sidecar_on_disk
    assert size_profile(side) == SizeProfile.fixed((128, 128))  # a fixed-size model: its own size only
    older = {k: v for k, v in side.items() if k != "size_profile"}
    assert size_profile(older) == SizeProfile.fixed((128, 128))
    assert size_profile(side | {"size_profile": {"min": [64, 96], "opt": [128, 224], "max": [256, 448]}}).admits((128, 160))


def _dist(site, name: str, version: str) -> None:
    """A pip distribution's metadata (a .dist-info folder) on a site folder: what importlib.metadata reads."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_the_bindings_version_is_exact_and_the_metapackage_only_advisory(tmp_path, monkeypatch):
    from toolkit.core.optional import tensorrt_metadata_version

    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _dist(tmp_path / "site", "tensorrt", "10.13.0.post1")  # the metapackage: a post release of the same bindings
    assert tensorrt_metadata_version() == ("10.13.0.post1", False)
    _dist(tmp_path / "site", "tensorrt-cu12-bindings", "10.13.0.35")
    assert tensorrt_metadata_version() == ("10.13.0.35", True)  # what tensorrt.__version__ says, and sidecars record


def test_an_advisory_version_does_not_refuse_an_engine_before_import(sidecar_on_disk, monkeypatch):
    """Only the metapackage's version known, and it differs from the sidecar's: the early check
    must not refuse (rebuilding could not help); the real check runs after import."""
    from toolkit.runtime import tensorrt_runner as tr

    engine, side = sidecar_on_disk
    monkeypatch.setattr(tr, "tensorrt_version", lambda: ("10.13.0.post1", False))
    sidecar_path(engine).write_text(json.dumps(side))
    with pytest.raises(UserError) as e:  # the engine file is not the sidecar's: refused for that, not the version
        tr.TensorRTRunner(engine)
    assert "not the one its sidecar" in str(e.value) and "this machine has TensorRT" not in str(e.value)


def test_sidecar_path_appends_json():
    assert sidecar_path("out/model.fp16.engine").name == "model.fp16.engine.json"


def test_sidecar_round_trip(sidecar_on_disk):
    engine, side = sidecar_on_disk
    got = load_sidecar(engine)
    assert got["format"] == SIDECAR_FORMAT
    assert batch_profile(got) == BatchProfile(1, 8, 32)
    assert got["input_size"] == [128, 128]


def test_missing_sidecar_names_the_expected_path(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(UserError, match=r"model\.engine\.json is missing") as e:
        load_sidecar(engine)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "unreadable engine sidecar"),
        ("[1, 2]", "must be a JSON object"),
        ("{}", "lacks format"),
    ],
)
def test_corrupt_sidecar_is_one_line(tmp_path, content, match):
    engine = tmp_path / "m.engine"
    sidecar_path(engine).write_text(content)
    with pytest.raises(UserError, match=match) as e:
        load_sidecar(engine)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("format", "other/9", "unknown engine sidecar format"),
        ("batch_profile", {"min": 8, "opt": 1, "max": 32}, "1 <= min <= opt <= max"),
        ("batch_profile", {"min": 1}, "invalid batch_profile"),
        ("input_size", [64, 64], "disagrees with its I/O spec"),
        ("inputs", ["image"], "expected \\['bg', 'fgbg'\\]"),
        ("iospec", {"height": 3}, "invalid I/O spec"),
        ("size_profile", {"min": [64, 64], "opt": [32, 32], "max": [128, 128]}, "min <= opt <= max"),
        ("size_profile", {"min": [64, 64]}, "invalid size_profile"),
    ],
)
def test_inconsistent_sidecar_is_refused(sidecar_on_disk, key, value, match):
    engine, side = sidecar_on_disk
    sidecar_path(engine).write_text(json.dumps(side | {key: value}))
    with pytest.raises(UserError, match=match):
        load_sidecar(engine)


def test_check_sidecar_versions_and_gpu(sidecar_on_disk):
    _, side = sidecar_on_disk
    check_sidecar(side, trt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    with pytest.raises(UserError, match="built with TensorRT 10.13.0.35, this machine has TensorRT 11.1.0") as e:
        check_sidecar(side, trt_version="11.1.0", gpu_name="NVIDIA H100 80GB HBM3")
    assert "export --engine" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="built for GPU 'NVIDIA H100 80GB HBM3', this machine has 'NVIDIA L4'"):
        check_sidecar(side, trt_version="10.13.0.35", gpu_name="NVIDIA L4")
    with pytest.raises(UserError, match="compute capability 9.0, this GPU has 8.9"):
        check_sidecar(side, trt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="8.9")


def test_a_version_compatible_engine_runs_on_later_tensorrt_only(sidecar_on_disk):
    _, side = sidecar_on_disk
    side = dict(side, compat="version")
    for later in ("10.13.0.35", "10.14.1", "11.1.0"):
        check_sidecar(side, trt_version=later, gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    for other in ("10.12.0", "12.0.0"):  # earlier, or two majors on (NVIDIA: within a major, and 10 -> 11)
        with pytest.raises(UserError, match=rf"TensorRT {other} \(it runs on 10\.13\.0\.35 or a later 10\.x or 11\.x\)"):
            check_sidecar(side, trt_version=other, gpu_name="NVIDIA H100 80GB HBM3")
    with pytest.raises(UserError, match="built for GPU"):  # still this GPU only
        check_sidecar(side, trt_version="11.1.0", gpu_name="NVIDIA L4")


def test_a_hardware_compatible_engine_runs_on_any_ampere_or_newer_gpu(sidecar_on_disk):
    _, side = sidecar_on_disk
    side = dict(side, compat="hardware")
    for gpu, cc in (("NVIDIA L4", "8.9"), ("NVIDIA A100-SXM4-40GB", "8.0"), ("NVIDIA H200", "9.0")):
        check_sidecar(side, trt_version="10.13.0.35", gpu_name=gpu, compute_capability=cc)
    with pytest.raises(UserError, match="compute capability 8.0 and newer .* this GPU has 7.5"):
        check_sidecar(side, trt_version="10.13.0.35", gpu_name="Tesla T4", compute_capability="7.5")
    with pytest.raises(UserError, match="this machine has TensorRT 11.1.0"):  # still this TensorRT only
        check_sidecar(side, trt_version="11.1.0", gpu_name="NVIDIA L4", compute_capability="8.9")
    both = dict(side, compat="hardware+version")
    check_sidecar(both, trt_version="11.1.0", gpu_name="NVIDIA L4", compute_capability="8.9")


def test_batch_outside_the_profile():
    check_batch(1, BatchProfile(1, 8, 32))
    check_batch(32, BatchProfile(1, 8, 32))
    with pytest.raises(UserError, match=r"batch of 33 is outside the engine's optimisation profile \(1..32\)"):
        check_batch(33, BatchProfile(1, 8, 32))
    with pytest.raises(UserError, match="batch of 2 is outside"):
        check_batch(2, BatchProfile(4, 8, 8))


@pytest.mark.parametrize("bad", [(0, 1, 1), (2, 1, 4), (1, 8, 4), (1, 2)])
def test_batch_profile_rule(bad):
    assert BatchProfile.of((1, 8, 32)).as_tuple() == (1, 8, 32)
    with pytest.raises(ValueError):
        BatchProfile.of(bad)


def test_check_cuda_unpacks_results_and_names_errors():
    import enum

    class Err(enum.IntEnum):  # the shape of cuda-python's cudaError_t: an int with a name
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    assert check_cuda((Err.cudaSuccess,), "cudaFree") is None
    assert check_cuda((Err.cudaSuccess, 42), "cudaMalloc") == 42
    assert check_cuda((Err.cudaSuccess, 8, 9), "x") == (8, 9)
    with pytest.raises(UserError, match="CUDA call cudaMalloc\\(16\\) failed: cudaErrorMemoryAllocation"):
        check_cuda((Err.cudaErrorMemoryAllocation, None), "cudaMalloc(16)")


def test_cuda_python_without_a_usable_gpu_is_one_line():
    """Real cuda-python calls: on a machine without a driver/GPU they fail with a named error."""
    cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (GPU extra)")
    from toolkit.runtime.cuda_buffers import CudaBuffers, gpu_info

    err, count = cudart.cudaGetDeviceCount()
    if int(err) == 0 and count > 0:
        info = gpu_info()
        assert info is not None and info.name and "." in info.compute_capability
        buf = CudaBuffers()
        try:
            assert buf.stream_handle != 0
            buf.allocate("x", 4 * 6)
            src = np.arange(6, dtype=np.float32)
            dst = np.zeros_like(src)
            buf.to_device("x", src)
            buf.to_host(dst, "x")
            buf.synchronize()
            np.testing.assert_array_equal(src, dst)
            staged, back = buf.pinned("x", 6), buf.pinned("back", 6)  # page-locked host buffers, reused
            assert buf.pinned("x", 3) is staged and staged.dtype == np.float32 and staged.size == 6
            staged[:] = src * 2
            buf.to_device("x", staged)
            buf.allocate("back", 4 * 6)
            buf.to_host(back, "x")
            buf.synchronize()
            np.testing.assert_array_equal(back, src * 2)
        finally:
            buf.close()
        buf.close()  # twice is harmless
        return
    with pytest.raises(UserError, match="cudaGetDeviceCount") as e:
        gpu_info()
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="cudaStreamCreate"):
        CudaBuffers()


def test_engine_runner_without_tensorrt_names_the_extra(tmp_path, sidecar_on_disk):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        engine, _ = sidecar_on_disk
        from toolkit.runtime.tensorrt_runner import TensorRTRunner

        says = r"TensorRT \(needed to run model\.engine, built with TensorRT 10\.13\.0\.35\).*" + re.escape(install_hint("gpu"))
        with pytest.raises(MissingDependency, match=says):
            TensorRTRunner(engine)
    else:
        pytest.skip("TensorRT is installed: the missing-extra message does not apply")


def test_sidecar_is_judged_before_tensorrt_is_imported(sidecar_on_disk, monkeypatch):
    """Another TensorRT version, or an engine file the sidecar does not describe, is refused from
    the sidecar and the package metadata alone: TensorRT is never imported for it."""
    from toolkit.runtime import tensorrt_runner as tr

    engine, side = sidecar_on_disk
    monkeypatch.setattr(tr, "tensorrt_version", lambda: ("10.13.0.35", True))  # the bindings' own version
    monkeypatch.setattr(tr, "_tensorrt", lambda: pytest.fail("TensorRT was imported before the sidecar was judged"))
    sidecar_path(engine).write_text(json.dumps(side | {"tensorrt_version": "8.6.1"}))
    with pytest.raises(UserError, match="built with TensorRT 8.6.1, this machine has TensorRT 10.13.0.35"):
        tr.TensorRTRunner(engine)
    sidecar_path(engine).write_text(json.dumps(side))  # the right version; its engine_sha256 is not the file's
    with pytest.raises(UserError, match="not the one its sidecar model.engine.json describes"):
        tr.TensorRTRunner(engine)


# ---- below: a real engine (TensorRT + a GPU + cuda-python) ------------------------------------


@pytest.fixture(scope="module")
def built_engine(tmp_path_factory, exported_onnx):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU extra)")
    from export.tensorrt import build_engine

    out = tmp_path_factory.mktemp("engine")
    shutil.copy(exported_onnx, out / "model.onnx")
    report = build_engine(out / "model.onnx", out / "model.engine", precision="fp32", batch=(1, 4, 8), workspace_mb=512)
    return report


def test_engine_runs_and_matches_onnxruntime(built_engine, exported_onnx):
    from toolkit.runtime import open_runner

    bg, fg = golden_inputs()
    feed = {"bg": np.repeat(bg, 3, 0), "fgbg": np.repeat(fg, 3, 0)}
    with open_runner(exported_onnx) as ref:
        want = ref.infer(feed)
    runner = open_runner(built_engine.engine)
    assert runner.backend == "tensorrt" and runner.spec.size == (128, 128) and runner.precision == "fp32"
    with runner:
        got = runner.infer(feed)
        for name in ("mask", "depth"):
            assert got[name].shape == (3, 1, 128, 128) and got[name].dtype == np.float32
            assert np.abs(got[name] - want[name]).max() < 1e-3  # fp32 engines run without TF32: only the order of sums differs
        with pytest.raises(UserError, match="outside the engine's optimisation profile"):
            runner.infer({"bg": np.repeat(bg, 9, 0), "fgbg": np.repeat(fg, 9, 0)})
        again = runner.infer({"bg": bg, "fgbg": fg})  # a smaller batch after a larger one
        assert again["mask"].shape == (1, 1, 128, 128)
    assert not runner.active


def test_engine_with_other_tensorrt_in_sidecar_is_refused_before_loading(built_engine, tmp_path):
    from toolkit.runtime import open_runner

    engine = tmp_path / "m.engine"
    shutil.copy(built_engine.engine, engine)
    side = json.loads(built_engine.sidecar.read_text())
    sidecar_path(engine).write_text(json.dumps(side | {"tensorrt_version": "9.0.0"}))
    with pytest.raises(UserError, match="built with TensorRT 9.0.0"):
        open_runner(engine)
    sidecar_path(engine).write_text(json.dumps(side | {"gpu_name": "Some Other GPU"}))
    with pytest.raises(UserError, match="built for GPU 'Some Other GPU'"):
        open_runner(engine)
    sidecar_path(engine).write_text(json.dumps(side | {"engine_sha256": "f" * 64}))
    with pytest.raises(UserError, match="not the one its sidecar"):
        open_runner(engine)
