"""toolkit.data.holdout: whole backgrounds held out, deterministic per seed."""

from __future__ import annotations

import pytest

from toolkit.core.errors import UserError
from toolkit.data.holdout import split_by_background
from toolkit.data.reader import FileRef, Sample, open_dataset
from toolkit.data.synth import synthesize


def samples(n_bg: int, per_bg: int = 3) -> list[Sample]:
    out = []
    for k in range(1, n_bg + 1):
        for m in range(1, per_bg + 1):
            key = f"combined_s{k}_p{m}_it0"
            refs = {kind: FileRef(f"{kind}/{key}.jpg") for kind in ("bg", "fgbg", "mask", "depth")}
            out.append(Sample(key, k, m, 0, refs))
    return out


def bgs(ss, idx):
    return {ss[i].bg for i in idx}


@pytest.mark.parametrize("n_bg", [2, 3, 10, 100])
def test_whole_backgrounds_are_held_out(n_bg):
    ss = samples(n_bg)
    train, test = split_by_background(ss, holdout=0.2, seed=1)
    assert sorted(train + test) == list(range(len(ss)))  # every sample, once
    assert not bgs(ss, train) & bgs(ss, test)  # never the same background in both
    assert bgs(ss, train) and bgs(ss, test)  # something on each side
    assert len(bgs(ss, test)) == max(1, min(round(0.2 * n_bg), n_bg - 1))
    assert train == sorted(train) and test == sorted(test)


def test_deterministic_per_seed_and_seed_matters():
    ss = samples(20)
    assert split_by_background(ss, seed=7) == split_by_background(ss, seed=7)
    held = {frozenset(bgs(ss, split_by_background(ss, seed=s)[1])) for s in range(10)}
    assert len(held) > 1


def test_holdout_share_and_edge_cases():
    ss = samples(10)
    assert len(bgs(ss, split_by_background(ss, holdout=0.5)[1])) == 5
    assert len(bgs(ss, split_by_background(ss, holdout=0.99)[1])) == 9  # one left to train on
    one = samples(1)
    assert split_by_background(one) == ([0, 1, 2], [])
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(UserError, match="holdout"):
            split_by_background(ss, holdout=bad)


def test_on_a_real_dataset(tmp_path):
    synthesize(tmp_path / "d", backgrounds=5, foregrounds=2, placements=1, size=32, seed=2)
    ds = open_dataset(tmp_path / "d")
    train, test = split_by_background(ds, holdout=0.4, seed=0)
    assert len(bgs(ds.samples, test)) == 2 and len(train) + len(test) == len(ds)
    assert not bgs(ds.samples, train) & bgs(ds.samples, test)
