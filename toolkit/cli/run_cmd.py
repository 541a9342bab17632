"""Commands that run models: infer, parity, doctor, demo (no torch at import)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer
from rich.text import Text

from ..core.errors import CheckFailed, UserError
from ..core.fsutil import write_text_atomic
from ..tasks.doctor import REQUIREMENTS
from .common import console, err_console
from .tables import WIDE_HELP, Col, print_wrapped, show_table

PROVIDER_HELP = ("Where .onnx/.pt models run: cpu, cuda (CUDA EP / PyTorch CUDA), tensorrt (TensorRT EP), openvino[:GPU|:NPU] "
                 "(OpenVINO runs the .onnx), or auto (the fastest this machine has, timed at start and said); falls back with a note.")
NO_BG_CACHE_HELP = ("Run the whole network on every frame, even where the model's halves (X.bg.onnx, X.frame.onnx) "
                    "would compute the fixed background's features once.")


def infer(
    bg: Path = typer.Argument(..., help="Background image (or a folder of them)."),
    fgbg: Path = typer.Argument(..., help="The same background with a person (or a folder: paired by name, or all against one background)."),
    model: Path = typer.Option(..., "--model", "-m", help="Model file: .pt, .onnx or .engine (backend by suffix)."),
    out: Path = typer.Option(Path("infer-out"), "--out", "-o", help="Output folder."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per batch when given folders."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip pairs whose three PNGs are already in --out (resume a run)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first unreadable pair instead of reporting them all at the end."),
    no_bg_cache: bool = typer.Option(False, "--no-bg-cache", help=NO_BG_CACHE_HELP),
) -> None:
    """Write mask.png, depth.png and panel.png (bg | fgbg | mask | depth) at the input's size.

    One background and a folder of frames is a fixed camera: the background's features are
    computed once when the model's halves sit beside it."""
    from ..tasks.infer import infer_files

    report = infer_files(model, bg, fgbg, out, batch_size=batch_size, provider=provider,
                         skip_existing=skip_existing, fail_fast=fail_fast, bg_cache=not no_bg_cache)
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
    model: list[Path] = typer.Option([], "--model", "-m", help="Model(s) to check (repeat the option)."),
    reference: Path | None = typer.Option(None, "--reference", "-r", help="PyTorch checkpoint (default: the one in the model's metadata)."),
    data: Path | None = typer.Option(None, "--data", help="Data set folder or zip (default: a small synthetic set)."),
    limit: int | None = typer.Option(None, "--limit", help="Number of pairs to compare on (default 16; --layers: 4)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per inference call (default 8; larger: faster, more memory)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON (every figure, the thresholds, empty-mask counts)."),
    png_dir: Path | None = typer.Option(None, "--png-dir", help="Write worst-<model>.png: the pair each model differs most on, with difference maps."),
    max_abs: float | None = typer.Option(None, "--max-abs", help="Override: max |model - torch|."),
    mask_iou: float | None = typer.Option(None, "--mask-iou", help="Override: minimum mask IoU vs torch."),
    depth_rmse: float | None = typer.Option(None, "--depth-rmse", help="Override: maximum depth RMSE vs torch."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP),
    save_golden: Path | None = typer.Option(
        None, "--save-golden", help="Also write the pairs and the reference's outputs to this folder (npz + manifest with hashes)."),
    golden: Path | None = typer.Option(
        None, "--golden", help="Judge the models against a --save-golden folder instead of a checkpoint (no PyTorch needed)."),
    layers: bool = typer.Option(
        False, "--layers", help="Compare every intermediate tensor with the fp32 reference's; name the first over tolerance."),
    layer_tol: float | None = typer.Option(
        None, "--layer-tol", help="With --layers: relative L2 error a tensor may have (default per precision: 1e-4, 1e-2, 0.15)."),
) -> None:
    """Run each model beside the PyTorch reference; exit 1 when a threshold fails.

    --save-golden DIR keeps what was compared on (the pairs, PyTorch's
    outputs, the thresholds); --golden DIR --model M later judges M
    against it with the same verdicts, on a box without PyTorch.
    --save-golden with --reference CKPT and no --model only writes the
    folder. --layers compares every intermediate tensor with the fp32
    reference's and names the first layer over tolerance."""
    from ..core.fsutil import check_output_dir, check_output_file
    from ..verify.compare import Thresholds
    from ..verify.parity_options import ParityOptions

    options = ParityOptions(tuple(model), reference, data, limit=limit, batch_size=batch_size,
                            overrides=Thresholds(max_abs=max_abs, mask_iou=mask_iou, depth_rmse=depth_rmse),
                            provider=provider, save_golden=save_golden, golden=golden, layers=layers, layer_tol=layer_tol)
    if json_out is not None:
        check_output_file(json_out)  # before the work, not after it
    if png_dir is not None:
        check_output_dir(png_dir)
    if save_golden is not None:
        check_output_dir(save_golden)
    if options.mode == "layers":
        return layer_parity(options, json_out=json_out, png_dir=png_dir)
    report = options.run()
    print_parity(report)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
        console.print(f"wrote {json_out}")
    if png_dir is not None:
        from ..render.imageio import save_png

        for r in report.results:
            if r.worst is not None:
                path = save_png(png_dir / f"worst-{Path(r.model).stem}.png", r.worst.panel())
                console.print(f"wrote {path} (worst pair, max abs diff {r.worst.max_abs:.2e})")
    if not report:
        raise CheckFailed("parity failed: " + "; ".join(f"{Path(r.model).name}: {', '.join(r.failures)}" for r in report.results if not r))


LAYER_COLUMNS = (Col("#", right=True), Col("layer"), Col("op", optional=True), Col("rel error", right=True),
                 Col("max |d|", right=True, optional=True), Col("NaN/inf", right=True, optional=True))


def layer_parity(options, *, json_out: Path | None, png_dir: Path | None) -> None:
    """`parity --layers` (`options`: a `ParityOptions` in that mode): per model, the tensors with
    the largest errors, the first over its tolerance and the first NaN/inf; exit 1 when a model
    has either."""
    from ..verify.layers import layers_png

    reports = options.run()
    files = {m: "layers-" + Path(name).with_suffix("").as_posix().replace("/", "-") + ".png"
             for m, name in short_names([r.model for r in reports]).items()}
    for r in reports:
        worst = sorted(sorted(r.layers, key=lambda d: -d.rel_error)[:8], key=lambda d: d.index)
        rows = [(str(d.index), d.layer, d.op, f"{d.rel_error:.2e}", f"{d.max_abs:.2e}", str(d.nonfinite)) for d in worst]
        show_table(f"{Path(r.model).name}: the 8 tensors furthest from the reference, in graph order", LAYER_COLUMNS, rows)
        first, nan = r.first_over, r.first_nonfinite
        for note in r.notes:
            print_wrapped(note)
        print_wrapped(f"first tensor over tolerance: {first.layer} ({first.op}, tensor {first.tensor}, #{first.index}): "
                      f"relative error {first.rel_error:.3g} > {first.tolerance:.3g}" if first else "no tensor over tolerance")
        print_wrapped(f"first NaN/inf: {nan.layer} ({nan.op}, tensor {nan.tensor}, #{nan.index}): {nan.nonfinite} values"
                      if nan else "no NaN/inf")
        if png_dir is not None:
            from ..render.imageio import save_png

            console.print(f"wrote {save_png(png_dir / files[r.model], layers_png(r))}")
    if json_out is not None:
        write_text_atomic(json_out, json.dumps([r.to_dict() for r in reports], indent=2, allow_nan=False) + "\n")
        console.print(f"wrote {json_out}")
    failed = [r for r in reports if not r]
    if failed:
        raise CheckFailed("parity --layers: " + "; ".join(
            f"{Path(r.model).name}: first over tolerance {r.first_over.layer if r.first_over else '-'}"
            + (f", first NaN/inf {r.first_nonfinite.layer}" if r.first_nonfinite else "") for r in failed))


PARITY_COLUMNS = (
    Col("model"), Col("backend"), Col("precision"), Col("max |d| mask", right=True), Col("max |d| depth", right=True),
    Col("mean |d|", right=True), Col("mask IoU", right=True), Col("mask Dice", right=True), Col("depth IoU@0.5", right=True),
    Col("depth RMSE", right=True), Col("verdict", prose=True, verdict=True),
)


def _passed_on_decided(r) -> bool:
    return r.passed_on_decided


def _verdict(r) -> Text:
    if not r:
        return Text("FAIL: " + "; ".join(r.failures), style="red")
    if _passed_on_decided(r):
        return Text(f"PASS: mask IoU on decided pixels {r.mask_iou_decided:.4f} >= {r.thresholds.mask_iou}", style="green")
    return Text("PASS", style="green")


def _gates(t) -> str:
    """'max |d| <= 1e-04, mask IoU >= 0.999': the thresholds a model was judged by, in words."""
    parts = [(t.max_abs, "max |d| <= {:.0e}"), (t.mask_iou, "mask IoU >= {}"), (t.depth_iou, "depth IoU@0.5 >= {}"), (t.depth_rmse, "depth RMSE <= {}")]
    return ", ".join(form.format(value) for value, form in parts if value is not None) or "none"


def parity_notes(report) -> list[str]:
    """What the table's figures were judged by, and why a pass below a gate's figure is one."""
    from ..verify.compare import UNDECIDED_BAND

    notes = list(dict.fromkeys(f"{r.precision} thresholds: {_gates(r.thresholds)}" for r in report.results)) + list(report.notes)
    for r in report.results:
        name = Path(r.model).name
        if _passed_on_decided(r):
            notes.append(
                f"{name} passes on its mask IoU over the pixels the reference decides (further than {UNDECIDED_BAND} from 0.5), "
                f"{r.mask_iou_decided:.4f}; over all pixels it is {r.mask_iou:.4f}, under the {r.thresholds.mask_iou} gate, because "
                "a pixel the reference leaves at about 0.5 flips with any change of arithmetic: rounding, not disagreement.")
        if r.empty_masks:
            notes.append(f"{name}: {r.empty_masks} of {r.pairs} images have no mask pixel in either output; each counts as an "
                         "IoU of 1.0 in the mean, an agreement that says little.")
    return notes


def short_names(paths: list[str]) -> dict[str, str]:
    """Each model's file name, with its folder where two share a name (folded/model.onnx,
    literal/model.onnx): a table must tell its rows apart."""
    names = [Path(p).name for p in paths]
    return {p: (str(Path(*Path(p).parts[-2:])) if names.count(Path(p).name) > 1 else Path(p).name) for p in paths}


def print_parity(report) -> None:
    names = short_names([r.model for r in report.results])
    rows = [
        (names[r.model], r.backend, r.precision, f"{r.max_abs['mask']:.2e}", f"{r.max_abs['depth']:.2e}",
         f"{max(r.mean_abs.values()):.2e}", f"{r.mask_iou:.4f}", f"{r.mask_dice:.4f}", f"{r.depth_iou:.4f}",
         f"{r.depth_rmse:.5f}", _verdict(r))
        for r in report.results
    ]
    if rows:
        show_table(f"parity vs {Path(report.reference).name} on {report.pairs} pairs", PARITY_COLUMNS, rows)
    for note in parity_notes(report):
        print_wrapped(note)


DOCTOR_COLUMNS = (Col("component"), Col("version"), Col("status", prose=True, verdict=True), Col("fix", prose=True))


def doctor(
    json_out: Path | None = typer.Option(None, "--json", help="Also write the checks as JSON."),
    require: list[str] = typer.Option(
        [], "--require", help="Exit 1 unless these are usable (comma list or repeated): " + ", ".join(REQUIREMENTS) + "."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Also run this model's self-test (its golden pairs) where it will run."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP),
) -> None:
    """What is installed and usable: PyTorch and CUDA, ONNX Runtime providers, TensorRT, PyAV, the server.

    Exits 0 whatever is missing, unless --require names something that is not usable: then one
    line per such requirement on stderr and exit 1 (an unknown name is exit 2). With --model, the
    model's self-test runs on the backend and provider given (its fixed-camera halves too, when they sit
    beside it) and a failure is one line and exit 1 (2 when a file cannot be used: halves of another model)."""
    from ..tasks.doctor import parse_requirements, run_checks, unmet_requirements

    required = parse_requirements(require)
    checks = run_checks()
    rows = [(c.name, c.version, Text.assemble(("ok " if c.ok else "-- ", "green" if c.ok else "yellow"), c.verdict), c.fix)
            for c in checks]
    show_table("toolkit doctor", DOCTOR_COLUMNS, rows)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps([c.to_dict() for c in checks], indent=2) + "\n")
    unmet = unmet_requirements(required, checks)
    for line in unmet:
        err_console.print(f"error: {line}")
    if model is not None:
        from ..verify.selftest import self_test_model

        for line in self_test_model(model, provider=provider):
            console.print(line, soft_wrap=True)
    if unmet:
        raise typer.Exit(CheckFailed.exit_code)


def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", "-o", help="Folder for every artefact of the demo."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs (the demo's budget)."),
    image_size: int = typer.Option(64, "--image-size", help="Training/model input size (multiple of 4)."),
) -> None:
    """The whole pipeline on the embedded default: synth -> train -> export -> infer -> parity."""
    from ..core.optional import import_optional

    import_optional("torch", "PyTorch (the demo trains a model)", "train")
    from ..core.errors import positive
    from ..tasks.demo import DemoSettings, path_hint, run_demo
    from .common import image_size as check_size

    settings = DemoSettings(epochs=positive(epochs, "--epochs"), image_size=check_size(image_size))
    from train.interrupt import TrainingAborted, TrainingInterrupted

    try:
        result = run_demo(out, settings, say=lambda line: console.print(line, markup=False, soft_wrap=True))
    except (TrainingInterrupted, TrainingAborted):  # the demo starts over when run again: no resume hint
        err_console.print(f"interrupted during training: {out} is incomplete; run the demo again to start over")
        raise typer.Exit(130) from None
    total = sum(result.seconds.values())
    console.print(f"demo finished: parity {'PASS' if result.parity_passed else 'FAIL'}; stages took {total:.0f} s besides training")
    hint = path_hint()
    if hint:
        console.print(hint)


BENCH_COLUMNS = (
    Col("model"), Col("backend", optional=True), Col("batch", right=True), Col("H x W", right=True), Col("p50 ms", right=True),
    Col("p90 ms", right=True, optional=True), Col("p99 ms", right=True, optional=True), Col("images/s", right=True),
    Col("vs baseline", right=True, verdict=True),
)


def bench(
    model: list[Path] = typer.Option(..., "--model", "-m", help="Model(s) to time (repeat the option)."),
    batch: str = typer.Option("1,8", "--batch", help="Comma-separated batch sizes."),
    baseline: Path | None = typer.Option(
        None, "--baseline", help="Model the ratios are against (default: PyTorch eager on the first model's source checkpoint)."
    ),
    warmup: int = typer.Option(3, "--warmup", help="Untimed calls per model and batch size first (loading, caches, lazy allocation)."),
    iters: int = typer.Option(20, "--iters", help="Timed calls per model and batch size; the percentiles are over these."),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads (default: the backend's)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the rows as JSON."),
    provider: str = typer.Option(
        "cpu", "--provider", help=PROVIDER_HELP + " A comma list (e.g. cpu,openvino) times each .onnx model on each, in one table."),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """Latency percentiles and throughput per model and batch size, with same-run ratios."""
    from ..tasks.bench import bench as run
    from ..tasks.bench import parse_batch_sizes, with_baseline

    batches = parse_batch_sizes(batch)
    if json_out is not None:
        from ..core.fsutil import check_output_file

        check_output_file(json_out)  # before the timing, not after it
    models, note = with_baseline(list(model), baseline)
    console.print(note)
    rows = run(models, batches, warmup=warmup, iters=iters, threads=threads, provider=provider,
               on_note=lambda n: err_console.print(n if n.startswith("warning:") else f"note: {n}", soft_wrap=True))
    names = short_names([r.model for r in rows])
    cells = [(names[r.model], r.backend, str(r.batch), f"{r.height}x{r.width}", f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
              f"{r.p99_ms:.2f}", f"{r.images_per_s:.1f}", f"{r.speedup:.2f}x") for r in rows]
    columns = BENCH_COLUMNS
    if len({(r.model, r.backend) for r in rows}) > len({r.model for r in rows}):  # a model on two runtimes: keep the backend
        columns = tuple(dataclasses.replace(c, optional=False) if c.header == "backend" else c for c in BENCH_COLUMNS)
    show_table("toolkit bench (speed-up vs the baseline, same run)", columns, cells, wide=wide)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps([r.to_dict() for r in rows], indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("infer")(infer)
    app.command("parity")(parity)
    app.command("doctor")(doctor)
    app.command("demo")(demo)
    app.command("bench")(bench)
