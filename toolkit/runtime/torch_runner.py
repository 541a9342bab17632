"""PyTorch backend: a toolkit checkpoint run through the wrapped model (the reference).

Opening reads the checkpoint's header and I/O spec only (`read_checkpoint_header`: the tensors'
storages are memory-mapped, not read); `activate()` loads and verifies the whole checkpoint
(payload hash, shapes, finiteness) and builds the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.optional import import_optional
from ..core.spec import INPUT_NAMES, OUTPUT_NAMES
from .base import Runner


def _torch() -> Any:
    return import_optional("torch", "PyTorch (needed to run a .pt checkpoint)", "train")


class TorchRunner(Runner):
    backend = "pytorch"

    def __init__(
        self, path: str | Path, *, threads: int | None = None, device: str | None = None, provider: str = "cpu",
        size: tuple[int, int] | None = None,
    ):
        """`provider` is the option every runner takes: "cuda" runs on the GPU, anything else on
        the CPU. `size` (H, W): the input size to run at (default the training size; the network
        is fully convolutional, so an export at another size has a reference at its size)."""
        torch = _torch()
        device = device or ("cuda" if provider in ("cuda", "tensorrt") else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"{path}: --provider {provider} asks for CUDA, but PyTorch sees no CUDA device")
        from ..net.checkpoint import read_checkpoint_header

        header = read_checkpoint_header(path)
        spec = header.spec if size is None else header.spec.with_size(*size)
        super().__init__(path, spec, {"toolkit.precision": "fp32", "toolkit.recipe": header.recipe})
        self.threads = threads
        self.device = device
        self.model: Any = None

    def _activate(self) -> None:
        torch = _torch()
        from ..net.checkpoint import build_model, load_checkpoint, spec_of

        if self.threads:
            torch.set_num_threads(int(self.threads))
        ckpt = load_checkpoint(self.path)
        if spec_of(ckpt).with_size(*self.spec.size) != self.spec:
            raise UserError(f"{self.path}: the checkpoint changed since it was opened (its I/O spec differs)")
        self.model = build_model(ckpt).to(self.device)

    def _deactivate(self) -> None:
        self.model = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = _torch()
        with torch.inference_mode():
            # torch warns on read-only arrays (a fixed camera's background is np.broadcast_to); copy those
            args = [torch.from_numpy(a if a.flags.writeable else a.copy()).to(self.device) for a in (feed[n] for n in INPUT_NAMES)]
            outs = self.model(*args)
        return {n: o.float().cpu().numpy() for n, o in zip(OUTPUT_NAMES, outs)}
