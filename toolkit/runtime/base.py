"""The runner protocol every backend follows, and `open_runner`, which picks one by file suffix.

Shaped after Polygraphy's runners: `activate()` loads the model, `infer(feed) -> dict` runs it,
`deactivate()` frees it; a runner is a context manager. Every runner of a whole model takes
`{"bg", "fgbg"}` float32 `[N, 3, H, W]` in [0, 1] and returns `{"mask", "depth"}` float32
`[N, 1, H, W]` in [0, 1] (toolkit.core.spec), so nothing downstream cares which backend ran. A file
holding one half of the fixed-camera cut has its own names (`runner.interface`, from the file's
metadata); `toolkit.runtime.fixed` runs the two halves as one whole model.

For a fixed camera every runner has `set_background(bg)` then `infer_frames(fgbg)`: here the
background is repeated beside each frame batch (the whole network runs); the halves' runner
computes the background's features once instead.

No torch here: opening an `.onnx` model must work on the edge install.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.sizes import check_size, is_dynamic
from ..core.spec import INPUT_NAMES, Interface, IOSpec, depth_convention_note, interface_of


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
        note = depth_convention_note(self.path.name, self.metadata)
        if note is not None:
            self.notes.append(note)
        self.active = False
        try:
            self.interface: Interface = interface_of(self.metadata)
        except ValueError as e:
            raise UserError(f"{self.path}: {e}") from None
        self._background: np.ndarray | None = None
        self.opened_with = "cpu"  # the --provider open_runner opened it with

    @property
    def name(self) -> str:
        return f"{self.path.name} ({self.backend})"

    @property
    def backend_used(self) -> str:
        """The backend, with the execution provider that ran it when not the CPU ("onnxruntime
        (CUDA)"; read after activation): what a report's backend column says."""
        used = [str(p).removesuffix("ExecutionProvider") for p in getattr(self, "providers", None) or []]
        return self.backend if not used or used[0] == "CPU" else f"{self.backend} ({used[0]})"

    @property
    def label(self) -> str:
        """What reports call the model (its path; the halves' runner names both)."""
        return str(self.path)

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
        return self.check_result(self._infer(feed), len(feed[self.interface.inputs[0]]), self.feed_size(feed))

    @property
    def dynamic_size(self) -> bool:
        """The model takes any H x W that are multiples of 4 (`--dynamic-size`), not only `spec.size`."""
        return is_dynamic(self.metadata)

    def feed_size(self, feed: Mapping[str, np.ndarray]) -> tuple[int, int]:
        """The input size a feed asks for: the model's, or a dynamic model's images' own."""
        if not self.dynamic_size:
            return self.spec.size
        image = next(np.shape(feed[n]) for n in self.interface.inputs if n in INPUT_NAMES)
        return (int(image[2]), int(image[3])) if len(image) == 4 else self.spec.size

    def set_background(self, bg: np.ndarray) -> None:
        """The fixed camera's background, `[3, H, W]` or `[1, 3, H, W]` in [0, 1], for the
        `infer_frames` calls that follow (until the next `set_background`)."""
        if self.interface.part != "whole":
            raise UserError(f"{self.name}: holds one half of a fixed-camera model; open the whole model instead")
        self._background = self.check_feed({"bg": background_batch(bg), "fgbg": background_batch(bg)})["bg"]

    def infer_frames(self, fgbg: np.ndarray) -> dict[str, np.ndarray]:
        """`{"mask", "depth"}` of frames `[N, 3, H, W]` against the background set last."""
        frames = self.check_frames(fgbg)
        assert self._background is not None  # check_frames refuses frames before a background
        return self.infer({"bg": np.broadcast_to(self._background, (len(frames), *self._background.shape[1:])), "fgbg": frames})

    def check_frames(self, fgbg: np.ndarray) -> np.ndarray:
        """Frames `[N, 3, H, W]` of the background's size, after a `set_background`; one line otherwise."""
        if self._background is None:
            raise UserError(f"{self.name}: infer_frames() before set_background()")
        frames = np.asarray(fgbg, dtype=np.float32)
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise UserError(f"{self.name}: frames must be [N, 3, H, W], got {list(frames.shape)}")
        if frames.shape[2:] != self._background.shape[2:]:
            h, w = self._background.shape[2:]
            raise UserError(f"{self.name}: frames are {frames.shape[2]}x{frames.shape[3]}, the background set is {h}x{w}")
        return frames

    def check_result(self, result: Mapping[str, np.ndarray], n: int, size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """The interface's outputs (`{"mask", "depth"}`, each `[N, 1, H, W]` at the model's size
        (or `size`), for a whole model): a model file that gives anything else (another network
        with the same input names) is refused, not misread."""
        for name in self.interface.outputs:
            want = (n, *self.interface.shape(name, size or self.spec.size))
            a = result.get(name)
            shape = None if a is None else tuple(np.shape(a))
            if shape != want:
                raise UserError(f"{self.name}: output {name} has shape {list(shape) if shape else 'none'}, expected {list(want)}")
        return dict(result)

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The interface's names, float32, `[N, 3, H, W]` images at the model's size (and
        features of the shape that size gives): one clear error otherwise."""
        names = self.interface.inputs
        missing = [n for n in names if n not in feed]
        if missing:
            raise UserError(f"{self.name}: missing input(s) {missing}")
        out = {}
        batches = set()
        size = self.feed_size(feed)
        problem = check_size(*size) if self.dynamic_size else None
        sizes = {tuple(np.shape(feed[n])[2:]) for n in names if n in INPUT_NAMES}
        if self.dynamic_size and len(sizes) > 1:
            raise UserError(f"{self.name}: bg and fgbg sizes differ ({' and '.join('x'.join(map(str, s)) for s in sorted(sizes))})")
        for n in names:
            a = np.ascontiguousarray(feed[n], dtype=np.float32)
            want = self.interface.shape(n, size)
            if n in INPUT_NAMES and (a.ndim != 4 or a.shape[1] != 3):
                raise UserError(f"{self.name}: input {n} must be [N, 3, H, W], got {list(a.shape)}")
            if n in INPUT_NAMES and problem:
                raise UserError(f"{self.name}: input {n}: {problem}")
            if n in INPUT_NAMES and a.shape[2:] != want[1:]:
                raise UserError(f"{self.name}: input {n} is {a.shape[2]}x{a.shape[3]}, the model takes {size[0]}x{size[1]}")
            if a.ndim != 4 or a.shape[1:] != want:
                raise UserError(f"{self.name}: input {n} must be [N, {', '.join(map(str, want))}], got {list(a.shape)}")
            batches.add(a.shape[0])
            out[n] = a
        if len(batches) != 1:
            raise UserError(f"{self.name}: {' and '.join(names)} batches differ in size")
        return out

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        return None

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def background_batch(bg: np.ndarray) -> np.ndarray:
    """A background `[3, H, W]` or `[1, 3, H, W]` as a batch of one (anything else is refused)."""
    a = np.asarray(bg, dtype=np.float32)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[0] != 1:
        raise UserError(f"a fixed camera has one background: expected [3, H, W] or [1, 3, H, W], got {list(np.shape(bg))}")
    return a


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


def open_runner(path: str | Path, *, part: str = "whole", **options: Any) -> Runner:
    """The runner for a model file, chosen by suffix: its metadata is read and checked, nothing
    is loaded until `activate()` (or `with runner:`). `part`: what the file must hold, the whole
    network (a half of a fixed-camera model is refused: it is run through its whole model)."""
    import importlib

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a model file")
    if not path.exists():
        raise UserError(f"{path}: no such model file")
    from ..core.fsutil import regular_file_problem

    problem = regular_file_problem(path)
    if problem is not None:  # a FIFO or a device would block the backend's loader
        raise UserError(f"{path}: not a readable model file ({problem})")
    entry = RUNNERS.get(path.suffix.lower())
    provider = str(options.get("provider", "cpu"))
    auto_note = None
    if provider == "auto" and entry is not None:
        from .auto import pick_provider

        provider, auto_note = pick_provider(path, open_runner, part=part, **options)
        options = options | {"provider": provider}
    if path.suffix.lower() == ".onnx" and provider.split(":")[0] in ONNX_RUNTIMES:
        entry = ONNX_RUNTIMES[provider.split(":")[0]]  # "openvino" or "openvino:GPU": OpenVINO reads the .onnx
    if entry is None:
        raise UserError(f"{path}: unknown model type '{path.suffix}' (expected one of {', '.join(RUNNERS)})")
    module = importlib.import_module(entry[0])
    runner: Runner = getattr(module, entry[1])(path, **options)
    if runner.interface.part != part:
        if part == "whole":
            whole = path.name.replace(f".{runner.interface.part}{path.suffix}", path.suffix)
            raise UserError(f"{path}: holds the {runner.interface.part} half of a fixed-camera model; give the whole model "
                            f"({whole}): its pair is used beside it")
        raise UserError(f"{path}: holds the {runner.interface.part} part, expected the {part} half")
    runner.opened_with = provider  # what `auto` resolved to: the halves run there too
    if auto_note is not None:
        runner.notes.insert(0, auto_note)
    return runner
