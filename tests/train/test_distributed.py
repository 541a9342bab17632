"""Data-parallel training: the batch dealing, and a real 2-process gloo run on the CPU."""

from __future__ import annotations

import pytest
import torch

from toolkit.core.errors import UserError
from toolkit.net.checkpoint import build_net, load_checkpoint
from toolkit.net.model import EVA4Net
from train import distributed
from train.dataset import EpochBatches, batches_per_epoch
from train.launch import launch


def test_ranks_share_out_the_single_process_order():
    """Rank r of W takes every W-th index of each global batch of W*B: together the ranks see the
    same pairs per step as one process with batch W*B, in the same order."""
    n, b, world = 11, 2, 2
    ranks = [EpochBatches(n, b, seed=5, rank=r, world=world) for r in range(world)]
    single = EpochBatches(n, b * world, seed=5)
    for s in (*ranks, single):
        s.set_epoch(3)
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == batches_per_epoch(n, b, world) == 3
    for step, whole in enumerate(single):
        got = sorted(per_rank[0][step] + per_rank[1][step])
        if len(whole) >= world:
            assert got == sorted(whole)
    # 11 pairs: the last global batch holds 3, so both ranks still get pairs (none is empty)
    assert len(list(single)[-1]) == 3 and [len(batches[-1]) for batches in per_rank] == [2, 1]
    seen = [i for r in per_rank for batch in r for i in batch]
    assert sorted(seen) == list(range(n))  # every index seen, each exactly once (3 is no multiple of 2: none topped up)


def test_a_single_pair_per_rank_is_topped_up():
    s0, s1 = (EpochBatches(1, 4, seed=0, rank=r, world=2) for r in range(2))
    assert list(s0) == [[0]] and list(s1) == [[0]]


def test_parameter_hash_sees_every_parameter():
    torch.manual_seed(0)
    net = EVA4Net()
    before = distributed.parameters_sha256(net)
    with torch.no_grad():
        next(iter(net.parameters()))[0, 0, 0, 0] += 1e-6
    assert distributed.parameters_sha256(net) != before


def test_launch_refuses_bad_process_counts(small_config, tiny_data, tmp_path):
    with pytest.raises(UserError, match="--nproc"):
        launch(small_config(tiny_data, tmp_path / "run"), 0)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_gloo_processes_end_identical_and_resume_in_one(small_config, tiny_data, tmp_path):
    """Two CPU processes with gloo, a few steps: both replicas hold the same weights (checked by
    the run itself, and against the checkpoint rank 0 wrote), and the run resumes in one process."""
    out = tmp_path / "ddp"
    result = launch(small_config(tiny_data, out, epochs=2, batch_size=2), 2)
    assert result.steps == 2 * batches_per_epoch(9, 2, 2) == 6 and result.epochs == 2
    assert len(result.replicas) == 2 and result.replicas[0] == result.replicas[1]
    ckpt = load_checkpoint(result.last)
    assert ckpt["training"]["world"] == 2
    net = build_net(ckpt)  # the seed recipe's tail keeps per-head statistics
    assert distributed.parameters_sha256(net) == result.replicas[0]
    assert (out / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs, written once (rank 0)

    from train.config import TrainConfig
    from train.loop import run

    resumed = run(TrainConfig(resume=out, epochs=3, device="cpu", workers=0, tensorboard=False), progress=False)
    assert resumed.epochs == 3 and resumed.steps == 6 + batches_per_epoch(9, 2)
    assert resumed.replicas and len(resumed.replicas) == 1
