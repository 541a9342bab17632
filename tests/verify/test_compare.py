"""Parity: passes on the fp32 export, fails (exit 1) on a deliberately perturbed model."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import run_cli
from toolkit.runtime import open_runner
from toolkit.verify.compare import Thresholds, compare_runners
from toolkit.verify.parity import run_parity


def _edit_last_conv(exported_onnx, out, edit):
    """A copy of the fp32 export with the final convolution's weights changed by `edit`."""
    m = onnx.load(str(exported_onnx))
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    last_weight = convs[-1].input[1]
    for init in m.graph.initializer:
        if init.name == last_weight:
            init.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(init)), init.name))
            break
    else:
        pytest.fail("final convolution weight not found among initializers")
    onnx.save(m, out)
    return out


@pytest.fixture(scope="module")
def perturbed_onnx(exported_onnx, tmp_path_factory):
    """Final convolution's weights scaled by 1.05: close, but not fp32-equal."""
    return _edit_last_conv(exported_onnx, tmp_path_factory.mktemp("perturbed") / "perturbed.onnx", lambda w: w * 1.05)


def test_fp32_export_passes(exported_onnx, imported_ckpt):
    report = run_parity([exported_onnx], imported_ckpt, limit=4, batch_size=2)
    assert report, report.results[0].failures
    r = report.results[0]
    assert r.precision == "fp32" and r.pairs == 4
    assert max(r.max_abs.values()) <= 1e-4 and r.mask_iou >= 0.999


def test_perturbed_model_fails(perturbed_onnx, imported_ckpt):
    report = run_parity([perturbed_onnx], imported_ckpt, limit=4, batch_size=2)
    assert not report
    assert any("max abs diff" in f for f in report.results[0].failures)


def test_thresholds_can_be_overridden(perturbed_onnx, imported_ckpt):
    lenient = Thresholds(max_abs=1.0, mask_iou=0.0)
    report = run_parity([perturbed_onnx], imported_ckpt, limit=2, batch_size=2, overrides=lenient)
    assert report


def test_identical_runner_has_zero_difference(imported_ckpt):
    rng = np.random.default_rng(0)
    feeds = [{k: rng.random((2, 3, 128, 128), dtype=np.float32) for k in ("bg", "fgbg")}]
    report = compare_runners(open_runner(imported_ckpt), [open_runner(imported_ckpt)], feeds)
    r = report.results[0]
    assert r.max_abs == {"mask": 0.0, "depth": 0.0} and r.mask_iou == 1.0 and r.depth_rmse == 0.0


def test_cli_exit_codes_and_json(exported_onnx, perturbed_onnx, imported_ckpt, tmp_path):
    ok = run_cli("parity", "--model", str(exported_onnx), "--reference", str(imported_ckpt), "--limit", "2",
                 "--json", str(tmp_path / "p.json"))
    assert ok.returncode == 0, ok.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["passed"] is True and data["models"][0]["precision"] == "fp32"
    bad = run_cli("parity", "--model", str(exported_onnx), "--model", str(perturbed_onnx), "--reference",
                  str(imported_ckpt), "--limit", "2")
    assert bad.returncode == 1
    assert "perturbed.onnx" in bad.stderr and "Traceback" not in bad.stderr


def test_nan_outputs_fail_and_json_stays_valid(exported_onnx, imported_ckpt, tmp_path):
    def poison(w):
        w = w.copy()
        w.flat[0] = np.nan
        return w

    nan_model = _edit_last_conv(exported_onnx, tmp_path / "nan.onnx", poison)
    lenient = Thresholds(max_abs=1.0, mask_iou=0.0, depth_rmse=1.0)
    report = run_parity([nan_model], imported_ckpt, limit=2, batch_size=2, overrides=lenient)
    assert not report
    r = report.results[0]
    assert sum(r.nonfinite.values()) > 0 and any("NaN" in f for f in r.failures)
    assert r.max_abs["mask"] == float("inf")
    json.dumps(report.to_dict(), allow_nan=False)  # NaN/inf become null


def test_mask_iou_threshold_is_judged(exported_onnx, imported_ckpt, tmp_path):
    # The final conv x3 moves the mask far from the reference (IoU ~0.03, decided pixels too);
    # x1.05 only flips pixels at the threshold, which the gate forgives.
    wrong = _edit_last_conv(exported_onnx, tmp_path / "wrong.onnx", lambda w: w * 3)
    for gate, fails in ((0.5, True), (0.0, False)):
        report = run_parity([wrong], imported_ckpt, limit=2, batch_size=2, overrides=Thresholds(max_abs=1.0, mask_iou=gate))
        assert bool([f for f in report.results[0].failures if f.startswith("mask IoU")]) == fails


def test_reference_found_from_metadata(tmp_path, imported_ckpt):
    """Export into a sibling folder; parity finds the checkpoint by the recorded relative path."""
    import shutil

    from export.onnx import export_onnx

    run = tmp_path / "run"
    run.mkdir()
    ckpt = shutil.copy(imported_ckpt, run / "best.pt")
    onnx_path, _ = export_onnx(ckpt, tmp_path / "exports" / "model.onnx")
    r = run_cli("parity", "--model", str(onnx_path), "--limit", "2", cwd=tmp_path.parent)
    assert r.returncode == 0, r.stderr
    assert "best.pt" in r.stdout and "PASS" in r.stdout


def test_threshold_options_are_range_checked(exported_onnx, imported_ckpt):
    r = run_cli("parity", "--model", str(exported_onnx), "--reference", str(imported_ckpt), "--mask-iou", "2")
    assert r.returncode == 2 and "--mask-iou" in r.stderr


def test_worst_pair_png(perturbed_onnx, imported_ckpt, tmp_path):
    from PIL import Image

    r = run_cli("parity", "--model", str(perturbed_onnx), "--reference", str(imported_ckpt), "--limit", "3",
                "--png-dir", str(tmp_path / "png"), "--json", str(tmp_path / "p.json"))
    assert r.returncode == 1
    png = tmp_path / "png" / "worst-perturbed.png"
    panel = Image.open(png)
    assert panel.size[0] >= 8 * 128 and panel.mode == "RGB"  # 8 tiles: inputs, ref/model/diff per output
    report = json.loads((tmp_path / "p.json").read_text())
    worst = report["models"][0]["worst_pair_max_abs"]
    assert worst == pytest.approx(max(report["models"][0]["max_abs"].values()))


def _result(mask_iou, decided, precision="fp16"):
    from toolkit.verify.compare import DEFAULT_THRESHOLDS, ParityResult

    return ParityResult(model="m.onnx", backend="onnxruntime", precision=precision, pairs=4,
                        max_abs={"mask": 6e-5, "depth": 6e-5}, mean_abs={"mask": 1e-6, "depth": 1e-6},
                        mask_iou=mask_iou, mask_dice=mask_iou, depth_iou=1.0, depth_rmse=0.0,
                        thresholds=DEFAULT_THRESHOLDS[precision], mask_iou_decided=decided).judge()


def test_mask_iou_gate_forgives_only_flips_at_the_threshold():
    # a barely trained model: pixels at 0.5 +- rounding flip, every decided pixel agrees
    assert _result(0.9890, 1.0)
    failed = _result(0.9890, 0.95)  # decided pixels disagree too: a real failure, both figures shown
    assert not failed and failed.failures == ["mask IoU 0.9890 < 0.99 (0.9500 on pixels the reference decides by > 0.02)"]
    assert not _result(0.9890, None)  # results made without the figure are judged as before


def test_every_verdict_line_names_the_figures_that_decided_it():
    on_decided = _result(0.9273, 0.9801, precision="int8")
    assert on_decided.judged() == ("mask IoU 0.9273 < 0.97, but 0.9801 >= 0.97 over the pixels the reference decides by "
                                   "> 0.02, depth RMSE 0.0000 <= 0.02 on 4 pairs")
    assert on_decided.verdict().startswith("gate passed: mask IoU 0.9273 < 0.97, but 0.9801 >= 0.97")
    failed = _result(0.9273, 0.95, precision="int8")
    assert failed.verdict().startswith("gate FAILED: mask IoU 0.9273 < 0.97, and 0.9500 < 0.97 over the pixels")
    plain = _result(0.9990, None, precision="fp32")
    assert plain.judged() == "max abs diff 6.0e-05 <= 1e-04, mask IoU 0.9990 >= 0.999 on 4 pairs"


def test_unknown_precision_is_judged_as_fp32_by_parity_and_refused_by_export_checks(exported_onnx, imported_ckpt, tmp_path):
    from tests.badinputs.corpus import onnx_with_metadata
    from toolkit.core.errors import UserError
    from toolkit.verify.compare import check_model

    bf16 = onnx_with_metadata(exported_onnx, tmp_path / "bf16.onnx", **{"toolkit.precision": "bf16"})
    report = run_parity([bf16], imported_ckpt, limit=2, batch_size=2)
    assert report and report.results[0].thresholds == Thresholds(max_abs=1e-4, mask_iou=0.999)
    feeds = [{k: np.full((1, 3, 128, 128), 0.5, np.float32) for k in ("bg", "fgbg")}]
    with pytest.raises(UserError, match="unknown precision 'bf16'"):
        check_model(imported_ckpt, bf16, feeds)


def test_thresholds_refuse_values_outside_their_range():
    from toolkit.core.errors import UserError

    for bad in (dict(mask_iou=1.5), dict(max_abs=-1.0), dict(depth_rmse=float("nan"))):
        with pytest.raises(UserError, match="must be in \\[0, "):
            Thresholds(**bad)
    assert Thresholds(mask_iou=1.0, max_abs=0.0).mask_iou == 1.0


def test_a_pass_on_decided_pixels_says_which_figure_passed_and_why(capsys, monkeypatch):
    from toolkit.cli.run_cmd import print_parity
    from toolkit.verify.compare import ParityReport

    monkeypatch.setenv("COLUMNS", "200")
    r = _result(0.9053, 0.9851, precision="int8")
    r.empty_masks, r.pairs = 9, 16
    print_parity(ParityReport("epoch12.pt", 16, [r]))
    out = " ".join(capsys.readouterr().out.split())
    assert "PASS: mask IoU on decided pixels 0.9851 >= 0.97" in out and "(0.9851 decided pixels)" not in out
    assert "int8 thresholds: mask IoU >= 0.97, depth RMSE <= 0.02" in out
    assert "over all pixels it is 0.9053, under the 0.97 gate, because a pixel the reference leaves at about 0.5 flips" in out
    assert "9 of 16 images have no mask pixel in either output" in out


def test_parity_says_what_each_runtime_fell_back_to(exported_onnx, imported_ckpt):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing falls back")
    report = run_parity([exported_onnx], imported_ckpt, limit=2, batch_size=2, provider="cuda")
    assert report and any("CUDAExecutionProvider is not available" in n for n in report.notes)


def test_a_gate_that_passed_beside_a_failed_self_test_says_passed():
    """The export line reads 'gate passed: <figures>; self-test FAILED ...', never 'gate FAILED'
    over figures that all meet their thresholds."""
    from toolkit.verify.compare import SELF_TEST_FAILURE

    r = _result(0.99, None, precision="int8")
    r.failures.append(SELF_TEST_FAILURE + "mask IoU 0.8330 < 0.97")
    r.self_test = "self-test FAILED on its golden pairs: mask IoU 0.8330 < 0.97 on 2 pairs"
    assert not r and r.own_failures == [] and r.verdict().startswith("gate passed: mask IoU 0.9900 >= 0.97")
    assert r.and_self_test == "; self-test FAILED on its golden pairs: mask IoU 0.8330 < 0.97 on 2 pairs"
    failed = _result(0.90, 0.91, precision="int8")
    assert failed.verdict().startswith("gate FAILED: mask IoU 0.9000 < 0.97")
