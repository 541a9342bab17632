"""The data set of a training run: a given `--data` folder or zip, or the default synthetic set.

Opened and split before the run folder is made (a missing or unusable data set leaves nothing
behind), split by background so the held-out pairs show scenes the network never saw.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError

from .config import TrainConfig


def open_data(config: TrainConfig, resuming: bool = False):
    """(pairs, train indices, held-out indices) of a given `--data`, opened and split before the
    run folder is made, so a missing or unusable data set leaves nothing behind."""
    from toolkit.data import reader

    assert config.data is not None
    check_data_exists(config, resuming)
    pairs = reader.open_dataset(config.data)
    return (pairs, *split_pairs(pairs, config, config.data))


def check_data_exists(config: TrainConfig, resuming: bool = False) -> None:
    """A given `--data` that is not there: one line, before anything is opened or made."""
    if config.data is not None and not Path(config.data).exists():
        hint = (" (the data set of the run being resumed; if it moved, give --data with its new place)"
                if resuming else "")
        raise UserError(f"{config.data}: no such data folder or zip{hint}")


def synthetic_data(config: TrainConfig, out: Path, say: Callable[[str], None]):
    """(pairs, train indices, held-out indices, to_metres) of the default synthetic set in
    `<out>/data`, made on first use (`synthesize` writes `<out>/.data.partial` and renames it)."""
    from toolkit.data import reader, synth

    data = out / "data"
    if not data.is_dir():
        say(f"making a synthetic data set in {data}")
        synth.synthesize(data, **config.synth)
    pairs = reader.open_dataset(data)
    return (pairs, *split_pairs(pairs, config, data), synth.metres_reader(pairs.depth_convention))


def split_pairs(pairs: Any, config: TrainConfig, where: Path) -> tuple[list[int], list[int]]:
    from toolkit.data import holdout

    train_idx, val_idx = holdout.split_by_background(pairs, holdout=config.holdout, seed=config.seed)
    if not len(train_idx):
        raise UserError(f"{where}: no training pairs left after holding out backgrounds")
    return list(train_idx), list(val_idx)


def check_same_data(ckpt: dict[str, Any], data: Path, pairs: int, held_out: int) -> None:
    """A resumed run's data set (maybe a moved copy) must hold what the run was trained on."""
    was = ckpt["training"].get("data")
    if isinstance(was, dict) and (was.get("pairs"), was.get("held_out")) != (pairs, held_out):
        raise UserError(f"{data}: holds {pairs} pairs ({held_out} held out) but the run being resumed was trained "
                        f"on {was.get('pairs')} ({was.get('held_out')} held out); resume with the same data set")


