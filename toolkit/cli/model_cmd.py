"""Commands that work on checkpoints: import-legacy, summary, export (torch imported lazily)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..core.errors import CheckFailed, UserError
from ..core.optional import import_optional
from .common import console, existing_path, progress_bar
from .common import image_size as check_size
from .tables import WIDE_HELP, Col, print_wrapped, show_table


def _need_torch() -> None:
    import_optional("torch", "PyTorch (needed for this command)", "train")


CALIB_HELP = ("Unlabelled pairs for the re-estimation: a data set in the original layout (folder or zip; its "
              "pairs split by background into calibration and held-out ones). Default: a synthetic set made for "
              "the run; a site's own pairs do better.")


def _calibration(calib: Path | None, calib_pairs: int, min_agreement: float):  # -> CalibrationOptions
    from ..net.recalibrate import CalibrationOptions

    return CalibrationOptions(data=calib, calib_pairs=calib_pairs, min_agreement=min_agreement)


def _say_recalibration(report) -> None:  # report: toolkit.net.recalibrate.Recalibration
    console.print(f"BatchNorm statistics re-estimated: {report.summary()}")


def import_legacy(
    old: Path = typer.Argument(..., help="The original author's checkpoint (Models_pt/<n>.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the toolkit checkpoint."),
    epoch: int | None = typer.Option(None, "--epoch", help="Epoch to record (default: the number ending the file name, e.g. 12.pt)."),
    calib: Path | None = typer.Option(None, "--calib", "--data", help=CALIB_HELP),
    calib_pairs: int = typer.Option(64, "--calib-pairs", help="Pairs the statistics are estimated on."),
    min_agreement: float = typer.Option(0.6, "--min-agreement", help="Refuse (exit 1, nothing written) below this label-free agreement."),
    keep_statistics: bool = typer.Option(False, "--keep-statistics", help=(
        "Write the exact import, BatchNorm statistics as shipped (the original files' blended tail statistics: "
        "eval mode segments nothing with them).")),
) -> None:
    """Convert an original checkpoint to the toolkit's format without running code from it, and
    re-estimate its BatchNorm statistics (its shared tail's are a blend eval mode cannot use)."""
    _need_torch()
    from ..net.legacy import import_legacy as run

    existing_path(old)
    if keep_statistics and calib is not None:
        raise UserError("--keep-statistics writes the statistics as shipped; --calib has nothing to re-estimate then")
    calibration = None if keep_statistics else _calibration(calib, calib_pairs, min_agreement)
    with progress_bar("re-estimating BatchNorm statistics") as bar:
        report = run(old, out, epoch=epoch, calibration=calibration, say=console.print, progress=bar)
    console.print(f"read {report.source} ({report.root_class}, restricted unpickler: no code from the file ran)")
    dropped = ", ".join(f"{k} ({v:,})" for k, v in report.dropped.items())
    if dropped:
        console.print(f"dropped modules the forward never calls: {dropped}")
    if report.recalibration is not None:
        _say_recalibration(report.recalibration)
    else:
        console.print("BatchNorm statistics kept as shipped (--keep-statistics): the tail's are a blend of both heads'")
    console.print(f"wrote {report.out}: {report.tensors} tensors, {report.parameters:,} parameters used")


def recalibrate(
    ckpt: Path = typer.Argument(..., help="A toolkit checkpoint."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the re-estimated checkpoint."),
    data: Path | None = typer.Option(None, "--data", "--calib", help=CALIB_HELP),
    calib_pairs: int = typer.Option(64, "--calib-pairs", help="Pairs the statistics are estimated on."),
    min_agreement: float = typer.Option(0.6, "--min-agreement", help="Refuse (exit 1, nothing written) below this label-free agreement."),
) -> None:
    """Re-estimate every BatchNorm layer's running statistics from unlabelled pairs (the shared
    tail one set per head), judged by the label-free agreement before and after."""
    _need_torch()
    from ..net.recalibrate import recalibrate_file

    existing_path(ckpt)
    options = _calibration(data, calib_pairs, min_agreement)
    with progress_bar("re-estimating BatchNorm statistics") as bar:
        report = recalibrate_file(ckpt, out, options, say=console.print, progress=bar)
    _say_recalibration(report)
    console.print(f"wrote {out}")


SUMMARY_COLUMNS = (Col("#", right=True), Col("layer"), Col("type", optional=True), Col("output shape"), Col("params", right=True))


def summary(
    ckpt: Path | None = typer.Argument(None, help="A toolkit checkpoint (default: a fresh network at 128 px)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size (default: the checkpoint's, or 128)."),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """The layer table with output shapes and parameter counts."""
    _need_torch()
    from ..net.checkpoint import load_checkpoint, spec_of
    from ..net.summary import summarize

    size = 128
    if ckpt is not None:
        size = spec_of(load_checkpoint(ckpt)).height
    if image_size is not None:
        size = check_size(image_size)
    s = summarize(size, size)
    rows = [(str(r.index), r.name, r.kind, "[-1, " + ", ".join(str(d) for d in r.shape[1:]) + "]",
             f"{r.params:,}" if r.first_call else f"({r.params:,} shared)" if r.params else "0") for r in s.rows]
    show_table(f"EVA4 mask + depth network at {size}x{size}", SUMMARY_COLUMNS, rows, wide=wide)
    console.print(f"{len(s.rows)} layer calls; parameters used: {s.params_used:,}")
    print_wrapped(s.explain())


def export(
    ckpt: Path = typer.Argument(
        ..., metavar="SOURCE", help="A toolkit checkpoint (.pt), or an exported model.onnx (fp16/int8/engines/Triton made without PyTorch)."),
    out: Path = typer.Option(Path("exports"), "--out", "-o", help="Output folder."),
    graph: str = typer.Option(
        "folded", "--graph", help="folded (default: the tail upsamples later; ~60% of the arithmetic, same outputs) or literal (layer by layer, as PyTorch).",
    ),
    image_size: str | None = typer.Option(
        None, "--image-size", help="HxW the model takes, multiples of 4 (e.g. 128x224 for a 16:9 camera); default: the training size."),
    dynamic_size: bool = typer.Option(
        False, "--dynamic-size", help="H and W symbolic: ONNX Runtime/OpenVINO run any multiple of 4; --image-size is the nominal size."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write model.fp16.onnx (fp32 I/O; checked against fp32)."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx (static Q/DQ; refused when it fails the accuracy gate)."),
    calib: Path | None = typer.Option(None, "--calib", help="Calibration data (folder or zip, original layout); default: a small synthetic set."),
    int8_target: str | None = typer.Option(
        None, "--int8-target", help="int8 flavour: cpu (U8S8 Q/DQ, fastest in ONNX Runtime) or tensorrt (symmetric, zero points 0); default cpu."
    ),
    calib_method: str | None = typer.Option(None, "--calib-method", help="int8 calibration: minmax, entropy or percentile. Default entropy."),
    calib_pairs: int | None = typer.Option(
        None, "--calib-pairs",
        help="Calibration pairs (default 32): int8 calibrates on them, fp16 is checked on them; the int8 gate judges 16 held-out pairs.",
    ),
    force: bool = typer.Option(False, "--force", help="Write the int8 model even when it fails the accuracy gate (with a warning)."),
    int8_search: str | None = typer.Option(
        None, "--int8-search",
        help="auto (default): when int8 misses its gate, search for the fewest layers to keep in float; off: refuse (or --force)."),
    int8_search_budget: float | None = typer.Option(
        None, "--int8-search-budget", help="Seconds the int8 search may take (default 900); it says how long it took."),
    engine: bool = typer.Option(False, "--engine", help="Build TensorRT engines model.<precision>.engine from each ONNX of this run (gpu extra)."),
    batch: str | None = typer.Option(None, "--batch", help="Engine batch profile min,opt,max (default 1,8,32)."),
    size_profile: str | None = typer.Option(
        None, "--size-profile", help="Engine size range min,opt,max as HxW (e.g. 96x160,128x224,256x448) of a --dynamic-size model."),
    workspace: int | None = typer.Option(None, "--workspace", help="Engine builder workspace in MiB (default 1024)."),
    engine_compat: str | None = typer.Option(None, "--engine-compat", help=(
        "Engine portability: none (default: this TensorRT and GPU), hardware (any Ampere+ GPU), version (later TensorRT too), hardware+version.")),
    dla_core: int | None = typer.Option(None, "--dla-core", help="Jetson: build the fp16/int8 engines for this DLA core, GPU fallback on."),
    triton: Path | None = typer.Option(None, "--triton", help="Also write a Triton model repository in this folder."),
    triton_name: str | None = typer.Option(None, "--triton-name", help="The model's name in the Triton repository (default eva4)."),
    triton_kind: str | None = typer.Option(
        None, "--triton-kind", help="Where Triton runs the ONNX model: cpu or gpu (default: gpu when this machine has CUDA; the line written says which)."),
) -> None:
    """Write model.onnx and the formats asked for (fp16, int8, TensorRT engines, Triton), or those formats from an exported .onnx.

    model.onnx holds the normalisation and decoding in-graph, a dynamic batch and its metadata.

    Every file is checked before it is written (fp32: ONNX Runtime vs PyTorch; fp16 and int8: vs fp32).

    A model that fails its check is refused (exit 1) and never left on disk; bad options are refused (exit 2) before anything is written.
    """
    from export.formats import check_source, exit_code, preflight, run_exports
    from export.options import ExportOptions

    from ..core.fsutil import ensure_dir

    options = ExportOptions.from_given(
        graph=graph, fp16=fp16, int8=int8, engine=engine, triton=triton, calib=calib, int8_target=int8_target,
        calib_method=calib_method, calib_pairs=calib_pairs, force=force or None, int8_search=int8_search,
        search_budget_s=int8_search_budget, batch=batch, workspace_mb=workspace, engine_compat=engine_compat, dla_core=dla_core,
        triton_name=triton_name, triton_kind=triton_kind, image_size=image_size, dynamic_size=dynamic_size or None,
        size_profile=size_profile,
    )
    check_source(ckpt, options)
    preflight(options)  # missing libraries: exit 2 before anything is written
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    existing_path(ckpt)
    _check_export_source(ckpt)  # a bad source is bad input (exit 2), not a failed export
    ensure_dir(out)
    outcomes = run_exports(ckpt, out, options=options, say=lambda line: console.print(line, soft_wrap=True))
    for o in outcomes:
        for a in o.artifacts:
            console.print(f"{'wrote' if a.written else 'using'} {a.path} ({a.precision}); {a.summary}")
            for note in a.notes:
                console.print(f"  {note}")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        message = "; ".join(str(o.error) for o in failed)
        if exit_code(outcomes) == UserError.exit_code:
            raise UserError(message)
        raise CheckFailed(message)


def _check_export_source(source: Path) -> None:
    """Load the checkpoint (PyTorch needed), or read the exported model's interface (no PyTorch)."""
    if source.suffix.lower() == ".onnx":
        from ..runtime.onnx_info import read_onnx_info

        read_onnx_info(source, require_spec=True)
        return
    _need_torch()
    from ..net.checkpoint import load_checkpoint

    load_checkpoint(source)


def register(app: typer.Typer) -> None:
    app.command("import-legacy")(import_legacy)
    app.command("recalibrate")(recalibrate)
    app.command("summary")(summary)
    app.command("export")(export)
