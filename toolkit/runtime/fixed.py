"""The fixed camera: the background's half of the network run once, the frame half per frame.

Every ONNX export `X.onnx` has its halves beside it, `X.bg.onnx` (`bg` -> `bg_features`)
and `X.frame.onnx` (`bg_features`, `fgbg` -> `mask`, `depth`), and every engine `X.fp16.engine`
its `X.fp16.bg.engine` / `X.fp16.frame.engine` (toolkit.net.cut says where the cut is and why it is
exact). `HalvesRunner` runs the two halves as one whole model on any backend: `infer(feed)`
takes the same pairs as the whole model's runner (each pair's background goes through the
background half), and `set_background(bg)` then `infer_frames(fgbg)` computes the background's
features once. `open_fixed_camera` is what `stream`, `serve --bg` and `infer` over a folder
use: the halves when they sit beside the model (and belong to it: the files record what links
them, and halves that do not match is refused in one line), the whole model otherwise, with a
note saying which.

No torch here: this is part of the edge install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.spec import FEATURES_NAME, METADATA_PREFIX
from .base import Runner, open_runner

PARTS = ("bg", "frame")
# What both halves and the whole model must agree on (`toolkit.` metadata keys).
LINKED_KEYS = ("checkpoint_sha256", "precision", "graph", "input_size")
# Each half records the SHA-256 of the whole ONNX file it was written beside (the whole model is
# written first); an engine records the SHA-256 of the ONNX file it was built from.
WHOLE_KEY = f"{METADATA_PREFIX}whole_onnx_sha256"
BUILT_FROM_KEY = f"{METADATA_PREFIX}built_from_sha256"


def whole_identity(whole: Runner) -> str:
    """The SHA-256 that the halves of `whole` record: of the ONNX file, or the one its engine was built from."""
    from ..core.fsutil import sha256_file

    return whole.metadata.get(BUILT_FROM_KEY) or sha256_file(whole.path)


def half_paths(model: str | Path) -> tuple[Path, Path]:
    """`X.onnx` -> (`X.bg.onnx`, `X.frame.onnx`); `X.fp16.engine` -> (`X.fp16.bg.engine`, ...)."""
    model = Path(model)
    return tuple(model.with_name(f"{model.stem}.{part}{model.suffix}") for part in PARTS)  # type: ignore[return-value]


def has_halves(model: str | Path) -> bool:
    """Both halves sit beside the exported `model` (a checkpoint has none)."""
    return Path(model).suffix.lower() != ".pt" and all(p.is_file() for p in half_paths(model))


def halves_problem(whole: Runner, bg: Runner, frame: Runner) -> str | None:
    """Why `bg` and `frame` are not the halves of `whole` (None when they are)."""
    for runner, part in ((bg, "bg"), (frame, "frame")):
        if runner.interface.part != part:
            return f"{runner.path.name} holds the {runner.interface.part} part, not the {part} half"
    key = f"{METADATA_PREFIX}split_pair"
    if bg.metadata.get(key) != frame.metadata.get(key):
        return "the two halves come from different exports (split_pair differs)"
    if WHOLE_KEY not in bg.metadata or WHOLE_KEY not in frame.metadata:
        return "they record no SHA-256 of their whole model (written by an older toolkit)"
    if {bg.metadata.get(WHOLE_KEY), frame.metadata.get(WHOLE_KEY)} != {whole_identity(whole)}:
        return f"they were written beside another {whole.path.name} (its SHA-256 differs from what they record)"
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


class HalvesRunner(Runner):
    """The halves of a whole model `path`, on the backend the options pick (as `open_runner`).
    Opening reads the three files' metadata and refuses halves that do not belong to the model;
    `activate()` loads the two halves (never the whole model). `halves`: the two files when they
    are not beside the model (an export checks its halves before it writes them)."""

    def __init__(self, path: str | Path, *, halves: tuple[Path, Path] | None = None, **options: Any):
        bg_path, frame_path = halves or half_paths(path)
        auto = None
        if options.get("provider") == "auto":  # timed on the frame half (what runs per frame); all three run there
            from .auto import pick_provider

            provider, auto = pick_provider(frame_path, open_runner, part="frame", **options)
            options = options | {"provider": provider}
        whole = open_runner(path, **options)
        self.halves = (open_runner(bg_path, part="bg", **options), open_runner(frame_path, part="frame", **options))
        problem = halves_problem(whole, *self.halves)
        if problem is not None:
            raise UserError(f"{bg_path.name}, {frame_path.name}: not the halves of {whole.path.name}: {problem}; "
                            "remove them or export again (--no-bg-cache runs the whole model)")
        super().__init__(path, whole.spec, whole.metadata)
        self.backend = self.halves[0].backend
        self.opened_with = self.halves[0].opened_with
        self.notes = [*([auto] if auto else []), *whole.notes, f"fixed camera: {bg_path.name} once per background, {frame_path.name} per frame"]
        self._pending: np.ndarray | None = None  # the background set before activation
        self._features: np.ndarray | None = None
        self._repeated: np.ndarray | None = None  # the features repeated for the largest batch yet

    @property
    def name(self) -> str:
        return f"{self.path.name} halves ({self.halves[1].name.split(' (', 1)[-1].rstrip(')')})"

    @property
    def providers(self) -> list[str]:
        """What the frame half (run per frame) runs on, for `backend_used`."""
        return list(getattr(self.halves[1], "providers", None) or [])

    @property
    def label(self) -> str:
        """`out/model.bg+frame.onnx`: the halves, told apart from the whole model in a report."""
        return str(self.path.with_name(f"{self.path.stem}.bg+frame{self.path.suffix}"))

    def _activate(self) -> None:
        for half in self.halves:
            half.activate()
        self.notes.extend(n for half in self.halves for n in half.notes if n not in self.notes)
        if self._pending is not None:
            self._set_features(self._pending)

    def _deactivate(self) -> None:
        for half in self.halves:
            half.deactivate()
        if self._features is not None:  # kept as the background to set again at the next activation
            self._pending = self._background
        self._features = self._repeated = None

    def features(self, bg: np.ndarray) -> np.ndarray:
        """`bg_features` of backgrounds `[N, 3, H, W]` (the background half): `[N, 192, H/2, W/2]`,
        or `[N, H/2, W/2, 192]` for channels-last halves (the int8 ones)."""
        return self.halves[0].infer({"bg": bg})[FEATURES_NAME]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.halves[1].infer({FEATURES_NAME: self.features(feed["bg"]), "fgbg": feed["fgbg"]})

    def set_background(self, bg: np.ndarray) -> None:
        super().set_background(bg)  # checked and kept as the base runner does
        self._pending, self._features, self._repeated = self._background, None, None
        if self.active:
            self._set_features(self._background)

    def _set_features(self, bg: np.ndarray) -> None:
        self._features, self._pending = self.features(bg), None
        self._repeated = self._features

    def infer_frames(self, fgbg: np.ndarray) -> dict[str, np.ndarray]:
        frames = self.check_frames(fgbg)
        if not self.active:
            raise RuntimeError(f"{self.name}: infer_frames() before activate()")
        assert self._repeated is not None and self._features is not None  # set with the background
        n = len(frames)
        if len(self._repeated) < n:  # one copy for the largest batch yet; smaller batches take a prefix
            self._repeated = np.ascontiguousarray(np.repeat(self._features, n, axis=0))
        return self.halves[1].infer({FEATURES_NAME: self._repeated[:n], "fgbg": frames})


def open_fixed_camera(model: str | Path, *, cache: bool = True, **options: Any) -> Runner:
    """The runner for a fixed camera: the halves beside `model` when there is one (and
    `cache`), else the whole model; a note starting "fixed camera:" says which (halves that do
    not belong to the model is refused). Use `set_background` then `infer_frames` on either."""
    model = Path(model)
    halves = half_paths(model)
    if cache and has_halves(model):
        return HalvesRunner(model, **options)
    runner = open_runner(model, **options)
    if not cache:
        why = "background cache off (--no-bg-cache)"
    elif model.suffix.lower() == ".pt":
        why = "a checkpoint runs as one network (the halves come with its ONNX export)"
    else:
        missing = [p.name for p in halves if not p.is_file()]
        why = f"no halves beside it ({' and '.join(missing)} missing; `toolkit export` writes it)"
    runner.notes.insert(0, f"fixed camera: {why}: the whole network runs on every frame")
    return runner
