"""The formats table, its options, the rows' wiring and the `toolkit export` command."""

import dataclasses
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import export.formats as formats
from export.formats import FORMATS, ExportOptions, exit_code, options_for, run_exports, selected_formats
from export.options import batch_profile
from tests.conftest import ROOT, run_cli
from toolkit.core.errors import CheckFailed, UserError
from toolkit.core.install import install_hint
from toolkit.core.spec import BatchProfile
from toolkit.verify.compare import DEFAULT_THRESHOLDS, Thresholds

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


# -- the table --------------------------------------------------------------------------------
def test_one_row_per_format_in_dependency_order():
    keys = [f.key for f in FORMATS]
    assert keys == ["onnx", "fp16", "int8", "engine", "triton"]
    assert len({f.filename for f in FORMATS}) == len(FORMATS)
    assert [f.filename for f in FORMATS[:3]] == ["model.onnx", "model.fp16.onnx", "model.int8.onnx"]
    for i, fmt in enumerate(FORMATS):
        earlier = keys[:i]
        assert set(fmt.needs) <= set(earlier), fmt.key
        assert set(fmt.uses) <= set(earlier), fmt.key
        assert callable(fmt.run)
    assert all("onnx" in f.needs for f in FORMATS[1:])
    assert {f.key: f.extra for f in FORMATS}["engine"] == "gpu"


def test_options_select_rows_in_table_order(tmp_path):
    def keys(options):
        return [f.key for f in selected_formats(options)]

    assert keys(ExportOptions()) == ["onnx"]
    assert keys(ExportOptions(int8=True, fp16=True, triton=tmp_path)) == ["onnx", "fp16", "int8", "triton"]
    assert keys(options_for(["int8", "onnx"])) == ["onnx", "int8"]
    with pytest.raises(UserError, match="unknown export format"):
        options_for(["onnx", "bf16"])


@pytest.mark.parametrize("text, expected", [("1,8,32", (1, 8, 32)), (" 2, 2 ,2", (2, 2, 2)), ((1, 4, 16), (1, 4, 16))])
def test_parse_batch(text, expected):
    assert batch_profile(text).as_tuple() == expected


@pytest.mark.parametrize("text", ["8,4,1", "0,1,2", "1,2", "a,b,c", "1,8,100000"])
def test_parse_batch_refuses(text):
    with pytest.raises(UserError, match="--batch"):
        batch_profile(text)


@pytest.mark.parametrize(
    "options, says",
    [
        (dict(int8=True, int8_target="gpu"), "--int8-target"),
        (dict(graph="fast"), "--graph must be one of folded, literal"),
        (dict(int8=True, calib_method="kl"), "--calib-method"),
        (dict(int8=True, calib=Path("/no/such/folder")), "no such calibration data"),
        (dict(calib=Path(".")), "--calib is used by"),
        (dict(int8=True, calib_pairs=0), "calibration pairs"),
        (dict(engine=True, workspace_mb=0), "--workspace"),
        (dict(triton=Path("/tmp"), triton_name="a b"), "Triton model name"),
        (dict(int8=True, int8_search="maybe"), "--int8-search must be one of auto, off"),
        (dict(int8=True, search_budget_s=0), "--int8-search-budget must be in"),
        (dict(int8=True, search_budget_s=float("nan")), "--int8-search-budget must be in"),
        (dict(engine=True, engine_compat="any"), "--engine-compat must be one of none, hardware, version"),
        (dict(engine=True, dla_core=-1), "--dla-core must be a DLA core number"),
        (dict(engine=True, fp16=True, dla_core=0, engine_compat="hardware"), "--engine-compat does not go with it"),
        (dict(engine=True, dla_core=0), "DLA runs fp16 and int8 layers; add --fp16 or --int8"),
    ],
)
def test_bad_options_are_user_errors(options, says):
    """Every option rule, checked when ExportOptions is made (before anything is built)."""
    with pytest.raises(UserError, match=says):
        ExportOptions(**options)


# -- the rows' wiring (the fp32 export is stubbed with the session's export) ---------------------
@pytest.fixture
def stub_onnx(monkeypatch, exported_halves):
    """`export_onnx` and `export_halves` copy the session's fp32 export and its pair instead of
    exporting again (8 s each)."""
    import export.fixed_camera
    import export.onnx
    from toolkit.runtime.fixed import half_paths

    calls = []
    checks = {}

    def fake(checkpoint, out, graph, size=None, dynamic=False):
        assert graph == "folded" and not dynamic
        calls.append(Path(out))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exported_halves, out)
        checks[Path(out)] = export.onnx.compare_with_torch(Path(out), Path(checkpoint))
        return Path(out), checks[Path(out)]

    def fake_split(checkpoint, model):
        for src, dst in zip(half_paths(exported_halves), half_paths(model)):
            shutil.copyfile(src, dst)
        return (*half_paths(model), checks[Path(model)])

    monkeypatch.setattr(export.onnx, "export_onnx", fake)
    monkeypatch.setattr(export.fixed_camera, "export_halves", fake_split)
    return calls


def test_run_exports_passes_the_fp32_model_to_fp16_and_int8(stub_onnx, imported_ckpt, tmp_path):
    from toolkit.data.synth import synthesize

    synthesize(tmp_path / "calib-set", backgrounds=3, foregrounds=2, placements=2, size=128, seed=5)
    options = ExportOptions(fp16=True, int8=True, force=True, calib=tmp_path / "calib-set", calib_method="minmax",
                            calib_pairs=8, gate_pairs=4, int8_search="off")
    outcomes = run_exports(imported_ckpt, tmp_path / "out", options=options)
    assert [o.format.key for o in outcomes] == ["onnx", "fp16", "int8"]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert [o.path.name for o in outcomes] == ["model.onnx", "model.fp16.onnx", "model.int8.onnx"]
    # each ONNX with its fixed-camera halves, the fp16/int8 pairs converted from the fp32 pair
    assert [(a.path.name, a.precision, a.part) for o in outcomes for a in o.artifacts] == [
        (f"model{p}{half}.onnx", precision, part or "whole")
        for p, precision in (("", "fp32"), (".fp16", "fp16"), (".int8", "int8"))
        for half, part in (("", None), (".bg", "bg"), (".frame", "frame"))
    ]
    assert outcomes[1].detail.parity.pairs == 12  # fp16 is checked on every pair
    assert outcomes[2].detail.parity.pairs == 4  # int8 is judged on the held-out pairs only (1 background of 3)
    assert all("mask IoU" in o.artifacts[0].summary for o in outcomes[1:])
    import onnx

    props = {p.key: p.value for p in onnx.load(str(outcomes[2].path)).metadata_props}
    assert props["toolkit.source_onnx"] == "model.onnx"
    assert props["toolkit.calibration_data"] == "calib-set" and props["toolkit.calibration_pairs"] == "8"
    assert exit_code(outcomes) == 0


def test_a_failed_row_is_one_line_and_its_dependents_do_not_run(monkeypatch, imported_ckpt, tmp_path):
    import export.onnx

    def refuse(checkpoint, out, graph, size=None, dynamic=False):
        raise CheckFailed(f"{out}: not written: ONNX Runtime disagrees\nwith PyTorch")

    monkeypatch.setattr(export.onnx, "export_onnx", refuse)
    outcomes = run_exports(imported_ckpt, tmp_path / "out", options=ExportOptions(fp16=True))
    assert [o.ok for o in outcomes] == [False, False]
    assert "\n" not in outcomes[0].error and "disagrees with PyTorch" in outcomes[0].error
    assert "needs onnx" in outcomes[1].error
    assert exit_code(outcomes) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_benchmark_style_keys_still_work(stub_onnx, imported_ckpt, tmp_path):
    outcomes = run_exports(imported_ckpt, tmp_path, ["onnx"])
    assert len(outcomes) == 1 and outcomes[0].ok and outcomes[0].path == tmp_path / "model.onnx"
    assert max(outcomes[0].detail.max_abs.values()) < 1e-4 and outcomes[0].detail


def test_engine_row_wiring_with_the_builder_faked(stub_onnx, imported_ckpt, tmp_path, monkeypatch):
    """The `--engine` row's wiring only, where TensorRT cannot run: the builder, the gate and the
    Triton writer are faked and TensorRT's preflight is removed. It checks which ONNX files the
    row asks the builder for (each precision of the run, whole and halves), with which options,
    what it gates and what it hands the Triton row; no engine is built (see the README's tests)."""
    pytest.importorskip("export.tensorrt")
    pytest.importorskip("export.triton")
    import export.tensorrt
    import export.triton

    # no TensorRT here: skip the row's preflight and record what the row asks the builder for
    rows = tuple(dataclasses.replace(f, preflight=None) if f.key == "engine" else f for f in FORMATS)
    monkeypatch.setattr(formats, "FORMATS", rows)
    built, repos = [], []

    def fake_build(onnx_path, out, *, precision, batch, workspace_mb, timing_cache, checkpoint_sha256, sizes, compat, dla_core):
        assert sizes is None and compat == "none" and dla_core is None  # no --size-profile, --engine-compat, --dla-core
        built.append((Path(onnx_path).name, Path(out).name, precision, batch, workspace_mb, timing_cache, checkpoint_sha256))
        Path(out).write_bytes(b"plan")
        return SimpleNamespace(tensorrt_version="10.x", gpu_name="fake", batch=batch, build_seconds=0.1, notes=[])

    def fake_triton(repo, name, onnx_path, *, engine=None, max_batch_size=32, onnx_instance_kind="KIND_GPU"):
        repos.append((Path(repo), name, Path(onnx_path).name, engine and Path(engine).name, max_batch_size))
        return Path(repo) / name

    monkeypatch.setattr(export.tensorrt, "build_engine", fake_build)
    gated = []
    monkeypatch.setattr(formats, "gate_engine", lambda ctx, engine, precision: gated.append((engine.name, precision)) or "gated")
    monkeypatch.setattr(export.triton, "write_triton_repo", fake_triton)
    options = ExportOptions(fp16=True, engine=True, batch=(1, 4, 16), workspace_mb=512, triton=tmp_path / "repo", calib_pairs=8, gate_pairs=8)
    outcomes = run_exports(imported_ckpt, tmp_path / "out", options=options)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert [o.format.key for o in outcomes] == ["onnx", "fp16", "engine", "triton"]
    from toolkit.core.fsutil import sha256_file

    digest = sha256_file(imported_ckpt)
    cache = tmp_path / "out" / "tensorrt.timing-cache"
    assert built == [  # the whole model's engine, then its fixed-camera halves', per precision
        (f"model{p}{half}.onnx", f"model.{precision}{half}.engine", precision, BatchProfile(1, 4, 16), 512, cache, digest)
        for p, precision in (("", "fp32"), (".fp16", "fp16")) for half in ("", ".bg", ".frame")
    ]
    assert [(a.precision, a.part) for a in outcomes[2].artifacts] == [(p, part) for p in ("fp32", "fp16") for part in ("whole", "bg", "frame")]
    assert repos == [(tmp_path / "repo", "eva4", "model.onnx", "model.fp16.engine", 16)]
    assert gated == [("model.fp32.engine", "fp32"), ("model.fp16.engine", "fp16")]  # each whole engine, on the GPU that built it


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_engine_without_tensorrt_is_refused_before_anything_is_written(imported_ckpt, tmp_path):
    with pytest.raises(UserError, match="TensorRT.*" + re.escape(install_hint("gpu"))):
        run_exports(imported_ckpt, tmp_path / "out", options=ExportOptions(engine=True))
    assert not (tmp_path / "out").exists()


def test_engine_with_a_cpu_int8_model_is_refused():
    with pytest.raises(UserError, match="--int8-target tensorrt"):
        ExportOptions(int8=True, engine=True, int8_target="cpu")


# -- the command ------------------------------------------------------------------------------
def _main(*args):
    from toolkit.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--int8", "--int8-target", "gpu"], "--int8-target must be one of cpu, tensorrt"),
        (["--graph", "fused"], "--graph must be one of folded, literal"),
        (["--engine", "--batch", "8,4,1"], "1 <= min <= opt <= max"),
        (["--int8", "--calib", "NOPE"], "no such calibration data"),
        (["--int8", "--calib-method", "kl"], "--calib-method"),
        (["--int8-target", "cpu"], "only applies to --int8"),
        (["--force"], "only applies to --int8"),
        (["--batch", "1,8,32"], "only applies to --engine"),
        (["--int8-target", "cpu", "--calib-pairs", "8"], "--int8-target only applies to --int8; --calib-pairs only applies to --int8 or --fp16"),
        (["--triton-name", "x"], "only applies to --triton"),
        (["--int8", "--calib", "ONEBG"], "at least 2 backgrounds"),
    ],
)
def test_bad_flags_exit_2_before_anything_is_written(imported_ckpt, tmp_path, capsys, extra, says):
    if "ONEBG" in extra:
        from toolkit.data.synth import synthesize

        synthesize(tmp_path / "one-bg", backgrounds=1, foregrounds=2, placements=1, size=64)
    extra = [str(tmp_path / "nope") if a == "NOPE" else str(tmp_path / "one-bg") if a == "ONEBG" else a for a in extra]
    assert _main("export", imported_ckpt, "--out", tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and says in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_engine_flag_without_tensorrt_exits_2_naming_the_extra(imported_ckpt, tmp_path, capsys):
    assert _main("export", imported_ckpt, "--out", tmp_path / "out", "--engine") == 2
    assert install_hint("gpu") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_prints_a_line_per_file_and_refuses_int8_with_exit_1(stub_onnx, imported_ckpt, tmp_path, capsys, monkeypatch):
    # an unreachable gate makes the refusal certain, whatever the quantisation's figures
    monkeypatch.setitem(DEFAULT_THRESHOLDS, "int8", Thresholds(mask_iou=1.0, depth_rmse=0.0))
    out = tmp_path / "out"
    code = _main("export", imported_ckpt, "--out", out, "--fp16", "--int8", "--calib-method", "minmax", "--calib-pairs", "8",
                 "--int8-search", "off")
    captured = capsys.readouterr()
    assert code == 1
    lines = [line for line in captured.out.splitlines() if line.startswith("wrote ")]
    assert len(lines) == 6  # each model and its fixed-camera halves
    assert "model.onnx (fp32)" in lines[0] and "max abs diff" in lines[0]
    assert "model.bg.onnx (fp32)" in lines[1] and "model.frame.onnx (fp32)" in lines[2] and "vs PyTorch" in lines[2]
    assert "model.fp16.onnx (fp16)" in lines[3] and "mask IoU" in lines[3] and "depth RMSE" in lines[3]
    assert "model.fp16.frame.onnx (fp16)" in lines[5] and "the halves vs fp32: mask IoU" in lines[5]
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "model.int8.onnx: not written" in err[0] and "mask IoU" in err[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"model{p}{h}.onnx" for p in ("", ".fp16") for h in ("", ".bg", ".frame"))


def test_force_writes_int8_and_exits_0(stub_onnx, imported_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(DEFAULT_THRESHOLDS, "int8", Thresholds(mask_iou=1.0, depth_rmse=0.0))
    out = tmp_path / "out"
    code = _main("export", imported_ckpt, "--out", out, "--int8", "--int8-target", "tensorrt", "--calib-method", "minmax",
                 "--calib-pairs", "8", "--force", "--int8-search", "off")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "model.int8.onnx (int8)" in captured.out and "target tensorrt" in captured.out and "warning" in captured.out
    assert (out / "model.int8.onnx").is_file()


def test_flag_errors_are_one_line_in_a_real_process(imported_ckpt, tmp_path):
    r = run_cli("export", str(imported_ckpt), "--out", str(tmp_path / "o"), "--int8", "--int8-target", "gpu")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--int8-target" in r.stderr
    assert not (tmp_path / "o").exists()


def test_fp16_and_int8_convert_an_existing_onnx_without_torch(exported_onnx, tmp_path):
    code = f"""
import sys
sys.modules['torch'] = None
from pathlib import Path
from export.fp16 import convert_fp16
from export.int8 import Int8Options, quantize_int8, synthetic_pairs
from toolkit.verify.compare import batches
out = Path({str(tmp_path)!r})
pairs = synthetic_pairs(out / 'pairs', (128, 128), calib_pairs=8, gate_pairs=8)
convert_fp16({str(exported_onnx)!r}, out / 'model.fp16.onnx', batches(pairs.everything()))
quantize_int8({str(exported_onnx)!r}, out / 'model.int8.onnx', pairs, Int8Options(method='minmax', force=True, search='off'))
assert sys.modules['torch'] is None
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    assert (tmp_path / "model.fp16.onnx").is_file() and (tmp_path / "model.int8.onnx").is_file()


@pytest.mark.parametrize("kind, says", [("cpu", "KIND_CPU (--triton-kind cpu)"), ("gpu", "KIND_GPU (--triton-kind gpu)"), (None, None)])
def test_triton_instance_kind_is_an_option_and_the_line_says_which(stub_onnx, imported_ckpt, tmp_path, kind, says):
    from export.formats import _machine_has_cuda

    outcomes = run_exports(imported_ckpt, tmp_path / "out", options=ExportOptions(triton=tmp_path / "repo", triton_kind=kind))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    config = (tmp_path / "repo" / "eva4" / "config.pbtxt").read_text()
    if kind is None:  # the default follows this machine
        want = "KIND_GPU" if _machine_has_cuda() else "KIND_CPU"
        says = f"{want} (this machine has CUDA" if want == "KIND_GPU" else f"{want} (no CUDA on this machine"
    assert says in outcomes[-1].artifacts[0].summary
    assert f"kind: {says.split()[0]}" in config
    with pytest.raises(UserError, match="--triton-kind must be cpu or gpu"):
        ExportOptions(triton=tmp_path / "repo", triton_kind="tpu")


# -- an exported .onnx as the source: the rows that need only ONNX, without PyTorch -------------
def test_fp16_from_an_onnx_source_needs_no_torch(exported_onnx, tmp_path):
    r = run_cli("export", str(exported_onnx), "--fp16", "--calib-pairs", "8", "--out", str(tmp_path / "out"), block_torch=True)
    assert r.returncode == 0, r.stderr
    assert f"using {exported_onnx} (fp32)" in r.stdout and "wrote" in r.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.fp16.onnx"]  # the given model is not copied


def test_engine_from_an_onnx_source_goes_as_far_as_tensorrt_without_torch(exported_onnx, tmp_path):
    r = run_cli("export", str(exported_onnx), "--engine", "--out", str(tmp_path / "out"), block_torch=True)
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed: the engine is built (tests/export/test_tensorrt.py covers it)")
    assert r.returncode == 2 and r.stderr.strip() == f"error: TensorRT (needed for --engine) is not installed: {install_hint('gpu')}"
    assert not (tmp_path / "out").exists()


def test_an_onnx_source_refuses_what_only_a_checkpoint_makes(exported_onnx, tmp_path):
    r = run_cli("export", str(exported_onnx), "--graph", "literal", "--out", str(tmp_path / "out"), block_torch=True)
    assert r.returncode == 2 and "--graph only applies to a checkpoint" in r.stderr
    fp16 = tmp_path / "given" / "model.fp16.onnx"
    r = run_cli("export", str(exported_onnx), "--fp16", "--calib-pairs", "4", "--out", str(fp16.parent))
    assert r.returncode == 0, r.stderr
    with pytest.raises(UserError, match="is an fp16 model; --fp16 and --int8 are made from the fp32 export"):
        run_exports(fp16, tmp_path / "again", options=ExportOptions(int8=True, calib_pairs=4, gate_pairs=4))
    assert not (tmp_path / "again").exists()
    r = run_cli("export", str(exported_onnx), "--out", str(tmp_path / "nothing"), block_torch=True)
    assert r.returncode == 2 and "already exported: give --fp16, --int8, --engine or --triton" in r.stderr
    assert not (tmp_path / "nothing").exists()


def test_engines_from_an_onnx_source_record_the_checkpoint_hash_from_its_metadata(exported_onnx, imported_ckpt, tmp_path):
    from export.formats import ExportContext
    from toolkit.core.fsutil import sha256_file

    ctx = ExportContext(exported_onnx, tmp_path, ExportOptions())
    assert ctx.from_onnx and ctx.checkpoint_sha256() == sha256_file(imported_ckpt)


def test_a_source_that_is_neither_checkpoint_nor_onnx_is_named_for_what_it_is(tmp_path):
    from export.formats import check_source

    (tmp_path / "Background").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"x")
    (tmp_path / "weights").write_bytes(b"x")
    for path, says in ((tmp_path / "Background", "not a folder"), (tmp_path / "weights.bin", "not a '.bin' file"),
                       (tmp_path / "weights", "not a file without a suffix")):
        with pytest.raises(UserError, match=re.escape(says)):
            check_source(path, ExportOptions())
