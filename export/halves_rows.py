"""The fixed camera's halves in the export rows: the halves as artifacts, a given model's
halves, the fp16/int8 halves converted from the fp32 ones, and halves left by an earlier run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.core.errors import CheckFailed

from .context import Artifact, ExportContext

if TYPE_CHECKING:
    from toolkit.verify.compare import ParityResult


def halves_artifacts(bg: Path, frame: Path, precision: str, figures: str, *, written: bool = True) -> list[Artifact]:
    """The fixed camera's two halves as a row's artifacts; `figures`: the halves' check."""
    return [Artifact(bg, precision, "fixed camera: background half, run once per background", written=written, part="bg"),
            Artifact(frame, precision, f"fixed camera: frame half; the halves {figures}", written=written, part="frame")]


def given_halves(model: Path) -> list[Artifact]:
    """The halves beside a given model, used as it is (nothing when there is none)."""
    from toolkit.runtime.fixed import HalvesRunner, half_paths, has_halves

    if not has_halves(model):
        return []
    bg, frame = half_paths(model)
    runner = HalvesRunner(model)  # refuses halves that do not belong to the model
    return halves_artifacts(bg, frame, runner.precision, "beside the given model, used as it is", written=False)


def derived_halves(ctx: ExportContext, whole: Artifact, derive: Callable[[], tuple[Path, Path, ParityResult] | None]) -> list[Artifact]:
    """The fp16/int8 halves beside `whole`, converted from the fp32 halves when this run has them.
    Halves that fail their check is not written, and the whole model stands (a warning says so):
    the fixed camera then runs the whole network."""
    from .fixed_camera import remove_stale_halves

    if not ctx.has_halves(ctx.fp32_onnx):
        whole.notes.append(f"no fixed-camera halves: {ctx.fp32_onnx.name} has none beside it (export from the checkpoint to get one)")
        whole.notes += remove_stale_halves(whole.path)
        return []
    try:
        made = derive()
    except CheckFailed as e:
        whole.notes.append(f"warning: {e}; the fixed camera runs {whole.path.name} whole")
        whole.notes += remove_stale_halves(whole.path)
        return []
    assert made is not None  # has_halves: the fp32 halves exist
    bg, frame, check = made
    verdict = "" if check else " (FAILED, written with --force)"
    return halves_artifacts(bg, frame, whole.precision, f"vs fp32: {check.judged()}{check.and_self_test}{verdict}")


