"""Commands that run models: infer, parity, doctor, demo (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from ..errors import CheckFailed, UserError
from ..fsutil import write_text_atomic
from .common import console, err_console

PROVIDER_HELP = "Where .onnx/.pt models run: cpu, cuda (CUDA EP / PyTorch CUDA) or tensorrt (TensorRT EP); falls back with a note."


def infer(
    bg: Path = typer.Argument(..., help="Background image (or a folder of them)."),
    fgbg: Path = typer.Argument(..., help="The same background with a person (or a folder, paired by name)."),
    model: Path = typer.Option(..., "--model", "-m", help="Model file: .pt, .onnx or .engine (backend by suffix)."),
    out: Path = typer.Option(Path("infer-out"), "--out", "-o", help="Output folder."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per batch when given folders."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip pairs whose three PNGs are already in --out (resume a run)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first unreadable pair instead of reporting them all at the end."),
) -> None:
    """Write mask.png, depth.png and panel.png (bg | fgbg | mask | depth) at the input's size."""
    from ..infer import infer_files

    report = infer_files(model, bg, fgbg, out, batch_size=batch_size, provider=provider,
                         skip_existing=skip_existing, fail_fast=fail_fast)
    for note in report.notes:
        err_console.print(f"note: {note}")  # markup off: paths and extras print as they are
    done = f" ({report.skipped} already done, skipped)" if report.skipped else ""
    console.print(f"{report.pairs} pair(s) -> {report.files} files under {out}{done}")
    if report.pairs == 1 and report.panel is not None:
        console.print(f"panel: {report.panel}")
    if report.failures:
        for failure in report.failures:
            err_console.print(f"skipped: {failure}", markup=False)
        raise UserError(f"{len(report.failures)} of {len(report.failures) + report.pairs} pair(s) could not be read (listed above)")


def parity(
    model: list[Path] = typer.Option(..., "--model", "-m", help="Model(s) to check (repeat the option)."),
    reference: Path | None = typer.Option(None, "--reference", "-r", help="PyTorch checkpoint (default: the one in the model's metadata)."),
    data: Path | None = typer.Option(None, "--data", help="Data set folder or zip (default: a small synthetic set)."),
    limit: int = typer.Option(16, "--limit", help="Number of pairs to compare on."),
    batch_size: int = typer.Option(8, "--batch-size"),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON."),
    png_dir: Path | None = typer.Option(None, "--png-dir", help="Write worst-<model>.png: the pair each model differs most on, with difference maps."),
    max_abs: float | None = typer.Option(None, "--max-abs", help="Override: max |model - torch|."),
    mask_iou: float | None = typer.Option(None, "--mask-iou", help="Override: minimum mask IoU vs torch."),
    depth_rmse: float | None = typer.Option(None, "--depth-rmse", help="Override: maximum depth RMSE vs torch."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP),
) -> None:
    """Run each model beside the PyTorch reference; exit 1 when a threshold fails."""
    from ..compare import Thresholds, run_parity
    from ..fsutil import check_output_dir, check_output_file

    overrides = Thresholds(max_abs=max_abs, mask_iou=mask_iou, depth_rmse=depth_rmse)  # checks their ranges
    if json_out is not None:
        check_output_file(json_out)  # before the work, not after it
    if png_dir is not None:
        check_output_dir(png_dir)
    report = run_parity(model, reference, data, limit=limit, batch_size=batch_size, overrides=overrides, provider=provider)
    print_parity(report)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
        console.print(f"wrote {json_out}")
    if png_dir is not None:
        from ..imageio import save_png

        for r in report.results:
            if r.worst is not None:
                path = save_png(png_dir / f"worst-{Path(r.model).stem}.png", r.worst.panel())
                console.print(f"wrote {path} (worst pair, max abs diff {r.worst.max_abs:.2e})")
    if not report:
        raise CheckFailed("parity failed: " + "; ".join(f"{Path(r.model).name}: {', '.join(r.failures)}" for r in report.results if not r))


def _mask_iou_cell(r) -> str:
    """The IoU, with the IoU over decided pixels when only undecided ones keep it under its gate."""
    text = f"{r.mask_iou:.4f}"
    gate = r.thresholds.mask_iou
    if gate is not None and r.mask_iou < gate and r.mask_iou_decided is not None and r.mask_iou_decided >= gate:
        text += f" ({r.mask_iou_decided:.4f} decided pixels)"
    return text + (f" ({r.empty_masks} empty)" if r.empty_masks else "")


def print_parity(report) -> None:
    table = Table(title=f"parity vs {Path(report.reference).name} on {report.pairs} pairs")
    for col in ("model", "backend", "precision", "max |d| mask", "max |d| depth", "mean |d|", "mask IoU", "mask Dice", "depth IoU", "depth RMSE", "verdict"):
        table.add_column(col)
    for r in report.results:
        table.add_row(
            Path(r.model).name, r.backend, r.precision,
            f"{r.max_abs['mask']:.2e}", f"{r.max_abs['depth']:.2e}",
            f"{max(r.mean_abs.values()):.2e}",
            _mask_iou_cell(r), f"{r.mask_dice:.4f}",
            f"{r.depth_iou:.4f}", f"{r.depth_rmse:.5f}",
            Text("PASS", style="green") if r else Text("FAIL: " + "; ".join(r.failures), style="red"),
        )
    console.print(table)


def doctor(
    json_out: Path | None = typer.Option(None, "--json", help="Also write the checks as JSON."),
    require: list[str] = typer.Option(
        [], "--require", help="Exit 1 unless these are usable (comma list or repeated): cuda, tensorrt, onnxruntime-gpu, torch, "
        "cudnn, cuda-python, onnxruntime, onnx, numpy, pillow, python."),
) -> None:
    """What is installed and usable: PyTorch and CUDA, ONNX Runtime providers, TensorRT.

    Exits 0 whatever is missing, unless --require names something that is not usable: then one
    line per such requirement on stderr and exit 1 (an unknown name is exit 2)."""
    from ..doctor import parse_requirements, run_checks, unmet_requirements

    required = parse_requirements(require)
    checks = run_checks()
    table = Table(title="toolkit doctor")
    for col in ("component", "version", "status", "fix"):
        table.add_column(col)
    for c in checks:
        status = Text.assemble(("ok " if c.ok else "-- ", "green" if c.ok else "yellow"), c.verdict)
        table.add_row(c.name, c.version, status, c.fix)
    console.print(table)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps([c.to_dict() for c in checks], indent=2) + "\n")
    unmet = unmet_requirements(required, checks)
    for line in unmet:
        err_console.print(f"error: {line}")
    if unmet:
        raise typer.Exit(CheckFailed.exit_code)


def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", "-o", help="Folder for every artefact of the demo."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs (the demo's budget)."),
    image_size: int = typer.Option(64, "--image-size", help="Training/model input size (multiple of 4)."),
) -> None:
    """The whole pipeline on the embedded default: synth -> train -> export -> infer -> parity."""
    from ..optional import import_optional

    import_optional("torch", "PyTorch (the demo trains a model)", "train")
    from ..demo import DemoSettings, run_demo
    from .common import image_size as check_size
    from .common import positive

    settings = DemoSettings(epochs=positive(epochs, "--epochs"), image_size=check_size(image_size))
    result = run_demo(out, settings, say=lambda line: console.print(line, markup=False, soft_wrap=True))
    total = sum(result.seconds.values())
    console.print(f"demo finished: parity {'PASS' if result.parity_passed else 'FAIL'}; stages took {total:.0f} s besides training")


def bench(
    model: list[Path] = typer.Option(..., "--model", "-m", help="Model(s) to time (repeat the option)."),
    batch: str = typer.Option("1,8", "--batch", help="Comma-separated batch sizes."),
    baseline: Path | None = typer.Option(
        None, "--baseline", help="Model the ratios are against (default: PyTorch eager on the first model's source checkpoint)."
    ),
    warmup: int = typer.Option(3, "--warmup"),
    iters: int = typer.Option(20, "--iters"),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads (default: the backend's)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the rows as JSON."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP),
) -> None:
    """Latency percentiles and throughput per model and batch size, with same-run ratios."""
    from ..bench import bench as run
    from ..bench import parse_batch_sizes, with_baseline

    batches = parse_batch_sizes(batch)
    if json_out is not None:
        from ..fsutil import check_output_file

        check_output_file(json_out)  # before the timing, not after it
    models, note = with_baseline(list(model), baseline)
    console.print(note)
    rows = run(models, batches, warmup=warmup, iters=iters, threads=threads, provider=provider)
    table = Table(title="toolkit bench (speed-up vs the baseline, same run)")
    for col in ("model", "backend", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "vs baseline"):
        table.add_column(col)
    for r in rows:
        table.add_row(Path(r.model).name, r.backend, str(r.batch), f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
                      f"{r.p99_ms:.2f}", f"{r.images_per_s:.1f}", f"{r.speedup:.2f}x")
    console.print(table)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps([r.to_dict() for r in rows], indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("infer")(infer)
    app.command("parity")(parity)
    app.command("doctor")(doctor)
    app.command("demo")(demo)
    app.command("bench")(bench)
