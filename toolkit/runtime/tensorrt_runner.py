"""TensorRT backend for `.engine` files.

The engine path (building, sidecar checks, cuda-python buffers) arrives with the export stage;
until then an engine is refused with one clear line rather than half-run.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingDependency, UserError
from .base import Runner


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, path: str | Path, **_options: object):
        super().__init__(path)
        try:
            import tensorrt  # noqa: F401
        except ImportError as e:
            raise MissingDependency("TensorRT (needed to run a .engine file)", "gpu") from e
        raise UserError(f"{self.path}: running TensorRT engines is not supported by this toolkit version yet")

    def _activate(self) -> None:  # pragma: no cover - unreachable until engines are supported
        raise NotImplementedError

    def _infer(self, feed):  # pragma: no cover
        raise NotImplementedError
