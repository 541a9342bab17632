"""`toolkit val`: every model against the labels of held-out backgrounds, beside its latency."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import TRAINED_FIXTURE, run_cli
from toolkit.core.errors import UserError
from toolkit.tasks.val import held_out, validate


@pytest.fixture(scope="module")
def zeroed_ckpt(tmp_path_factory):
    """The trained fixture with every weight set to zero: a model that has learnt nothing."""
    import torch

    from toolkit.net.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(TRAINED_FIXTURE)
    ckpt["model"] = {k: torch.zeros_like(v) for k, v in ckpt["model"].items()}
    return save_checkpoint(tmp_path_factory.mktemp("zeroed") / "zeroed.pt", ckpt)


def test_held_out_pairs_come_only_from_held_out_backgrounds(val_data):
    from toolkit.data.holdout import split_by_background
    from toolkit.data.reader import open_dataset

    pairs = held_out(val_data, (64, 64), holdout=0.4, limit=100)
    with open_dataset(val_data) as ds:
        _, held = split_by_background(ds, holdout=0.4, seed=0)
    assert pairs.count == len(held) == 12 and pairs.backgrounds == 2
    assert pairs.truth["mask"].shape == (12, 1, 64, 64) and pairs.inputs["bg"].shape == (12, 3, 64, 64)


def test_a_trained_model_scores_and_a_zeroed_one_does_not(trained_onnx, zeroed_ckpt, val_data):
    report = validate([trained_onnx, zeroed_ckpt], val_data, holdout=0.4, batches=[1, 2], warmup=0, iters=2,
                      depth_units="synthetic", load=lambda: None)  # no busy-machine warning after the notes read here
    trained, zeroed = report.rows
    assert trained.backend == "onnxruntime" and zeroed.backend == "pytorch" and report.pairs == 12
    assert trained.figures["mask_iou"] > 0.5 and trained.figures["depth_rmse"] < 0.08
    assert zeroed.figures["mask_iou"] < 0.2 and zeroed.figures["depth_rmse"] > 1.5 * trained.figures["depth_rmse"]
    assert 0 < trained.figures["depth_delta1"] <= 1 and trained.figures["depth_absrel"] > 0
    assert set(trained.ms_per_pair) == {1, 2} and trained.speedup[1] == pytest.approx(1.0)
    assert zeroed.speedup[2] > 0 and "metres" in report.notes[-1]


def test_the_cli_writes_table_json_and_plot_and_gates(trained_onnx, val_data, tmp_path):
    from PIL import Image

    r = run_cli("val", "--model", str(trained_onnx), "--data", str(val_data), "--holdout", "0.4", "--batch", "1,2",
                "--iters", "2", "--json", str(tmp_path / "v.json"), "--plot", str(tmp_path / "v.png"), "--min-mask-iou", "0.99")
    assert r.returncode == 1 and "mask IoU" in r.stderr and "< 0.99" in r.stderr, r.stderr
    assert "reference row: model.pt" in r.stdout and "ms b2" in r.stdout
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [row["backend"] for row in doc["rows"]] == ["pytorch", "onnxruntime"] and doc["depth_units"] == "gray"
    a, b = (row["figures"]["mask_iou"] for row in doc["rows"])
    assert a == pytest.approx(b, abs=1e-3)  # the export is the checkpoint, against the same truth
    with Image.open(tmp_path / "v.png") as im:
        assert im.size[0] >= 800 and len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 10


def test_val_runs_an_onnx_model_without_torch(trained_onnx, val_data):
    r = run_cli("val", "--model", str(trained_onnx), "--data", str(val_data), "--holdout", "0.4", "--batch", "1",
                "--iters", "1", "--limit", "4", block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "PyTorch is not installed" in r.stdout and "onnxruntime" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--depth-units", "feet"], "--depth-units must be one of"),
    (["--limit", "0"], "--limit must be a positive"),
    (["--batch", "0"], "batch sizes must be in"),
    (["--data", "/nonexistent/set"], "no such data folder"),
    (["--holdout", "0.3"], "--holdout and --seed choose the held-out backgrounds of --data"),
    (["--all"], "--all scores every pair of --data (a test set of its own); give --data"),
    (["--all", "--data", ".", "--seed", "3"], "--all scores every pair of --data; --holdout and --seed choose"),
])
def test_bad_options_are_one_line(trained_onnx, args, message):
    r = run_cli("val", "--model", str(trained_onnx), "--no-reference", "--iters", "1", *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_data_set_of_one_background_is_refused(tmp_path, trained_onnx):
    from toolkit.data.synth import synthesize

    synthesize(tmp_path / "one", backgrounds=1, foregrounds=2, placements=1, size=64, seed=1)
    with pytest.raises(UserError, match="at least 2"):
        validate([trained_onnx], tmp_path / "one", iters=1, batches=[1])


def test_all_scores_a_test_set_whole_and_says_so(trained_onnx, tmp_path):
    """A separate labelled test set: every pair is scored (before: only the held-out fifth)."""
    from toolkit.data.synth import synthesize

    synthesize(tmp_path / "test-set", backgrounds=3, foregrounds=2, placements=1, size=64, seed=4)  # 6 pairs
    whole = validate([trained_onnx], tmp_path / "test-set", every_pair=True, batches=[1], warmup=0, iters=1)
    share = validate([trained_onnx], tmp_path / "test-set", batches=[1], warmup=0, iters=1)
    assert whole.pairs == 6 and whole.backgrounds == 3 and share.pairs < 6
    assert whole.notes[0] == "6 pairs from all 3 backgrounds of test-set (--all: a test set of its own, no pair held back for training)"


def test_val_says_when_its_times_were_taken_on_a_busy_machine(trained_onnx, val_data):
    readings = iter((3.0, 3.4))
    report = validate([trained_onnx], val_data, holdout=0.4, batches=[1], warmup=0, iters=1, load=lambda: next(readings))
    assert report.notes[-1].startswith("warning: the machine was busy during this run (load average 3.0 before, 3.4 after")
    assert "these times are not this machine's" in report.notes[-1]
