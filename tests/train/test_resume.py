"""Stopping and resuming gives bit-identical weights to a run that never stopped (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from toolkit.core.errors import UserError
from toolkit.net.checkpoint import load_checkpoint
from train import loop

TOTAL = 8  # 3 steps per epoch: the full run ends inside epoch 3


def assert_same(a, b, where: str = "") -> None:
    """Recursive torch.equal over nested dicts / lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory, small_config) -> dict:
    out = tmp_path_factory.mktemp("full")
    result = loop.run(small_config(tiny_data, out, epochs=5, max_steps=TOTAL), progress=False)
    assert result.steps == TOTAL
    return load_checkpoint(out / "last.pt")


@pytest.mark.parametrize("stop", [4, 3], ids=["mid-epoch", "epoch-boundary"])
def test_resume_matches_uninterrupted_run(uninterrupted, tiny_data, tmp_path, small_config, stop):
    out = tmp_path / "run"
    first = loop.run(small_config(tiny_data, out, epochs=5, max_steps=stop), progress=False)
    assert first.steps == stop
    half = load_checkpoint(out / "last.pt")
    assert half["training"]["position"]["step"] == stop

    result = loop.run(small_config(tiny_data, None, epochs=5, max_steps=TOTAL, resume=out), progress=False)
    assert result.out == out and result.steps == TOTAL
    resumed = load_checkpoint(out / "last.pt")
    assert_same(uninterrupted["training"]["position"], resumed["training"]["position"], "position")
    where = {k: resumed["training"]["position"][k] for k in ("step", "epoch", "batch")}
    assert where == {"step": TOTAL, "epoch": 2, "batch": 2}
    assert_same(uninterrupted["model"], resumed["model"], "model")
    assert_same(uninterrupted["training"]["optimizer"], resumed["training"]["optimizer"], "optimizer")
    assert_same(uninterrupted["training"]["scheduler"], resumed["training"]["scheduler"], "scheduler")
    assert_same(uninterrupted["training"]["rng"], resumed["training"]["rng"], "rng")
    # the finished epochs' training losses are the same numbers too
    full_rows = [r for r in uninterrupted["training"]["history"] if float(r["epoch"]).is_integer()]
    res_rows = [r for r in resumed["training"]["history"] if float(r["epoch"]).is_integer()]
    assert [r["train_loss"] for r in full_rows] == [r["train_loss"] for r in res_rows]


def test_improved_recipe_resumes_exactly_with_its_averaged_weights(tiny_data, tmp_path, small_config):
    """Augmentation draws, the warm-up/cosine schedule, clipping and the weight average all
    continue exactly: the averaged weights (the checkpoint's model) and the optimiser's own."""
    full = loop.run(small_config(tiny_data, tmp_path / "full", epochs=2, recipe="improved"), progress=False)
    assert full.steps == 6
    loop.run(small_config(tiny_data, tmp_path / "run", epochs=2, recipe="improved", max_steps=4), progress=False)
    loop.run(small_config(tiny_data, None, epochs=2, resume=tmp_path / "run", recipe="improved"), progress=False)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert a["recipe"] == b["recipe"] == "improved" and a["iospec"]["mask"]["kind"] == "sigmoid"
    assert_same(a["model"], b["model"], "model (averaged)")
    assert_same(a["training"]["live_model"], b["training"]["live_model"], "live model")
    assert a["training"]["ema_updates"] == b["training"]["ema_updates"] == 6
    assert_same(a["training"]["optimizer"], b["training"]["optimizer"], "optimizer")
    assert_same(a["training"]["scheduler"], b["training"]["scheduler"], "scheduler")
    assert any(not torch.equal(a["model"][k], a["training"]["live_model"][k]) for k in a["model"])


def test_resume_removes_checkpoint_temporaries_of_a_killed_run(tiny_data, tmp_path, small_config):
    out = tmp_path / "run"
    loop.run(small_config(tiny_data, out, max_steps=1), progress=False)
    stale = [out / ".last.pt.x1y2z3.tmp", out / ".best.pt.abc.tmp"]
    for f in stale:
        f.write_bytes(b"half a checkpoint")
    keep = out / ".notes.tmp"  # not ours: left alone
    keep.write_text("x")
    loop.run(small_config(tiny_data, None, max_steps=2, resume=out), progress=False)
    assert not any(f.exists() for f in stale) and keep.exists()


def test_resume_refuses_changed_settings_and_missing_state(tiny_data, tmp_path, small_config):
    out = tmp_path / "run"
    loop.run(small_config(tiny_data, out, max_steps=1), progress=False)
    with pytest.raises(UserError, match="batch.*differs"):
        loop.run(small_config(tiny_data, None, batch_size=8, resume=out), progress=False)
    with pytest.raises(UserError, match="no last.pt"):
        loop.run(small_config(tiny_data, None, resume=tmp_path), progress=False)


def test_resume_of_a_finished_run_does_nothing(tiny_data, tmp_path, small_config):
    out = tmp_path / "run"
    loop.run(small_config(tiny_data, out, max_steps=2), progress=False)
    before = Path(out / "last.pt").read_bytes()
    result = loop.run(small_config(tiny_data, None, max_steps=2, resume=out / "last.pt"), progress=False)
    assert result.steps == 2 and Path(out / "last.pt").read_bytes() == before


def _resume(out, **kw) -> loop.TrainResult:
    """Resume as the command line does: only the options given are set (the rest None)."""
    from train.config import TrainConfig

    base = {"resume": out, "device": "cpu", "workers": 0, "tensorboard": False}
    base.update(kw)
    return loop.run(TrainConfig(**base), progress=False)


def test_resume_keeps_settings_accepts_the_same_values_and_extends(tiny_data, tmp_path, small_config):
    out = tmp_path / "run"
    loop.run(small_config(tiny_data, out, max_steps=1), progress=False)  # epochs 1, batch 4, 32 px
    # not given: the run's own settings (epochs 1 -> the run ends after 3 steps)
    assert _resume(out, max_steps=5).steps == 3
    # given with the run's own values: fine, not "cannot change"
    assert _resume(out, batch_size=4, image_size=32, seed=0, recipe="seed", lr=0.01, holdout=0.2).steps == 3
    # --epochs equal to the default is still an explicit request to extend the run
    result = _resume(out, epochs=12, max_steps=5)
    assert result.steps == 5
    assert load_checkpoint(out / "last.pt")["training"]["config"]["epochs"] == 12
    for change, flag in (({"batch_size": 32}, "--batch-size"), ({"image_size": 128}, "--image-size"),
                         ({"lr": 0.1}, "--lr"), ({"seed": 1}, "--seed")):
        with pytest.raises(UserError, match=f"{flag} .* differs from the run being resumed"):
            _resume(out, **change)


def test_data_path_is_stored_absolute_and_may_move(tiny_data, tmp_path, small_config, monkeypatch):
    import shutil

    first = tmp_path / "a"
    shutil.copytree(tiny_data, first / "set")
    monkeypatch.chdir(first)
    loop.run(small_config(Path("set"), Path("run"), max_steps=1), progress=False)
    out = first / "run"
    config = load_checkpoint(out / "last.pt")["training"]["config"]
    assert config["data"] == str(first / "set") and Path(config["data"]).is_absolute()

    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _resume(out, max_steps=2).steps == 2  # the relative path given then still finds the data

    moved = shutil.move(first / "set", tmp_path / "moved")
    with pytest.raises(UserError, match=r"no such data folder.*--data"):
        _resume(out, max_steps=3)
    assert _resume(out, data=Path("../moved"), max_steps=3).steps == 3
    assert load_checkpoint(out / "last.pt")["training"]["config"]["data"] == str(moved)

    from toolkit.data.synth import synthesize

    other = synthesize(tmp_path / "other", backgrounds=3, foregrounds=1, placements=1, size=32).out
    with pytest.raises(UserError, match="same data set"):
        _resume(out, data=other, max_steps=4)
    assert load_checkpoint(out / "last.pt")["training"]["position"]["step"] == 3
