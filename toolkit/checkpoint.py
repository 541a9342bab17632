"""The toolkit's checkpoint format: save atomically, load safely, validate before use.

A checkpoint is a `torch.save`d dict of plain data (tensors, numbers, strings, lists, dicts), so
`torch.load(path, weights_only=True)` reads it and no file can run code on load. It holds the
state dict of `EVA4Net`, the `IOSpec` (input size, normalisation, output decoding), the recipe
and epoch/step, and, for training checkpoints, optimiser/scheduler/RNG state for `--resume`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import UserError, first_line
from .fsutil import atomic_path
from .model import EVA4Net, MaskDepthModel
from .spec import IOSpec

FORMAT = "toolkit.checkpoint"
FORMAT_VERSION = 1
ARCH = {"name": "eva4-week15", "params": 493_408}


def make_checkpoint(
    model_state: dict[str, torch.Tensor],
    spec: IOSpec,
    *,
    epoch: int = 0,
    step: int = 0,
    recipe: str = "seed",
    source: str = "",
    metrics: dict[str, float] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict (weights are copied to CPU so the file is device-neutral)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "toolkit_version": __version__,
        "arch": dict(ARCH),
        "model": {k: v.detach().to("cpu").clone() for k, v in model_state.items()},
        "iospec": spec.to_dict(),
        "recipe": recipe,
        "epoch": int(epoch),
        "step": int(step),
        "source": source,
        "metrics": dict(metrics or {}),
        "training": training or {},
    }


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> Path:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, *, check_finite: bool = True) -> dict[str, Any]:
    """Load and validate a toolkit checkpoint; any problem is a one-line `UserError`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on garbage (KeyError, RuntimeError, ...)
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and ("Unsupported global" in text or "GLOBAL" in text):
            raise UserError(
                f"{path}: refused: the file needs code to load, which a toolkit checkpoint never does "
                f"(for the original author's files use `toolkit import-legacy`)"
            ) from e
        first = first_line(e)
        raise UserError(f"{path}: not a readable checkpoint ({first[:200]})") from e
    validate_checkpoint(ckpt, path, check_finite=check_finite)
    return ckpt


def validate_checkpoint(ckpt: Any, path: str | Path = "checkpoint", *, check_finite: bool = True) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a toolkit checkpoint (no '{FORMAT}' header)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format version {version} is newer than this toolkit reads "
            f"({FORMAT_VERSION}); upgrade toolkit"
        )
    try:
        IOSpec.from_dict(ckpt["iospec"])
    except (KeyError, ValueError) as e:
        raise UserError(f"{path}: checkpoint has an invalid I/O spec ({e})") from e
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise UserError(f"{path}: checkpoint holds no model state dict")
    expected = EVA4Net().state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{path}: weights do not fit the EVA4 network ({detail})")
    for name, ref in expected.items():
        t = state[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(ref.shape):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise UserError(f"{path}: tensor {name} has shape {shape}, the network needs {tuple(ref.shape)}")
        if check_finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"{path}: tensor {name} holds NaN or inf values")


def spec_of(ckpt: dict[str, Any]) -> IOSpec:
    return IOSpec.from_dict(ckpt["iospec"])


def build_model(ckpt: dict[str, Any]) -> MaskDepthModel:
    """The wrapped model ([0, 1] in and out) in eval mode, on the CPU."""
    net = EVA4Net()
    net.load_state_dict(ckpt["model"])
    return MaskDepthModel(net, spec_of(ckpt)).eval()


