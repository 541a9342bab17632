"""The training loop end to end on a tiny synthetic set (CPU, 32 px)."""

from __future__ import annotations

import csv
import itertools

import pytest
import torch

from toolkit.checkpoint import build_model, load_checkpoint, spec_of
from toolkit.errors import UserError
from toolkit.model import EVA4Net, MaskDepthModel
from train import loop
from train.config import RECIPES
from train.dataset import EpochBatches, PairTensors, epoch_order
from train.losses import MaskDepthLoss


def test_run_writes_checkpoints_metrics_and_samples(tiny_data, tmp_path, small_config):
    out = tmp_path / "run"
    result = loop.run(small_config(tiny_data, out, epochs=2, tensorboard=True), progress=False)
    assert (result.steps, result.epochs) == (6, 2)
    for name in ("last.pt", "best.pt", "metrics.csv", "samples.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    assert result.last == out / "last.pt" and result.best == out / "best.pt"

    ckpt = load_checkpoint(out / "last.pt")  # weights_only=True, validated
    assert (ckpt["epoch"], ckpt["step"], ckpt["recipe"]) == (2, 6, "seed")
    assert spec_of(ckpt).size == (32, 32)
    training = ckpt["training"]
    assert set(training) >= {"optimizer", "scheduler", "rng", "config", "position", "best", "history"}
    assert set(training["rng"]) >= {"torch", "numpy", "python"}
    assert training["position"] == {"step": 6, "epoch": 2, "batch": 0, "partial": {}}
    assert training["config"]["batch_size"] == 4 and len(training["history"]) == 2
    assert training["optimizer"]["state"], "momentum buffers are saved"

    model = build_model(ckpt)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        mask, depth = model(x, x)
    assert mask.shape == depth.shape == (2, 1, 32, 32)
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in ("train_loss", "val_loss", "val_mask_iou", "val_mask_dice", "val_depth_rmse", "val_depth_mae",
                "val_depth_iou", "val_seed_mask_iou", "val_seed_depth_iou", "val_seed_mask_dice_loss",
                "val_seed_depth_dice_loss"):
        assert rows[-1][key] != "", key
    best = load_checkpoint(out / "best.pt")
    assert best["metrics"]["val_mask_iou"] - best["metrics"]["val_depth_rmse"] == pytest.approx(
        max(loop.score_of(r) for r in result.history))


def test_default_synthetic_set_is_made_once_and_reused(tmp_path, small_config):
    out = tmp_path / "run"
    synth = {"backgrounds": 3, "foregrounds": 2, "placements": 1, "size": 32}
    result = loop.run(small_config(None, out, max_steps=1, synth=synth), progress=False)
    assert (out / "data").is_dir() and not (out / ".data.partial").exists()
    stamp = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*") if p.is_file()}
    assert stamp and result.steps == 1
    # metric depth on the synthetic set: AbsRel and delta1 are reported
    assert "val_depth_absrel" in result.history[-1] and "val_depth_delta1" in result.history[-1]
    loop.run(small_config(None, tmp_path / "run", max_steps=2, resume=out, synth=synth), progress=False)
    assert stamp == {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*") if p.is_file()}


def test_overfits_a_fixed_batch(tiny_data):
    """~30 steps on one fixed batch must drive its loss well down: the loop can learn at all."""
    from toolkit.data.reader import open_dataset

    torch.manual_seed(0)
    pairs = open_dataset(tiny_data)
    batch = next(iter(torch.utils.data.DataLoader(PairTensors(pairs, range(4), (32, 32)), batch_size=4)))
    model = MaskDepthModel(EVA4Net(), RECIPES["seed"].spec.with_size(32))
    opt = loop.make_optimizer(RECIPES["seed"], model.net.parameters(), 0.01, 0.9)
    losses: list[float] = []
    loop.train_one_epoch(model, itertools.repeat(batch, 30), opt, loop.make_scheduler(RECIPES["seed"], opt),
                         MaskDepthLoss(RECIPES["seed"]), torch.device("cpu"),
                         on_step=lambda loss, n: losses.append(loss))
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 0}, "batch size"),
    ({"image_size": 30}, "multiple of 4"),
    ({"epochs": 0}, "epochs"),
    ({"max_steps": -1}, "max steps"),
    ({"device": "tpu"}, "device"),
    ({"recipe": "nope"}, "unknown recipe"),
    ({"holdout": 1.0}, "holdout"),
])
def test_bad_options_are_user_errors(tiny_data, tmp_path, small_config, change, message):
    with pytest.raises(UserError, match=message):
        loop.run(small_config(tiny_data, tmp_path / "run", **change), progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_user_error(tiny_data, tmp_path, small_config):
    with pytest.raises(UserError, match="CUDA is not available"):
        loop.run(small_config(tiny_data, tmp_path / "run", device="cuda"), progress=False)


def test_missing_data_is_a_user_error(tmp_path, small_config):
    with pytest.raises(UserError, match="no such data"):
        loop.run(small_config(tmp_path / "absent", tmp_path / "run"), progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, small_config, monkeypatch):
    calls = {"n": 0}
    real = MaskDepthLoss.__call__

    def poisoned(self, *args):
        total, parts = real(self, *args)
        calls["n"] += 1
        if calls["n"] == 6:  # the second training step of epoch 2
            total = total * float("nan")
        return total, parts

    monkeypatch.setattr(MaskDepthLoss, "__call__", poisoned)
    out = tmp_path / "run"
    with pytest.raises(loop.TrainingDiverged, match="nan.*last good checkpoint"):
        loop.run(small_config(tiny_data, out, epochs=3), progress=False)
    # epoch 1: 3 training calls + 1 held-out batch; epoch 2 dies on its second step
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 3)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert epoch_order(10, 0, 1) == epoch_order(10, 0, 1)
    assert epoch_order(10, 0, 1) != epoch_order(10, 0, 2)
    assert sorted(epoch_order(10, 3, 5)) == list(range(10))
    sampler = EpochBatches(9, 4, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    assert [len(b) for b in full] == [4, 4, 1] and len(sampler) == 3
    sampler.set_epoch(2, start=1)
    assert list(sampler) == full[1:] and len(sampler) == 2
