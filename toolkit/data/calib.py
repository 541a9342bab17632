"""Unlabelled pairs for anything that calibrates a model and then judges it: int8 quantisation
(`export.int8`) and BatchNorm re-estimation (`toolkit.net.recalibrate`).

A data set in the original layout (folder or zip) is split by whole backgrounds
(`toolkit.data.holdout`): the calibration pairs come from one part, the judging ("gate") pairs from
the held-out backgrounds only, so nothing is judged on a scene it was calibrated on. Without a
data set, a small synthetic set made for the run serves (`synthetic_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..core.spec import INPUT_NAMES

DEFAULT_CALIB_PAIRS = 32
DEFAULT_GATE_PAIRS = 16
MAX_PAIRS = 4096
HOLDOUT = 0.2  # share of a user data set's backgrounds held out for the gate
SYNTH_SEED = 20200415
SYNTH_FOREGROUNDS, SYNTH_PLACEMENTS = 4, 2


@dataclass
class CalibrationPairs:
    calib: dict[str, np.ndarray]  # bg, fgbg: float32 [N, 3, H, W] in [0, 1]
    gate: dict[str, np.ndarray]  # pairs from backgrounds not in `calib`
    source: str  # "synthetic" or the data set's name
    notes: list[str] = field(default_factory=list)

    @property
    def calib_count(self) -> int:
        return int(self.calib[INPUT_NAMES[0]].shape[0])

    @property
    def described(self) -> str:
        """Where the pairs came from, for a line: "synthetic data", or the data set's name
        quoted (a folder called `data` must not read "data data")."""
        return "synthetic data" if self.source == "synthetic" else f"data set '{self.source}'"

    @property
    def gate_count(self) -> int:
        return int(self.gate[INPUT_NAMES[0]].shape[0])

    def everything(self) -> dict[str, np.ndarray]:
        """Both parts together (checks that calibrate nothing, such as fp16's, use them all)."""
        return {k: np.concatenate([self.calib[k], self.gate[k]]) for k in INPUT_NAMES}


def check_pair_counts(calib_pairs: int, gate_pairs: int, purpose: str = "int8") -> None:
    for name, n in (("calibration pairs", calib_pairs), ("gate pairs", gate_pairs)):
        if not 1 <= int(n) <= MAX_PAIRS:
            raise UserError(f"{purpose}: {name} must be between 1 and {MAX_PAIRS}, got {n}")


def _one_background(data: str | Path, purpose: str) -> UserError:
    return UserError(f"{data}: all its pairs share one background; the {purpose} gate needs pairs from at least "
                     f"2 backgrounds (one is held out to judge the {'quantised' if purpose == 'int8' else 'calibrated'} model)")


def check_calibration_data(data: str | Path, holdout: float = HOLDOUT, purpose: str = "int8") -> None:
    """A usable `--calib` set (checked before anything is written): readable, with pairs from at
    least 2 backgrounds (one part calibrates, the held-out part judges)."""
    from .holdout import split_by_background
    from .reader import open_dataset

    if not Path(data).exists():
        raise UserError(f"{data}: no such calibration data folder or zip")
    with open_dataset(data) as ds:
        if not split_by_background(ds, holdout=holdout)[1]:
            raise _one_background(data, purpose)


def load_pairs(
    data: str | Path,
    size: tuple[int, int],
    *,
    calib_pairs: int = DEFAULT_CALIB_PAIRS,
    gate_pairs: int = DEFAULT_GATE_PAIRS,
    holdout: float = HOLDOUT,
    seed: int = 0,
    name: str | None = None,
    purpose: str = "int8",
) -> CalibrationPairs:
    """Pairs from a data set (folder or zip, original layout) at `size`, split by background."""
    from .holdout import evenly, split_by_background
    from .reader import open_dataset

    check_pair_counts(calib_pairs, gate_pairs, purpose)
    with open_dataset(data) as ds:
        train, held = split_by_background(ds, holdout=holdout, seed=seed)
        if not held:
            raise _one_background(data, purpose)

        def stack(indices: list[int]) -> dict[str, np.ndarray]:
            batch = ds.load_batch(indices, size)
            return {k: batch[k] for k in INPUT_NAMES}

        calib_idx = [train[i] for i in evenly(len(train), int(calib_pairs))]
        gate_idx = [held[i] for i in evenly(len(held), int(gate_pairs))]
        pairs = CalibrationPairs(stack(calib_idx), stack(gate_idx), name or Path(data).name)
    for what, got, asked in (("calibration", len(calib_idx), calib_pairs), ("gate", len(gate_idx), gate_pairs)):
        if got < asked:
            pairs.notes.append(f"{pairs.source}: only {got} {what} pairs available ({asked} asked)")
    return pairs


def synthetic_pairs(
    workdir: str | Path,
    size: tuple[int, int],
    *,
    calib_pairs: int = DEFAULT_CALIB_PAIRS,
    gate_pairs: int = DEFAULT_GATE_PAIRS,
    purpose: str = "int8",
) -> CalibrationPairs:
    """A synthetic set made in `workdir` (whole backgrounds for each part), loaded as pairs."""
    from .synth import synthesize

    check_pair_counts(calib_pairs, gate_pairs, purpose)
    per_bg = SYNTH_FOREGROUNDS * SYNTH_PLACEMENTS
    calib_bgs, gate_bgs = -(-int(calib_pairs) // per_bg), -(-int(gate_pairs) // per_bg)
    total = calib_bgs + gate_bgs
    folder = Path(workdir) / "synthetic-calibration"
    synthesize(folder, backgrounds=total, foregrounds=SYNTH_FOREGROUNDS, placements=SYNTH_PLACEMENTS,
               size=max(size), seed=SYNTH_SEED, force=True)
    return load_pairs(folder, size, calib_pairs=calib_pairs, gate_pairs=gate_pairs, holdout=gate_bgs / total,
                      name="synthetic", purpose=purpose)
