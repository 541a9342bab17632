"""A real ONNX Runtime runner that fails on one input: how the tests make inference crash."""

from __future__ import annotations

import numpy as np

from toolkit.runtime import Runner, open_runner


class PoisonRunner(Runner):
    """Runs the real model, but raises when a batch holds an all-black fgbg (the 'poison')."""

    backend = "onnxruntime"

    def __init__(self, model):
        self.inner = open_runner(model)
        super().__init__(self.inner.path, self.inner.spec, self.inner.metadata)
        self.batch_sizes: list[int] = []

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batch_sizes.append(len(feed["fgbg"]))
        if (feed["fgbg"].reshape(len(feed["fgbg"]), -1).max(axis=1) == 0).any():
            raise RuntimeError("poisoned input")
        return self.inner.infer(feed)
