"""Extending a run (`--resume RUN --epochs 2` after 1) gives the added epochs a cosine of their
own, said in one line; the same plan resumed follows exactly the same curve."""

from __future__ import annotations

import pytest
import torch

from toolkit.net.checkpoint import load_checkpoint
from train import loop
from train.config import RECIPES


def test_the_first_plan_is_the_warm_up_cosine_and_each_extension_a_cosine_of_its_own():
    from train.optim import restarted_cosine, warmup_cosine

    one, plan = warmup_cosine(20, 0.05), restarted_cosine([20], 0.05)
    assert [plan(s) for s in range(25)] == [one(s) for s in range(25)]  # the same numbers: resume stays exact
    extended = restarted_cosine([20, 30, 34], 0.05)
    assert [extended(s) for s in range(20)] == [one(s) for s in range(20)]
    assert [extended(s) for s in (20, 25, 30, 32, 34, 40)] == pytest.approx([1.0, 0.5, 1.0, 0.5, 0.0, 0.0])


def test_extending_a_finished_run_restarts_the_cosine_and_says_so(tiny_data, tmp_path, small_config, monkeypatch,
                                                                  capsys):
    lrs: list[float] = []
    real = torch.optim.AdamW.step

    def step(self, *args, **kw):
        lrs.append(self.param_groups[0]["lr"])  # the rate this step trains with
        return real(self, *args, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    run, peak = tmp_path / "run", RECIPES["improved"].lr
    loop.run(small_config(tiny_data, run, epochs=1, recipe="improved"), progress=False)  # 3 steps, down to 0
    assert len(lrs) == 3 and load_checkpoint(run / "last.pt")["training"]["optimizer"]["param_groups"][0]["lr"] == 0.0
    lrs.clear()
    capsys.readouterr()
    loop.run(small_config(tiny_data, None, epochs=2, resume=run, recipe="improved"), progress=True)
    assert lrs == pytest.approx([peak, 0.75 * peak, 0.25 * peak])  # not from ~0, nor mid-way down a stretched curve
    err = capsys.readouterr().err
    assert (f"epoch 2 extend a run planned for 1 epoch: a new cosine over the added epochs, the learning rate restarting "
            f"at {peak:g} and falling to 0 at epoch 2 (the first epoch keeps its curve)") in err, err
    assert load_checkpoint(run / "last.pt")["training"]["schedule"] == {"epochs": [1, 2]}
