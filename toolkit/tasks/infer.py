"""Inference on image files with any backend: pairs in, mask/depth/panel PNGs out.

Images of any mode Pillow reads are converted to RGB, resized to the model's input size, run
in batches, and the outputs are resized back to each input image's own size. No torch here:
with an `.onnx` model this runs on the edge install.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import UserError, positive
from ..core.fsutil import check_output_dir, ensure_dir
from ..core.spec import ORIGINAL_DEPTH_CONVENTION
from ..render import imageio
from ..runtime import Runner, open_runner
from ..runtime.fixed import open_fixed_camera

OUTPUT_FILES = ("mask.png", "depth.png", "panel.png")  # panel last: its presence means the pair is done
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@dataclass
class PairJob:
    """One (bg, fgbg) pair and where its outputs go."""

    bg: Path
    fgbg: Path
    out: Path


SHOWN_SIZE_NOTES = 3  # per-pair "resized" notes kept verbatim; the rest are only counted


@dataclass
class InferReport:
    """What a run did. Nothing here grows with the pairs that went well (a folder of 10,000
    pairs streams): files are counted, only the last panel is kept, and per-pair notes are kept
    for the first few and counted after that. Failures are kept, one line each (reported at the end)."""

    files: int = 0  # output files written
    panel: Path | None = None  # the panel of the last pair written
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line per pair that could not be read
    pairs: int = 0
    skipped: int = 0  # pairs whose outputs were already there (skip_existing)
    resized: int = 0  # pairs whose bg and fgbg differed in size (both resized; see notes)
    nonfinite: int = 0  # NaN/inf values the model produced (written as 0)


def plan_jobs(bg: Path, fgbg: Path, out: Path) -> tuple[list[PairJob], list[str]]:
    """Two files -> one job writing into `out`; two folders -> one job per name-matched pair;
    one background and a folder of frames (a fixed camera) -> one job per frame."""
    for p in (bg, fgbg):
        if not p.exists():
            raise UserError(f"{p}: no such file or folder")
    if bg.is_dir() and not fgbg.is_dir():
        raise UserError(f"{bg} and {fgbg}: give two image files, two folders, or one background and a folder of frames")
    if not bg.is_dir():
        if not fgbg.is_dir():
            return [PairJob(bg, fgbg, out)], []
        frames = [f for f in sorted(fgbg.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        if not frames:
            raise UserError(f"{fgbg}: no images to run against {bg.name}")
        return [PairJob(bg, f, out / f.stem) for f in frames], []
    return pair_folders(bg, fgbg, out)


def pair_folders(bg_dir: Path, fgbg_dir: Path, out: Path) -> tuple[list[PairJob], list[str]]:
    """Pair by file stem; an fgbg named `combined_s<k>_...` also pairs with bg `Shelves_<k>`."""
    from ..data.names import parse_background_name, parse_pair_name

    bgs = {p.stem: p for p in sorted(bg_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    by_number = {n: p for p in bgs.values() if (n := parse_background_name(p.name)) is not None}
    jobs, notes = [], []
    unpaired = 0
    for f in sorted(fgbg_dir.iterdir()):
        if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
            continue
        b = bgs.get(f.stem)
        if b is None and (name := parse_pair_name(f.name)) is not None:
            b = by_number.get(name.bg)
        if b is None:
            unpaired += 1
            continue
        jobs.append(PairJob(b, f, out / f.stem))
    if unpaired:
        notes.append(f"skipped {unpaired} fgbg image(s) with no matching background in {bg_dir}")
    if not jobs:
        raise UserError(f"{fgbg_dir}: no image pairs found with {bg_dir} (pairs are matched by file name)")
    return jobs, notes


def load_pair(job: PairJob, size: tuple[int, int], background: tuple[np.ndarray, np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str | None]:
    """Original-size RGB images and their model-size versions; differing sizes are reconciled.
    `background`: the fixed camera's (image, model-size image), read once for every frame."""
    bg = background[0] if background is not None else imageio.read_rgb(job.bg)
    fgbg = imageio.read_rgb(job.fgbg)
    note = None
    if bg.shape != fgbg.shape:
        note = (
            f"{job.fgbg.name}: bg is {bg.shape[1]}x{bg.shape[0]} and fgbg {fgbg.shape[1]}x{fgbg.shape[0]}; "
            f"both resized to the model's {size[1]}x{size[0]}, outputs at the fgbg's size"
        )
    return bg, fgbg, background[1] if background is not None else imageio.resize(bg, size), imageio.resize(fgbg, size), note


def write_outputs(out: Path, bg: np.ndarray, fgbg: np.ndarray, mask: np.ndarray, depth: np.ndarray,
                  depth_convention: str = ORIGINAL_DEPTH_CONVENTION) -> list[Path]:
    """mask.png, depth.png (colour map) and panel.png at the fgbg image's size (atomic writes).

    mask.png and depth.png are data (the input's size, nothing drawn on them); only the panel,
    which a person reads, gets labels and the depth tile's near/far bar (`depth_convention`: the
    model's, which says which end is far).
    """
    h, w = fgbg.shape[:2]
    mask = np.clip(imageio.resize(mask, (h, w)), 0.0, 1.0)
    depth = np.clip(imageio.resize(depth, (h, w)), 0.0, 1.0)
    depth_rgb = imageio.colorize_depth(depth)
    ensure_dir(out)
    mask_file, depth_file, panel_file = OUTPUT_FILES
    paths = [imageio.save_png(out / mask_file, mask), imageio.save_png(out / depth_file, depth_rgb)]
    bg_tile = imageio.resize(bg, (h, w)) if bg.shape[:2] != (h, w) else bg
    panel = imageio.make_panel([bg_tile, fgbg, mask, depth_rgb], ["bg", "fgbg", "mask", "depth"],
                               legends=[None, None, None, imageio.depth_legend(depth_convention)])
    paths.append(imageio.save_png(out / panel_file, panel))  # last: marks the pair as done
    return paths


def _batches(jobs: list[PairJob], n: int) -> Iterator[list[PairJob]]:
    for i in range(0, len(jobs), n):
        yield jobs[i : i + n]


def infer_files(
    model: str | Path | Runner, bg: str | Path, fgbg: str | Path, out: str | Path, *, batch_size: int = 8,
    provider: str = "cpu", skip_existing: bool = False, fail_fast: bool = False, bg_cache: bool = True,
) -> InferReport:
    """Run `model` on a pair of images (or two folders of pairs, or one background and a folder
    of frames) and write the PNGs under `out`. When every pair has the same background (a fixed
    camera), its features are computed once with the model's halves (`bg_cache` False: the
    whole network runs on every pair).

    A pair whose images cannot be read is skipped and reported in `failures` (or, with
    `fail_fast`, stops the run); the others are written, each output atomically, so an
    interrupted run can be re-run with `skip_existing` to do only the pairs not yet finished.
    A single pair that fails raises its error directly.
    """
    positive(batch_size, "--batch-size")
    out = check_output_dir(Path(out))  # a file in the way (of it or a folder above it): refused before any work
    jobs, notes = plan_jobs(Path(bg), Path(fgbg), out)
    if skip_existing:
        todo = [job for job in jobs if not all((job.out / name).is_file() for name in OUTPUT_FILES)]
        skipped, jobs = len(jobs) - len(todo), todo
    else:
        skipped = 0
    fixed = len(jobs) > 1 and len({job.bg for job in jobs}) == 1
    if not bg_cache and not fixed:
        raise UserError("--no-bg-cache only applies to one background and a folder of frames (a fixed camera)")
    if isinstance(model, Runner):
        runner = model
    else:
        runner = open_fixed_camera(model, cache=bg_cache, provider=provider) if fixed else open_runner(model, provider=provider)
    report = InferReport(notes=list(notes), skipped=skipped)
    with runner:
        report.notes += runner.notes  # after activation: a provider that failed to load says so then
        size = runner.spec.size
        background = None
        if fixed:  # read and resized once; its features computed once where the halves runs
            image = imageio.read_rgb(jobs[0].bg)
            background = (image, imageio.resize(image, size))
            runner.set_background(imageio.to_nchw([background[1]]))
        for group in _batches(jobs, batch_size):
            loaded, ready = [], []
            for job in group:
                try:
                    loaded.append(load_pair(job, size, background))
                    ready.append(job)
                except UserError as e:
                    if len(jobs) == 1 or fail_fast:
                        raise
                    report.failures.append(str(e))
            if not ready:
                continue
            frames = imageio.to_nchw([x[3] for x in loaded])
            result = runner.infer_frames(frames) if fixed else runner.infer({"bg": imageio.to_nchw([x[2] for x in loaded]), "fgbg": frames})
            report.nonfinite += sum(int((~np.isfinite(values)).sum()) for values in result.values())
            for i, (job, (bg_img, fg_img, _, _, note)) in enumerate(zip(ready, loaded)):
                if note:
                    report.resized += 1
                    if report.resized <= SHOWN_SIZE_NOTES:
                        report.notes.append(note)
                mask = np.nan_to_num(result["mask"][i, 0], nan=0.0)
                depth = np.nan_to_num(result["depth"][i, 0], nan=0.0)
                paths = write_outputs(job.out, bg_img, fg_img, mask, depth, runner.spec.depth_convention)
                report.files += len(paths)
                report.panel = paths[-1]
                report.pairs += 1
            del loaded, ready, frames, result  # nothing of a finished batch outlives it
    if report.resized > SHOWN_SIZE_NOTES:
        report.notes.append(f"... and {report.resized - SHOWN_SIZE_NOTES} more pair(s) whose bg and fgbg differ in size (resized likewise)")
    if report.nonfinite:
        report.notes.append(f"{runner.path.name} produced {report.nonfinite} NaN/inf output values (written as 0): the model is broken")
    return report
