"""The data set: names and pairing, one reader for folders and zips, splits, synthesis, checks.

numpy + Pillow only (no torch): the edge install reads calibration data and runs parity with
these. The training code wraps `PairDataset.load` in a torch Dataset of its own.
"""

from __future__ import annotations

from .holdout import split_by_background
from .names import KINDS, PairName, kind_of_path, parse_background_name, parse_pair_name
from .reader import FileRef, PairDataset, Sample, open_dataset
from .synth import DEPTH_FAR_M, DEPTH_NEAR_M, SynthReport, gray_to_metres, metres_to_gray, synthesize

__all__ = [
    "DEPTH_FAR_M",
    "DEPTH_NEAR_M",
    "KINDS",
    "FileRef",
    "PairDataset",
    "PairName",
    "Sample",
    "SynthReport",
    "gray_to_metres",
    "kind_of_path",
    "metres_to_gray",
    "open_dataset",
    "parse_background_name",
    "parse_pair_name",
    "split_by_background",
    "synthesize",
]
