"""Shared fixtures for the training tests: one tiny synthetic set, small and fast configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.config import TrainConfig

# 4 backgrounds x 3 people x 1 placement = 12 pairs; one background is held out, so 9 train
# pairs = 3 steps per epoch at batch 4 (4, 4, 1) and 3 held-out pairs.
TINY_SYNTH = {"backgrounds": 4, "foregrounds": 3, "placements": 1, "size": 64}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toolkit.data.synth import synthesize

    out = tmp_path_factory.mktemp("tiny") / "set"
    synthesize(out, seed=0, **TINY_SYNTH)
    return out


def _small_config(data: Path | None, out: Path, **kw) -> TrainConfig:
    base = {"data": data, "out": out, "epochs": 1, "batch_size": 4, "image_size": 32, "device": "cpu",
            "workers": 0, "tensorboard": False, "log_every": 1, "recipe": "seed"}
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def small_config():
    """A factory: CPU, 32 px, batch 4, no worker processes, no TensorBoard unless asked, the seed
    recipe (the plainest; the improved one has tests of its own)."""
    return _small_config
