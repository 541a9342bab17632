"""Stopping and resuming gives bit-identical weights to a run that never stopped (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from toolkit.checkpoint import load_checkpoint
from toolkit.errors import UserError
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
