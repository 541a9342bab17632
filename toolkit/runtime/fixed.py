"""The fixed camera: the background's half of the network run once, the frame half per frame.

Every ONNX export `X.onnx` has its split pair beside it, `X.bg.onnx` (`bg` -> `bg_features`)
and `X.frame.onnx` (`bg_features`, `fgbg` -> `mask`, `depth`), and every engine `X.fp16.engine`
its `X.fp16.bg.engine` / `X.fp16.frame.engine` (toolkit.split says where the cut is and why it is
exact). `SplitPairRunner` runs the two halves as one whole model on any backend: `infer(feed)`
takes the same pairs as the whole model's runner (each pair's background goes through the
background half), and `set_background(bg)` then `infer_frames(fgbg)` computes the background's
features once. `open_fixed_camera` is what `stream`, `serve --bg` and `infer` over a folder
use: the pair when it sits beside the model (and belongs to it: the files record what links
them, and a pair that does not match is refused in one line), the whole model otherwise, with a
note saying which.

No torch here: this is part of the edge install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..spec import FEATURES_NAME, METADATA_PREFIX
from .base import Runner, background_batch, open_runner

PARTS = ("bg", "frame")
# What both halves and the whole model must agree on (`toolkit.` metadata keys).
LINKED_KEYS = ("checkpoint_sha256", "precision", "graph", "input_size")


def split_paths(model: str | Path) -> tuple[Path, Path]:
    """`X.onnx` -> (`X.bg.onnx`, `X.frame.onnx`); `X.fp16.engine` -> (`X.fp16.bg.engine`, ...)."""
    model = Path(model)
    return tuple(model.with_name(f"{model.stem}.{part}{model.suffix}") for part in PARTS)  # type: ignore[return-value]


def pair_problem(whole: Runner, bg: Runner, frame: Runner) -> str | None:
    """Why `bg` and `frame` are not the split pair of `whole` (None when they are)."""
    for runner, part in ((bg, "bg"), (frame, "frame")):
        if runner.interface.part != part:
            return f"{runner.path.name} holds the {runner.interface.part} part, not the {part} half"
    key = f"{METADATA_PREFIX}split_pair"
    if bg.metadata.get(key) != frame.metadata.get(key):
        return "the two halves come from different exports (split_pair differs)"
    key = f"{METADATA_PREFIX}bg_features"
    if bg.metadata.get(key) != frame.metadata.get(key) or bg.interface.features_layout != frame.interface.features_layout:
        return f"the feature shapes differ ({bg.metadata.get(key)} from the background half, {frame.metadata.get(key)} into the frame half)"
    for name in LINKED_KEYS:
        key = f"{METADATA_PREFIX}{name}"
        values = {r.metadata.get(key) for r in (whole, bg, frame)}
        if len(values) > 1:
            halves = f"{bg.metadata.get(key)} / {frame.metadata.get(key)}"
            return f"{name.replace('_', ' ')} differs ({whole.metadata.get(key)} for the model, {halves} for the halves)"
    if {whole.spec, bg.spec, frame.spec} != {whole.spec}:
        return "the I/O spec (size, normalisation or decoding) differs"
    return None


class SplitPairRunner(Runner):
    """The split pair of a whole model `path`, on the backend the options pick (as `open_runner`).
    Opening reads the three files' metadata and refuses a pair that does not belong to the model;
    `activate()` loads the two halves (never the whole model). `halves`: the two files when they
    are not beside the model (an export checks its pair before it writes it)."""

    def __init__(self, path: str | Path, *, halves: tuple[Path, Path] | None = None, **options: Any):
        bg_path, frame_path = halves or split_paths(path)
        auto = None
        if options.get("provider") == "auto":  # timed on the frame half (what runs per frame); all three run there
            from .auto import pick_provider

            provider, auto = pick_provider(frame_path, open_runner, part="frame", **options)
            options = options | {"provider": provider}
        whole = open_runner(path, **options)
        self.halves = (open_runner(bg_path, part="bg", **options), open_runner(frame_path, part="frame", **options))
        problem = pair_problem(whole, *self.halves)
        if problem is not None:
            raise UserError(f"{bg_path.name}, {frame_path.name}: not the split pair of {whole.path.name}: {problem}; "
                            "export again, or --no-bg-cache to run the whole model")
        super().__init__(path, whole.spec, whole.metadata)
        self.backend = self.halves[0].backend
        self.opened_with = self.halves[0].opened_with
        self.notes = [*([auto] if auto else []), *whole.notes, f"fixed camera: {bg_path.name} once per background, {frame_path.name} per frame"]
        self._features: np.ndarray | None = None
        self._repeated: dict[int, np.ndarray] = {}

    @property
    def name(self) -> str:
        return f"{self.path.name} split pair ({self.halves[1].name.split(' (', 1)[-1].rstrip(')')})"

    @property
    def label(self) -> str:
        """`out/model.bg+frame.onnx`: the pair, told apart from the whole model in a report."""
        return str(self.path.with_name(f"{self.path.stem}.bg+frame{self.path.suffix}"))

    def _activate(self) -> None:
        for half in self.halves:
            half.activate()
        self.notes.extend(n for half in self.halves for n in half.notes if n not in self.notes)

    def _deactivate(self) -> None:
        for half in self.halves:
            half.deactivate()
        self._repeated.clear()

    def features(self, bg: np.ndarray) -> np.ndarray:
        """`bg_features` `[N, 192, H/2, W/2]` of backgrounds `[N, 3, H, W]` (the background half)."""
        return self.halves[0].infer({"bg": bg})[FEATURES_NAME]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.halves[1].infer({FEATURES_NAME: self.features(feed["bg"]), "fgbg": feed["fgbg"]})

    def set_background(self, bg: np.ndarray) -> None:
        if not self.active:
            raise RuntimeError(f"{self.name}: set_background() before activate()")
        self._features = self.features(self.check_feed({"bg": background_batch(bg), "fgbg": background_batch(bg)})["bg"])
        self._repeated = {1: self._features}

    def infer_frames(self, fgbg: np.ndarray) -> dict[str, np.ndarray]:
        if self._features is None:
            raise UserError(f"{self.name}: infer_frames() before set_background()")
        frames = np.asarray(fgbg, dtype=np.float32)
        n = len(frames) if frames.ndim == 4 else 0
        if n not in self._repeated:  # one contiguous copy per batch size, reused for every batch of it
            self._repeated[n] = np.ascontiguousarray(np.repeat(self._features, n, axis=0))
        return self.halves[1].infer({FEATURES_NAME: self._repeated[n], "fgbg": frames})


def open_fixed_camera(model: str | Path, *, cache: bool = True, **options: Any) -> Runner:
    """The runner for a fixed camera: the split pair beside `model` when there is one (and
    `cache`), else the whole model; its first note says which. Use `set_background` then
    `infer_frames` on either."""
    model = Path(model)
    pair = split_paths(model)
    if cache and all(p.is_file() for p in pair):
        return SplitPairRunner(model, **options)
    runner = open_runner(model, **options)
    if not cache:
        why = "background cache off (--no-bg-cache)"
    elif model.suffix.lower() == ".pt":
        why = "a checkpoint runs as one network (the split pair comes with its ONNX export)"
    else:
        missing = [p.name for p in pair if not p.is_file()]
        why = f"no split pair beside it ({' and '.join(missing)} missing; `toolkit export` writes it)"
    runner.notes.insert(0, f"fixed camera: {why}: the whole network runs on every frame")
    return runner
