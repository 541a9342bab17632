"""`toolkit train --init`: a new run from a model's weights (a toolkit or an original checkpoint)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import LEGACY_FIXTURE, TRAINED_FIXTURE, run_cli
from toolkit.core.errors import UserError
from toolkit.data.synth import synthesize
from toolkit.net.checkpoint import load_checkpoint, spec_of, tail_stats_from
from toolkit.net.legacy import read_legacy
from train import loop


def test_a_run_from_the_authors_file_starts_from_its_weights_with_per_head_statistics(tiny_data, tmp_path, small_config):
    """One step at a negligible learning rate: the weights are the original file's, the recipe
    is the model's own (seed), the tail keeps one set per head, the depth runs far-bright."""
    config = small_config(tiny_data, tmp_path / "run", recipe=None, init=LEGACY_FIXTURE, tail="per_head", lr=1e-12,
                          max_steps=1)
    result = loop.run(config, progress=False)
    ckpt = load_checkpoint(result.last)
    assert ckpt["recipe"] == "seed" and tail_stats_from(ckpt) == "per_head"
    assert spec_of(ckpt).depth_convention == "far-bright"
    original = read_legacy(LEGACY_FIXTURE).state
    for key in ("convblock1.0.weight", "convblock7.0.pointwise.weight", "convblock8_.0.weight"):
        torch.testing.assert_close(ckpt["model"][key], torch.from_numpy(original[key]), atol=1e-6, rtol=0)
    assert ckpt["training"]["config"]["init"] == str(LEGACY_FIXTURE)


def test_a_model_and_data_whose_depth_runs_differently_are_refused(tmp_path, small_config):
    """The trained fixture predicts near-bright depth; a far-bright set would make it unlearn it."""
    data = tmp_path / "far"
    synthesize(data, backgrounds=2, foregrounds=2, placements=1, size=32, seed=1)
    with pytest.raises(UserError, match="predicts near-bright depth, but .* holds far-bright depth"):
        loop.run(small_config(data, tmp_path / "run", recipe=None, init=TRAINED_FIXTURE), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, message", [
    (["--resume", "runs/x"], "--init starts a new run"),
    (["--tail", "both"], "--tail must be one of shared, joint, per_head"),
])
def test_bad_init_options_are_one_line(tmp_path, extra, message):
    r = run_cli("train", "--init", str(TRAINED_FIXTURE), "--out", str(tmp_path / "run"), *extra)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    missing = run_cli("train", "--init", str(tmp_path / "none.pt"), "--out", str(tmp_path / "run"))
    assert missing.returncode == 2 and "no such checkpoint" in missing.stderr
