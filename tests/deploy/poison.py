"""A real ONNX Runtime runner that fails on one input (how the tests make inference crash), and
can hold its next call until the test lets it go (how they queue jobs behind a busy model
without relying on timing)."""

from __future__ import annotations

import threading

import numpy as np

from toolkit.runtime import Runner, open_runner


class PoisonRunner(Runner):
    """Runs the real model, but raises when a batch holds an all-black fgbg (the 'poison')."""

    backend = "onnxruntime"

    def __init__(self, model):
        self.inner = open_runner(model)
        super().__init__(self.inner.path, self.inner.spec, self.inner.metadata)
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()  # set when a call has started
        self._gate = threading.Event()
        self._hold = False

    def hold_next_call(self) -> None:
        """The next inference call waits (inside the model, as a slow one would) until `release()`."""
        self.entered.clear()
        self._gate.clear()
        self._hold = True

    def release(self) -> None:
        self._gate.set()

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batch_sizes.append(len(feed["fgbg"]))
        held, self._hold = self._hold, False
        self.entered.set()
        if held and not self._gate.wait(60):  # bounded: a test that forgets to release fails, never hangs
            raise RuntimeError("held call never released")
        if (feed["fgbg"].reshape(len(feed["fgbg"]), -1).max(axis=1) == 0).any():
            raise RuntimeError("poisoned input")
        return self.inner.infer(feed)
