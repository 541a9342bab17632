"""PyTorch backend: a toolkit checkpoint run through the wrapped model (the reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MissingDependency, UserError
from ..spec import INPUT_NAMES, OUTPUT_NAMES
from .base import Runner


def _torch():
    try:
        import torch
    except ImportError as e:
        raise MissingDependency("PyTorch (needed to run a .pt checkpoint)", "train") from e
    return torch


class TorchRunner(Runner):
    backend = "pytorch"

    def __init__(self, path: str | Path, *, threads: int | None = None, device: str | None = None, provider: str = "cpu"):
        """`provider` is the option every runner takes: "cuda" runs on the GPU, anything else on the CPU."""
        super().__init__(path)
        torch = _torch()
        device = device or ("cuda" if provider in ("cuda", "tensorrt") else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"{self.path}: --provider {provider} asks for CUDA, but PyTorch sees no CUDA device")
        from ..checkpoint import load_checkpoint, spec_of

        self.threads = threads
        self.device = device
        self.checkpoint = load_checkpoint(self.path)
        self.spec = spec_of(self.checkpoint)
        self.metadata = {"toolkit.precision": "fp32", "toolkit.recipe": str(self.checkpoint.get("recipe", ""))}
        self.model = None

    def _activate(self) -> None:
        torch = _torch()
        from ..checkpoint import build_model

        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.model = build_model(self.checkpoint).to(self.device)

    def _deactivate(self) -> None:
        self.model = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = _torch()
        assert self.model is not None
        with torch.inference_mode():
            args = [torch.from_numpy(feed[n]).to(self.device) for n in INPUT_NAMES]
            outs = self.model(*args)
        return {n: o.float().cpu().numpy() for n, o in zip(OUTPUT_NAMES, outs)}
