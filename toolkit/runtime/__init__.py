"""Backends behind one protocol: `open_runner(path)` picks PyTorch, ONNX Runtime or TensorRT."""

from .base import RUNNERS, Runner, open_runner

__all__ = ["RUNNERS", "Runner", "open_runner"]
