"""The fixed-camera pair's part of the export rows: the halves as artifacts, a given model's
pair, the fp16/int8 pairs converted from the fp32 one, and halves left by an earlier run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.core.errors import CheckFailed

from .context import Artifact, ExportContext

if TYPE_CHECKING:
    from toolkit.verify.compare import ParityResult


def pair_artifacts(bg: Path, frame: Path, precision: str, figures: str, *, written: bool = True) -> list[Artifact]:
    """The two halves of a fixed-camera pair as a row's artifacts; `figures`: the pair's check."""
    return [Artifact(bg, precision, "fixed camera: background half, run once per background", written=written, part="bg"),
            Artifact(frame, precision, f"fixed camera: frame half; the pair {figures}", written=written, part="frame")]


def given_pair(model: Path) -> list[Artifact]:
    """The split pair beside a given model, used as it is (nothing when there is none)."""
    from toolkit.runtime.fixed import SplitPairRunner, has_pair, split_paths

    if not has_pair(model):
        return []
    bg, frame = split_paths(model)
    runner = SplitPairRunner(model)  # refuses a pair that does not belong to the model
    return pair_artifacts(bg, frame, runner.precision, "beside the given model, used as it is", written=False)


def derived_pair(ctx: ExportContext, whole: Artifact, derive: Callable[[], tuple[Path, Path, ParityResult] | None]) -> list[Artifact]:
    """The fp16/int8 pair beside `whole`, converted from the fp32 pair when this run has one. A
    pair that fails its check is not written, and the whole model stands (a warning says so):
    the fixed camera then runs the whole network."""
    from .fixed_camera import remove_stale_pair

    if not ctx.has_pair(ctx.fp32_onnx):
        whole.notes.append(f"no fixed-camera pair: {ctx.fp32_onnx.name} has none beside it (export from the checkpoint to get one)")
        whole.notes += remove_stale_pair(whole.path)
        return []
    try:
        made = derive()
    except CheckFailed as e:
        whole.notes.append(f"warning: {e}; the fixed camera runs {whole.path.name} whole")
        whole.notes += remove_stale_pair(whole.path)
        return []
    assert made is not None  # has_pair: the fp32 pair exists
    bg, frame, check = made
    verdict = "" if check else " (FAILED, written with --force)"
    return pair_artifacts(bg, frame, whole.precision, f"vs fp32: {check.figures()}{verdict}")


