"""BatchNorm re-estimation: the label-free agreement, the per-head tail, and what reaches the export."""

import numpy as np
import pytest
import torch

from tests.conftest import TRAINED_FIXTURE, run_cli
from toolkit.core.errors import CheckFailed, UserError
from toolkit.data.calib import synthetic_pairs
from toolkit.net.checkpoint import build_model, load_checkpoint, make_checkpoint, save_checkpoint, tail_stats_from
from toolkit.net.recalibrate import CalibrationOptions, agreement, recalibrate


@pytest.fixture(scope="session")
def recalibrated_ckpt(tmp_path_factory, legacy_fixture):
    """The epoch-12 fixture imported as `toolkit import-legacy` does by default."""
    from toolkit.net.legacy import import_legacy

    out = tmp_path_factory.mktemp("recalibrated") / "epoch12.pt"
    report = import_legacy(legacy_fixture, out, say=lambda _: None)
    return out, report.recalibration


@pytest.fixture(scope="session")
def other_pairs(tmp_path_factory):
    """Held-out synthetic pairs the re-estimation never saw (another seed), at 128 px."""
    from toolkit.data.reader import open_dataset
    from toolkit.data.synth import synthesize

    folder = tmp_path_factory.mktemp("other") / "set"
    synthesize(folder, backgrounds=2, foregrounds=4, placements=2, size=128, seed=91)
    with open_dataset(folder) as ds:
        batch = ds.load_batch(range(8), (128, 128))
    return {k: batch[k] for k in ("bg", "fgbg")}


def test_the_fixture_imported_by_default_agrees_where_the_exact_import_does_not(recalibrated_ckpt, imported_ckpt, other_pairs):
    """Done-when: >= 0.6 label-free agreement on held-out synthetic pairs for the default import,
    and the exact import (statistics as shipped) fails the same check."""
    path, report = recalibrated_ckpt
    assert report.before < 0.1 and report.after >= 0.6 and report.passed
    assert report.tail_before == "shared" and report.tail_after == "per_head"
    ckpt = load_checkpoint(path)
    assert tail_stats_from(ckpt) == "per_head" and ckpt["recalibration"]["agreement_after"] == report.after
    assert agreement(build_model(ckpt), other_pairs) >= 0.6
    assert agreement(build_model(load_checkpoint(imported_ckpt)), other_pairs) < 0.1


def test_reestimation_changes_statistics_only(recalibrated_ckpt, imported_ckpt):
    new = load_checkpoint(recalibrated_ckpt[0])["model"]
    old = load_checkpoint(imported_ckpt)["model"]
    for key, value in old.items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(new[key], value), key
    assert not torch.allclose(new["convblock7.1.mask.running_mean"], new["convblock7.1.depth.running_mean"])
    assert not torch.allclose(new["convblock1.1.running_var"], old["convblock1.1.running_var"])


def test_each_heads_statistics_reach_the_onnx_export(recalibrated_ckpt, exported_onnx, other_pairs, tmp_path):
    """The export of the per-head model (and its fixed-camera halves) equals its PyTorch model and
    not the shared one's: each head's copy of the tail was folded with its own statistics."""
    from export.fixed_camera import export_halves
    from export.onnx import export_onnx
    from toolkit.runtime import open_runner

    path, _ = recalibrated_ckpt
    onnx_path, check = export_onnx(path, tmp_path / "model.onnx")
    assert check  # ONNX Runtime vs PyTorch at fp32 tolerance, or nothing is written
    assert export_halves(path, onnx_path)[2]  # the fixed camera's pair too: its frame half runs both tails
    feed = {k: v[:4] for k, v in other_pairs.items()}
    with torch.no_grad():
        mask, depth = build_model(load_checkpoint(path))(*(torch.from_numpy(feed[k]) for k in ("bg", "fgbg")))
    with open_runner(onnx_path) as runner:
        out = runner.infer(feed)
    with open_runner(exported_onnx) as runner:
        shipped = runner.infer(feed)
    np.testing.assert_allclose(out["mask"], mask.numpy(), atol=1e-4)
    np.testing.assert_allclose(out["depth"], depth.numpy(), atol=1e-4)
    assert np.abs(out["mask"] - shipped["mask"]).mean() > 0.05


def test_an_old_checkpoint_without_the_field_loads_as_it_was_written(tmp_path):
    """Written before tail_stats existed: an improved-recipe file is "joint", others "shared"."""
    raw = torch.load(TRAINED_FIXTURE, weights_only=True)
    assert "tail_stats" not in raw["arch"] and raw["recipe"] == "improved"
    assert tail_stats_from(load_checkpoint(TRAINED_FIXTURE)) == "joint"
    ckpt = make_checkpoint(raw["model"], build_model(raw).spec, recipe="seed")
    del ckpt["arch"]["tail_stats"]
    save_checkpoint(tmp_path / "seed.pt", ckpt)
    assert tail_stats_from(load_checkpoint(tmp_path / "seed.pt")) == "shared"
    ckpt["arch"]["tail_stats"] = "per_head"  # but the weights hold one set
    save_checkpoint(tmp_path / "lie.pt", ckpt)
    with pytest.raises(UserError, match="tail keeps per_head BatchNorm statistics, its weights hold shared"):
        load_checkpoint(tmp_path / "lie.pt")


def test_a_joint_tail_stays_joint_and_a_low_agreement_is_refused(tmp_path):
    pairs = synthetic_pairs(tmp_path, (64, 64), calib_pairs=8, gate_pairs=4, purpose="re-estimation")
    ckpt = load_checkpoint(TRAINED_FIXTURE)
    new, report = recalibrate(ckpt, pairs, min_agreement=1.0)
    assert report.tail_before == report.tail_after == "joint" and tail_stats_from(new) == "joint"
    assert not report and "label-free agreement" in report.summary()
    with pytest.raises(UserError, match="minimum agreement"):
        CalibrationOptions(min_agreement=1.5)
    with pytest.raises(UserError, match="re-estimation: calibration pairs must be between 1"):
        CalibrationOptions(calib_pairs=0)


def test_recalibrate_command_writes_only_what_passes(tmp_path, val_data):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(TRAINED_FIXTURE.read_bytes())
    refused = run_cli("recalibrate", str(ckpt), "--data", str(val_data), "--calib-pairs", "8", "--min-agreement", "1",
                      "--out", str(tmp_path / "no.pt"))
    assert refused.returncode == CheckFailed.exit_code, refused.stderr
    assert "not written" in refused.stderr and not (tmp_path / "no.pt").exists()
    assert len(refused.stderr.strip().splitlines()) == 1
    ok = run_cli("recalibrate", str(ckpt), "--data", str(val_data), "--calib-pairs", "8", "--min-agreement", "0",
                 "--out", str(tmp_path / "yes.pt"))
    assert ok.returncode == 0, ok.stderr
    assert "label-free agreement" in ok.stdout and load_checkpoint(tmp_path / "yes.pt")["recalibration"]


def test_import_legacy_keep_statistics_is_the_exact_import(legacy_fixture, imported_ckpt, tmp_path):
    r = run_cli("import-legacy", str(legacy_fixture), "--keep-statistics", "--out", str(tmp_path / "k.pt"))
    assert r.returncode == 0, r.stderr
    assert "kept as shipped" in r.stdout
    kept, exact = load_checkpoint(tmp_path / "k.pt")["model"], load_checkpoint(imported_ckpt)["model"]
    assert all(torch.equal(kept[k], exact[k]) for k in exact)
    both = run_cli("import-legacy", str(legacy_fixture), "--keep-statistics", "--calib", str(tmp_path),
                   "--out", str(tmp_path / "x.pt"))
    assert both.returncode == 2 and not (tmp_path / "x.pt").exists()


def test_doctor_and_parity_warn_about_statistics_that_do_not_match(imported_ckpt, recalibrated_ckpt, exported_onnx):
    from toolkit.net.recalibrate import check_statistics
    from toolkit.verify.parity import run_parity

    assert not check_statistics(imported_ckpt) and check_statistics(recalibrated_ckpt[0])
    report = run_parity([exported_onnx], imported_ckpt, limit=2)
    assert report and any(n.startswith("warning: epoch12.pt: BatchNorm statistics do not match") for n in report.notes)
    r = run_cli("doctor", "--model", str(recalibrated_ckpt[0]))
    assert r.returncode == 0 and "BatchNorm statistics match its network: label-free agreement" in r.stdout, r.stderr
