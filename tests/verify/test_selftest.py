"""The self-test: golden pairs inside every export catch a model that no longer gives its answers."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import run_cli
from toolkit.core.errors import CheckFailed, UserError
from toolkit.runtime import open_runner
from toolkit.verify.selftest import GOLDEN_KEY, check_self_test, read_golden, self_test, startup_check


def _copy(src, dst_dir, edit=None):
    """A copy of the model, its metadata kept; `edit(proto)` changes it first."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(src))
    if edit is not None:
        edit(proto)
    out = dst_dir / "model.onnx"
    onnx.save(proto, str(out))
    return out


def test_the_export_carries_golden_pairs_and_passes_them(exported_onnx, exported_halves):
    runner = open_runner(exported_onnx)
    golden = read_golden(runner.metadata, "model.onnx")
    assert golden.size == (128, 128) and len(golden.feed_images) == 2
    assert golden.feed_images[0]["bg"].shape == (160, 160, 3)  # larger than the model: the resize runs
    assert golden.outputs["mask"].shape == (2, 1, 128, 128)
    with runner:
        result = self_test(runner)
    assert result and max(result.max_abs.values()) <= 1e-4
    from toolkit.runtime.fixed import HalvesRunner

    with HalvesRunner(exported_halves) as halves:  # the halves prove themselves on their whole model's pairs
        assert "self-test passed on model.onnx halves" in check_self_test(halves)


def _scale_one_conv(proto):
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))


def test_tampered_weights_fail_naming_the_model_and_the_figure(exported_onnx, tmp_path):
    tampered = _copy(exported_onnx, tmp_path / "tampered", _scale_one_conv)
    with open_runner(tampered) as runner, pytest.raises(CheckFailed) as e:
        check_self_test(runner)
    assert str(e.value).startswith("model.onnx: self-test failed on model.onnx (onnxruntime): max abs diff ") and "\n" not in str(e.value)


def test_a_changed_preprocessing_fails(exported_onnx, monkeypatch):
    from PIL import Image

    import toolkit.render.imageio

    def nearest(arr, size):  # what a deploy with another resize would feed the model
        channels = [np.asarray(Image.fromarray(arr[..., c]).resize((size[1], size[0]), Image.NEAREST)) for c in range(arr.shape[2])]
        return np.stack(channels, axis=-1)

    with open_runner(exported_onnx) as runner:
        assert self_test(runner)
        monkeypatch.setattr(toolkit.render.imageio, "resize", nearest)
        assert not self_test(runner)


def test_a_runtime_that_computes_in_lower_precision_fails_an_fp32_model(exported_onnx, tmp_path):
    """What TF32 in an "fp32" engine, or OpenVINO's bf16 default, does: fp16-like numerics under fp32 metadata."""
    from export.fp16 import convert_fp16_model

    fp16_graph = _copy(exported_onnx, tmp_path / "lower", lambda proto: proto.CopyFrom(convert_fp16_model(proto)[0]))
    runner = open_runner(fp16_graph)
    assert runner.precision == "fp32"  # the metadata still says fp32: the runtime is what changed
    with runner:
        result = self_test(runner)
    assert not result and any("max abs diff" in f for f in result.failures)


def test_no_golden_pairs_is_a_note_at_start_and_damaged_ones_are_refused(exported_onnx, tmp_path):
    def drop(proto):
        kept = [p for p in proto.metadata_props if p.key != GOLDEN_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)

    with open_runner(_copy(exported_onnx, tmp_path / "old", drop)) as runner:
        assert startup_check(runner).startswith("note: model.onnx: holds no golden pairs")

    def damage(proto):
        prop = next(p for p in proto.metadata_props if p.key == GOLDEN_KEY)
        doc = json.loads(prop.value)
        doc["payload"]["size"] = [64, 64]
        prop.value = json.dumps(doc)

    with open_runner(_copy(exported_onnx, tmp_path / "damaged", damage)) as runner, pytest.raises(UserError, match="damaged .*SHA-256"):
        startup_check(runner)


def test_doctor_model_exits_1_with_one_line_on_a_tampered_model(exported_onnx, tmp_path):
    ok = run_cli("doctor", "--model", str(exported_onnx))
    passed = " ".join(ok.stdout.split())
    assert ok.returncode == 0 and "model.onnx: self-test passed on model.onnx (onnxruntime): max abs diff " in passed
    assert "<= 1e-04, mask IoU 1.0000 >= 0.999 on 2 pairs (golden)" in passed  # the figures that decided it
    r = run_cli("doctor", "--model", str(_zeroed(exported_onnx, tmp_path / "zeroed")))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: model.onnx: self-test failed on"), r.stderr


def _zeroed(exported_onnx, folder):
    def zero_weights(proto):
        for init in proto.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 4:
                init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))

    return _copy(exported_onnx, folder, zero_weights)


def test_serve_refuses_to_start_a_model_that_fails_its_self_test(exported_onnx, tmp_path):
    pytest.importorskip("starlette")
    r = run_cli("serve", "--model", str(_zeroed(exported_onnx, tmp_path / "zeroed")), "--port", "0")
    assert r.returncode == 1 and "serving" not in r.stdout  # it never listened: /readyz never said ready
    assert r.stderr.strip().splitlines()[-1].startswith("error: model.onnx: self-test failed on model.onnx (onnxruntime)")


def test_stream_runs_the_self_test_at_start(exported_onnx, tmp_path):
    from PIL import Image

    from toolkit.deploy.footage import walking_frames
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(walking_frames(3, 48, 64)):
        Image.fromarray(f).save(frames / f"{i:03d}.png")
    report = stream(exported_onnx, str(frames), tmp_path / "out", StreamOptions(bg_frames=2))
    assert report.self_test.startswith("self-test passed on model.onnx (onnxruntime)")
    with pytest.raises(CheckFailed, match="self-test failed"):
        stream(_zeroed(exported_onnx, tmp_path / "zeroed"), str(frames), tmp_path / "out2", StreamOptions(bg_frames=2))
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def _beside_halves(exported_halves, folder, edit):
    """The halves of `exported_halves` beside an edited copy of its whole model (the halves now
    belong to another model.onnx)."""
    model = _copy(exported_halves, folder, edit)
    for half in ("model.bg.onnx", "model.frame.onnx"):
        (folder / half).write_bytes((exported_halves.parent / half).read_bytes())
    return model


def test_doctor_tests_the_whole_model_before_it_blames_the_halves(exported_halves, tmp_path):
    """A tampered model.onnx beside its old halves: the self-test's failure is the finding (exit
    1), the halves that do not belong to it a second one in the same line."""
    r = run_cli("doctor", "--model", str(_beside_halves(exported_halves, tmp_path / "tampered", _scale_one_conv)))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: model.onnx: self-test failed on model.onnx (onnxruntime): ")
    assert "; also: model.bg.onnx, model.frame.onnx: not the halves of model.onnx" in lines[0]


def test_doctor_passes_the_whole_model_then_refuses_halves_of_another(exported_halves, tmp_path):
    def restamp(proto):  # the same weights, another file: the halves recorded the old one's SHA-256
        proto.doc_string += " (copied)"

    r = run_cli("doctor", "--model", str(_beside_halves(exported_halves, tmp_path / "other", restamp)))
    assert r.returncode == 2 and "model.onnx: self-test passed on model.onnx (onnxruntime)" in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.bg.onnx, model.frame.onnx: not the halves of model.onnx"), r.stderr


def test_an_export_check_carries_the_self_test_as_one_verdict(exported_onnx, tmp_path):
    """`with_self_test`: a passing check of a model its self-test refuses is a failure naming the
    self-test; a passing one carries the self-test's line."""
    from toolkit.verify.compare import check_model
    from toolkit.verify.selftest import with_self_test

    feeds = [{k: np.full((1, 3, 128, 128), 0.5, np.float32) for k in ("bg", "fgbg")}]
    good = with_self_test(check_model(exported_onnx, exported_onnx, feeds), open_runner(exported_onnx))
    assert good and good.self_test.startswith("self-test passed on its golden pairs: max abs diff ")
    tampered = _copy(exported_onnx, tmp_path / "tampered", _scale_one_conv)
    check = check_model(tampered, tampered, feeds)  # a check that cannot see the damage: the model beside itself
    assert check
    bad = with_self_test(check, open_runner(tampered))
    assert not bad and bad.self_test.startswith("self-test FAILED")
    assert bad.failures == [f for f in bad.failures if f.startswith("its self-test (what serve, stream and doctor run) fails")]


def test_doctor_keeps_the_halves_finding_when_the_model_cannot_be_tested(exported_halves, tmp_path):
    def drop_golden(proto):
        kept = [p for p in proto.metadata_props if p.key != GOLDEN_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)

    r = run_cli("doctor", "--model", str(_beside_halves(exported_halves, tmp_path / "old", drop_golden)))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "holds no golden pairs" in lines[0], r.stderr
    assert "; also: model.bg.onnx, model.frame.onnx: not the halves of model.onnx" in lines[0]
