"""The runner protocol every backend follows, and `open_runner`, which picks one by file suffix.

Shaped after Polygraphy's runners: `activate()` loads the model, `infer(feed) -> dict` runs it,
`deactivate()` frees it; a runner is a context manager. Every runner takes
`{"bg", "fgbg"}` float32 `[N, 3, H, W]` in [0, 1] and returns `{"mask", "depth"}` float32
`[N, 1, H, W]` in [0, 1] (toolkit.spec), so nothing downstream cares which backend ran.

No torch here: opening an `.onnx` model must work on the edge install.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..spec import INPUT_NAMES, OUTPUT_NAMES, IOSpec


class Runner(abc.ABC):
    """One model file on one backend.

    Opening (the subclass's `__init__`) reads only what the file says about itself: the I/O
    `spec` (never None), the `metadata` (precision, graph, source checkpoint) and what the runner
    chose (`notes`). Sessions, engines and weights are created in `_activate()` and freed in
    `_deactivate()`, so `bench` and `parity` can open every model up front (a wrong file, input
    size or engine sidecar is refused then) while holding only the one they run; what only
    loading can tell (a graph ONNX Runtime cannot load, a checkpoint whose hash does not match)
    is refused at `activate()`. `notes` may grow at activation (a provider that failed to load):
    read it after `activate()`; it stays the same list object.
    """

    backend: str = "?"

    def __init__(self, path: str | Path, spec: IOSpec, metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self.spec = spec
        self.metadata: dict[str, str] = dict(metadata or {})
        self.notes: list[str] = []
        self.active = False

    @property
    def name(self) -> str:
        return f"{self.path.name} ({self.backend})"

    @property
    def precision(self) -> str:
        return self.metadata.get("toolkit.precision", "fp32")

    def activate(self) -> Runner:
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.active:
            raise RuntimeError(f"{self.name}: infer() before activate()")
        feed = self.check_feed(feed)
        return self.check_result(self._infer(feed), len(feed[INPUT_NAMES[0]]))

    def check_result(self, result: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """`{"mask", "depth"}`, each `[N, 1, H, W]` at the model's size: a model file that gives
        anything else (another network with the same input names) is refused, not misread."""
        want = (n, 1, *self.spec.size)
        for name in OUTPUT_NAMES:
            a = result.get(name)
            shape = None if a is None else tuple(np.shape(a))
            if shape != want:
                raise UserError(f"{self.name}: output {name} has shape {list(shape) if shape else 'none'}, expected {list(want)}")
        return dict(result)

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Same names, float32, [N, 3, H, W] at the model's size: one clear error otherwise."""
        missing = [n for n in INPUT_NAMES if n not in feed]
        if missing:
            raise UserError(f"{self.name}: missing input(s) {missing}")
        out = {}
        shapes = set()
        for n in INPUT_NAMES:
            a = np.ascontiguousarray(feed[n], dtype=np.float32)
            if a.ndim != 4 or a.shape[1] != 3:
                raise UserError(f"{self.name}: input {n} must be [N, 3, H, W], got {list(a.shape)}")
            if a.shape[2:] != self.spec.size:
                raise UserError(
                    f"{self.name}: input {n} is {a.shape[2]}x{a.shape[3]}, the model takes "
                    f"{self.spec.height}x{self.spec.width}"
                )
            shapes.add(a.shape)
            out[n] = a
        if len(shapes) != 1:
            raise UserError(f"{self.name}: bg and fgbg batches differ in shape")
        return out

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        return None

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# suffix -> (module, class); imported lazily so only the chosen backend's library loads.
RUNNERS: dict[str, tuple[str, str]] = {
    ".pt": ("toolkit.runtime.torch_runner", "TorchRunner"),
    ".onnx": ("toolkit.runtime.onnx_runner", "OnnxRunner"),
    ".engine": ("toolkit.runtime.tensorrt_runner", "TensorRTRunner"),
}
# provider -> (module, class) of a runtime other than the suffix's own that runs `.onnx` files.
ONNX_RUNTIMES: dict[str, tuple[str, str]] = {
    "openvino": ("toolkit.runtime.openvino_runner", "OpenVinoRunner"),
}


def open_runner(path: str | Path, **options: Any) -> Runner:
    """The runner for a model file, chosen by suffix: its metadata is read and checked, nothing
    is loaded until `activate()` (or `with runner:`)."""
    import importlib

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a model file")
    if not path.exists():
        raise UserError(f"{path}: no such model file")
    from ..fsutil import regular_file_problem

    problem = regular_file_problem(path)
    if problem is not None:  # a FIFO or a device would block the backend's loader
        raise UserError(f"{path}: not a readable model file ({problem})")
    entry = RUNNERS.get(path.suffix.lower())
    provider = str(options.get("provider", "cpu"))
    if path.suffix.lower() == ".onnx" and provider.split(":")[0] in ONNX_RUNTIMES:
        entry = ONNX_RUNTIMES[provider.split(":")[0]]  # "openvino" or "openvino:GPU": OpenVINO reads the .onnx
    if entry is None:
        raise UserError(f"{path}: unknown model type '{path.suffix}' (expected one of {', '.join(RUNNERS)})")
    module = importlib.import_module(entry[0])
    return getattr(module, entry[1])(path, **options)
