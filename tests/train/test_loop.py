"""The training loop end to end on a tiny synthetic set (CPU, 32 px)."""

from __future__ import annotations

import csv
import itertools

import pytest
import torch

from toolkit.core.errors import UserError
from toolkit.net.checkpoint import build_model, load_checkpoint, spec_of
from toolkit.net.model import EVA4Net, MaskDepthModel
from train import loop
from train.config import RECIPES
from train.dataset import EpochBatches, PairTensors, epoch_order
from train.losses import MaskDepthLoss


def test_run_writes_checkpoints_metrics_and_samples(tiny_data, tmp_path, small_config):
    out = tmp_path / "run"
    result = loop.run(small_config(tiny_data, out, epochs=2, tensorboard=True, preview_every=2), progress=False)
    assert (result.steps, result.epochs) == (6, 2)
    for name in ("last.pt", "best.pt", "metrics.csv", "samples.png", "curves.png"):
        assert (out / name).is_file(), name
    from PIL import Image

    with Image.open(out / "curves.png") as im:  # one panel per figure group, a readable size
        assert im.format == "PNG" and im.width >= 4 * im.height // 2 and im.height >= 200
    with Image.open(out / "samples.png") as im:  # 6 columns of 32 px enlarged 4x, 3 held-out rows, a label band
        assert im.width == 6 * 128 + 5 * 2 and im.height > 3 * 128 + 2 * 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Images("preview")] == [2, 4, 6]
    assert [e.step for e in events.Images("samples")] == [3, 6]
    assert {"train/loss", "train/lr", "epoch/val_mask_iou", "epoch/lr"} <= set(events.Tags()["scalars"])
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
                "val_depth_above_half_iou", "val_seed_mask_iou", "val_seed_depth_iou", "val_seed_mask_dice_loss",
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


@pytest.mark.parametrize("recipe, ratio, steps", [("seed", 0.5, 60), ("improved", 0.8, 30)])
def test_overfits_a_fixed_batch(tiny_data, recipe, ratio, steps):
    """A few dozen steps on one fixed batch must drive its loss well down: the loop can learn at
    all, with either recipe's optimiser, schedule, losses, augmentation, clipping and averaging.
    The seed recipe gets 60: its depth targets are normalised with the original set's statistics
    (mean 0.35), far from the synthetic set's bright = far depth (mean ~0.68 here), so its L1
    loss starts high and falls more slowly (ratio 0.63 after 30 steps, 0.35 after 60)."""
    from toolkit.data.reader import open_dataset
    from train.ema import WeightAverage
    from train.step import StepOptions

    r = RECIPES[recipe]
    torch.manual_seed(0)
    pairs = open_dataset(tiny_data)
    batch = next(iter(torch.utils.data.DataLoader(PairTensors(pairs, range(4), (32, 32)), batch_size=4)))
    model = MaskDepthModel(EVA4Net(), r.spec.with_size(32))
    opt = loop.make_optimizer(r, model.net.parameters(), r.lr, r.momentum)
    ema = WeightAverage(model.net, r.ema) if r.ema else None
    options = StepOptions(augment_seed=0 if r.augment else None, grad_clip=r.grad_clip, ema=ema)
    losses: list[float] = []
    loop.train_one_epoch(model, itertools.repeat(batch, steps), opt, loop.make_scheduler(r, opt, total_steps=steps),
                         MaskDepthLoss(r), torch.device("cpu"), on_step=lambda loss, n: losses.append(loss),
                         options=options)
    assert len(losses) == steps
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < ratio * first, (first, last)  # the improved loss has Dice/SSIM terms that stay > 0 longer
    if ema is not None:
        assert ema.updates == steps
        live, avg = model.net.state_dict(), ema.state_dict()
        assert any(not torch.equal(live[k], avg[k]) for k in live if live[k].dtype.is_floating_point)


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
    assert not (tmp_path / "run").exists()  # checked before the run folder is made


def test_missing_or_unusable_data_is_a_user_error_before_the_run_folder(tmp_path, small_config):
    with pytest.raises(UserError, match="no such data"):
        loop.run(small_config(tmp_path / "absent", tmp_path / "run"), progress=False)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("not a data set")
    with pytest.raises(UserError):
        loop.run(small_config(garbage, tmp_path / "run"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        loop.run(small_config(tmp_path / "empty", tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


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


def _with_truncated_fgbg(tiny_data, where):
    """A copy of the tiny set with one composite cut in half (a truncated JPEG)."""
    import shutil

    data = shutil.copytree(tiny_data, where)
    bad = sorted((data / "OverlayedImages").rglob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return data, bad


def test_bad_image_read_in_a_worker_is_one_clean_line(tiny_data, tmp_path, small_config):
    """PyTorch re-raises a worker's error with the worker's traceback in its message: the user
    sees the original one-line message instead, and no run folder is left behind."""
    data, bad = _with_truncated_fgbg(tiny_data, tmp_path / "set")
    out = tmp_path / "new" / "run"
    with pytest.raises(UserError) as info:
        loop.run(small_config(data, out, workers=2, holdout=0.01), progress=False)
    message = str(info.value)
    assert bad.name in message and "not a readable image" in message, message
    assert "Traceback" not in message and 'File "' not in message and "worker" not in message, message
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "new").exists()  # the folders this run made are gone again


def test_worker_error_message_passes_other_errors_through():
    assert loop.worker_error_message(UserError("plain")) is None
    assert loop.worker_error_message(RuntimeError("Original Traceback (most recent call last):\nx")) is None
    folded = UserError("Caught UserError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
                       "last):\n  File \"x.py\", line 1, in f\ntoolkit.core.errors.UserError: a.jpg: broken\n")
    assert loop.worker_error_message(folded) == "a.jpg: broken"


def test_deterministic_sets_the_flags_while_training_and_restores_them(tiny_data, tmp_path, small_config, monkeypatch):
    seen: list[tuple[bool, bool, bool]] = []
    real = loop.train_one_epoch

    def spy(*args, **kw):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                     torch.backends.cudnn.benchmark))
        return real(*args, **kw)

    monkeypatch.setattr(loop, "train_one_epoch", spy)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    out = tmp_path / "run"
    loop.run(small_config(tiny_data, out, max_steps=1, deterministic=True), progress=False)
    assert seen == [(True, True, False)]
    assert load_checkpoint(out / "last.pt")["training"]["config"]["deterministic"] is True
    # a run started deterministic stays so when resumed without the flag
    loop.run(small_config(tiny_data, None, max_steps=2, resume=out), progress=False)
    assert seen[-1] == (True, True, False)
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == before
