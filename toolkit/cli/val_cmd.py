"""`toolkit val`: each model against the labels, beside its latency (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..core.errors import CheckFailed, UserError
from ..core.fsutil import write_text_atomic
from .common import console
from .run_cmd import PROVIDER_HELP, short_names
from .tables import WIDE_HELP, Col, print_wrapped, show_table

VAL_COLUMNS = (
    Col("model"), Col("backend", optional=True), Col("prec"), Col("mask IoU", right=True), Col("Dice", right=True, optional=True),
    Col("d RMSE", right=True), Col("AbsRel", right=True, optional=True), Col("delta1", right=True, optional=True),
)


def val(
    model: list[Path] = typer.Option(..., "--model", "-m", help="Model(s) to score (repeat the option); a .pt is the reference row."),
    data: Path | None = typer.Option(
        None, "--data", help="Data set folder or zip; its held-out backgrounds are scored (default: a synthetic set made for the run)."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP + " A comma list scores each .onnx model on each."),
    limit: int = typer.Option(64, "--limit", help="Held-out pairs to score (evenly spaced)."),
    batch: str = typer.Option("1,8", "--batch", help="Comma-separated batch sizes to time."),
    iters: int = typer.Option(20, "--iters", help="Timed calls per model and batch size."),
    holdout: float | None = typer.Option(None, "--holdout", help="With --data: share of its backgrounds held out (as toolkit train's --holdout; default 0.2)."),
    seed: int | None = typer.Option(None, "--seed", help="With --data: seed of the background split (as toolkit train's --seed; default 0)."),
    every_pair: bool = typer.Option(False, "--all", help="With --data: a test set of its own; score every pair (up to --limit), no background held back."),
    depth_units: str = typer.Option(
        "auto", "--depth-units",
        help="synthetic (log-spaced grey: AbsRel/delta1 in metres), gray (as stored), or auto (synthetic without --data, else gray)."),
    min_mask_iou: float | None = typer.Option(None, "--min-mask-iou", help="Exit 1 when a model's mask IoU is below this."),
    max_depth_rmse: float | None = typer.Option(None, "--max-depth-rmse", help="Exit 1 when a model's depth RMSE is above this."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write every figure as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of accuracy against latency, a point per model and backend."),
    no_reference: bool = typer.Option(False, "--no-reference", help="Do not add the first model's source checkpoint as the PyTorch reference row."),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """Score each model against the labels of held-out backgrounds, and time it.

    The figures are toolkit train's (mask IoU/Dice per image at 0.5,
    depth RMSE, AbsRel, delta1); the times are medians of --iters calls
    per batch size, timed in interleaved rounds so that the ratios
    between models hold on this machine. Unless --no-reference (or
    PyTorch is not installed), the checkpoint the first model was
    exported from is added as the first row."""
    from ..core.fsutil import check_output_file
    from ..tasks.bench import parse_batch_sizes, with_baseline
    from ..tasks.val import accuracy_latency_png, gate_failures, validate

    if data is None and (holdout is not None or seed is not None):
        raise UserError("val: --holdout and --seed choose the held-out backgrounds of --data; without --data every pair "
                        "of a synthetic set made for the run is scored")
    if every_pair and (holdout is not None or seed is not None):
        raise UserError("val: --all scores every pair of --data; --holdout and --seed choose a held-out share: give one or the other")
    batches = parse_batch_sizes(batch)
    for out in (json_out, plot):
        if out is not None:
            check_output_file(out)  # before the work, not after it
    for out in (plot,):
        if out is not None and out.suffix.lower() != ".png":
            raise UserError(f"--plot {out}: the picture is a PNG; give a .png name")
    models, note = list(model), ""
    if not no_reference:
        models, note = with_baseline(models, None)
        note = note.replace("baseline: ", "reference row: ", 1).replace("pass --baseline CKPT", "give it as a --model")
    report = validate(models, data, provider=provider, limit=limit, batches=batches, iters=iters,
                      holdout=0.2 if holdout is None else holdout, seed=0 if seed is None else seed, depth_units=depth_units,
                      every_pair=every_pair)
    names = short_names([r.model for r in report.rows])
    if note:
        console.print(note)
    print_val(report, names, wide=wide)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
        console.print(f"wrote {json_out}")
    if plot is not None:
        from ..render.imageio import save_png

        console.print(f"wrote {save_png(plot, accuracy_latency_png(report, names))}")
    failures = gate_failures(report, min_mask_iou=min_mask_iou, max_depth_rmse=max_depth_rmse)
    if failures:
        raise CheckFailed("val: " + "; ".join(failures))


def print_val(report, names: dict[str, str], *, wide: bool = False) -> None:
    cols = VAL_COLUMNS + tuple(Col(f"ms b{b}", right=True) for b in report.batches) + (Col(f"x b{report.batches[-1]}", right=True),)
    last = report.batches[-1]

    def fig(r, key: str, form: str) -> str:
        v = r.figures.get(key)
        return form.format(v) if v is not None and v == v else "-"

    rows = [(names[r.model], r.backend, r.precision, fig(r, "mask_iou", "{:.3f}"), fig(r, "mask_dice", "{:.3f}"),
             fig(r, "depth_rmse", "{:.4f}"), fig(r, "depth_absrel", "{:.3f}"), fig(r, "depth_delta1", "{:.3f}"),
             *(f"{r.ms_per_pair[b]:.2f}" for b in report.batches), f"{r.speedup[last]:.2f}x") for r in report.rows]
    source = "a synthetic set made for the run" if report.data == "synthetic" else report.data
    show_table(f"toolkit val: {report.pairs} pairs of {source} against their labels; ms per pair, same run",
               cols, rows, wide=wide)
    print_wrapped(f"x b{last}: pairs/s at batch {last} relative to the first row; d RMSE: depth RMSE in [0, 1]")
    for note in report.notes:
        print_wrapped(note)


def register(app: typer.Typer) -> None:
    app.command("val")(val)
