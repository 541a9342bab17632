"""`toolkit train --init M.pt`: a new run that starts from a trained model's weights.

What a user of the original author's model does with a few labelled pairs of a new site: the
weights of a toolkit checkpoint, or of one of the author's own files read by the safe importer
(`toolkit.net.legacy`, nothing in the file runs), with a fresh optimiser and schedule (the run is a
new one: `--resume` continues a run, `--init` starts one). The model's recipe is the run's
unless `--recipe` says otherwise, so its outputs keep the decoding they were trained with.

BatchNorm statistics: a shared tail becomes a per-head one when the run's tail keeps per-head
statistics (each head starts from the shared set; training replaces them within a few dozen
steps, momentum 0.1). A per-head model cannot be trained with one set (which head's would it
keep?): refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.core.errors import UserError
from toolkit.core.spec import IOSpec
from toolkit.net.checkpoint import load_checkpoint, spec_of, tail_stats_from
from toolkit.net.model import per_head_state


@dataclass
class InitModel:
    """The weights a run starts from, and what they were trained as."""

    path: Path
    state: dict[str, torch.Tensor]
    spec: IOSpec
    recipe: str
    tail_stats: str
    legacy: bool  # read from the original author's file

    def describe(self) -> str:
        kind = "the original author's checkpoint, read by the safe importer" if self.legacy else "a toolkit checkpoint"
        return (f"starting from the weights of {self.path} ({kind}; recipe {self.recipe}, tail {self.tail_stats}, "
                f"depth {self.spec.depth_convention}), with a fresh optimiser and schedule")

    def state_for(self, tail_stats: str) -> dict[str, torch.Tensor]:
        """The weights for a network whose tail keeps `tail_stats` statistics."""
        if (tail_stats == "per_head") == (self.tail_stats == "per_head"):
            return self.state
        if tail_stats == "per_head":
            return per_head_state(self.state)
        raise UserError(f"--init {self.path}: its tail keeps one set of BatchNorm statistics per head; train it "
                        f"with --tail per_head (a run with one set would have to drop one head's)")


def read_init(path: str | Path) -> InitModel:
    """A toolkit checkpoint, else one of the original author's files; one line when neither."""
    path = Path(path)
    try:
        ckpt, legacy = load_checkpoint(path), False
    except UserError as toolkit_error:
        from toolkit.net.legacy import LegacyImportError, legacy_checkpoint

        try:
            ckpt, _, _ = legacy_checkpoint(path)
        except LegacyImportError:
            raise UserError(f"--init {toolkit_error}") from None
        legacy = True
    return InitModel(path, ckpt["model"], spec_of(ckpt), str(ckpt.get("recipe") or "seed"), tail_stats_from(ckpt, path),
                     legacy)


def check_init_data(init: InitModel, depth_convention: str, data: Any) -> None:
    """The run's data must store depth the way the model predicts it (the fine-tuning would
    otherwise start by unlearning its depth)."""
    if init.spec.depth_convention != depth_convention:
        raise UserError(f"--init {init.path}: predicts {init.spec.depth_convention} depth, but {data} holds "
                        f"{depth_convention} depth (its dataset.json); use data of the model's convention")
