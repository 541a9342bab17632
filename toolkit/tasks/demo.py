"""The whole pipeline on the embedded default: synth -> train -> export -> infer -> parity.

Sized to finish in a few minutes on a 2-core CPU (small synthetic set, 64 px, a short improved-recipe
run), so a new user sees every stage work and every artefact on disk. Each stage prints where
its output is; the demo ends with the parity verdict and the panel's path.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import CheckFailed
from ..core.fsutil import ensure_dir


@dataclass
class DemoSettings:
    image_size: int = 64
    backgrounds: int = 10
    foregrounds: int = 8
    placements: int = 2
    synth_size: int = 160  # the original's image size
    epochs: int = 10
    batch_size: int = 8
    max_steps: int | None = None
    seed: int = 0
    recipe: str = "improved"  # the seed's recipe does not find the person within this budget


@dataclass
class DemoResult:
    out: Path
    artefacts: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    parity_passed: bool = False


def run_demo(out: str | Path, settings: DemoSettings | None = None, say: Callable[[str], None] = print,
             progress: bool = True) -> DemoResult:
    from export.onnx import export_onnx
    from train.config import TrainConfig
    from train.loop import run as train_run

    from ..data.holdout import split_by_background
    from ..data.reader import open_dataset
    from ..data.synth import synthesize
    from ..verify.parity import run_parity
    from .infer import infer_files

    s = settings or DemoSettings()
    out = ensure_dir(out)
    result = DemoResult(out)

    def stage(name: str, fn: Callable[[], Path]) -> Path:
        t0 = time.perf_counter()
        path = fn()
        result.seconds[name] = time.perf_counter() - t0
        result.artefacts[name] = path
        say(f"[{name}] {path}  ({result.seconds[name]:.1f} s)")
        return path

    data = out / "data"
    if not data.is_dir():  # synthesize writes a partial folder and renames it: atomic
        stage("synth", lambda: (synthesize(data, backgrounds=s.backgrounds, foregrounds=s.foregrounds,
                                           placements=s.placements, size=s.synth_size, seed=s.seed), data)[-1])
    else:
        result.artefacts["synth"] = data
        say(f"[synth] {data}  (reused)")

    config = TrainConfig(data=data, out=out / "run", epochs=s.epochs, batch_size=s.batch_size,
                         image_size=s.image_size, max_steps=s.max_steps, seed=s.seed, workers=0, device="cpu",
                         recipe=s.recipe, force=True)  # a demo run again starts over: its run folder is its own
    trained = train_run(config, progress=progress)
    ckpt = trained.best or trained.last
    result.artefacts["train"] = ckpt
    say(f"[train] {ckpt}  (metrics: {trained.out / 'metrics.csv'})")

    def export() -> Path:  # the whole model and its fixed-camera halves, as `toolkit export` writes them
        from export.fixed_camera import export_halves

        path = export_onnx(ckpt, out / "export" / "model.onnx")[0]
        export_halves(ckpt, path)
        return path

    onnx_path = stage("export", export)

    ds = open_dataset(data)
    _, held_out = split_by_background(ds, holdout=config.holdout, seed=config.seed)
    sample = ds.samples[held_out[0] if held_out else 0]
    bg_file, fgbg_file = _materialise(ds, sample, out / "infer-input")
    stage("infer", lambda: _panel(infer_files(onnx_path, bg_file, fgbg_file, out / "infer")))

    t0 = time.perf_counter()
    report = run_parity([onnx_path], ckpt, data, limit=16)
    result.seconds["parity"] = time.perf_counter() - t0
    result.parity_passed = bool(report)
    r = report.results[0]
    verdict = "PASS" if report else "FAIL: " + "; ".join(r.failures)
    say(f"[parity] {onnx_path.name} vs {ckpt.name} on {report.pairs} pairs: max abs diff "
        f"{max(r.max_abs.values()):.2e}, mask IoU {r.mask_iou:.4f}"
        + (f" ({r.empty_masks} pairs with no mask in either)" if r.empty_masks else "") + f" -> {verdict}")
    say(f"panel: {result.artefacts['infer']}")
    if not report:
        raise CheckFailed("demo: parity failed")
    return result


def path_hint(environ: Mapping[str, str] | None = None) -> str | None:
    """The line that puts `toolkit` on PATH when this one runs from a virtual environment whose
    bin/ is not on it (after `make demo`, a new user's next `toolkit ...` found nothing)."""
    environ = os.environ if environ is None else environ
    here = Path(sys.executable).parent
    if not (here / "toolkit").is_file():
        return None
    on_path = [Path(p).resolve() for p in environ.get("PATH", "").split(os.pathsep) if p]
    if here.resolve() in on_path:
        return None
    return f"next: put toolkit on PATH with `source {here / 'activate'}` (or run {here / 'toolkit'})"


def _panel(report) -> Path:
    assert report.panel is not None, "infer wrote no panel"
    return report.panel


def _materialise(ds, sample, folder: Path) -> tuple[Path, Path]:
    """Copy one pair out of the data set (which may be zipped) as plain image files."""
    from ..core.fsutil import write_bytes_atomic

    ensure_dir(folder)
    paths = []
    for kind in ("bg", "fgbg"):
        ref = sample.refs[kind]
        name = Path(ref.member if ref.in_zip else ref.container).name
        paths.append(write_bytes_atomic(folder / name, ds.read_bytes(ref)))
    return paths[0], paths[1]
