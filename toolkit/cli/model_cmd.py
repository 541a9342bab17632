"""Commands that work on checkpoints: import-legacy, summary, export (torch imported lazily)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import CheckFailed, MissingDependency, UserError
from .common import console, existing_path
from .common import image_size as check_size


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise MissingDependency("PyTorch (needed for this command)", "train") from e


def import_legacy(
    old: Path = typer.Argument(..., help="The original author's checkpoint (Models_pt/<n>.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the toolkit checkpoint."),
    epoch: int | None = typer.Option(None, "--epoch", help="Epoch to record (default: the number ending the file name, e.g. 12.pt)."),
) -> None:
    """Convert an original checkpoint to the toolkit's format without running code from it."""
    _need_torch()
    from ..legacy import import_legacy as run

    existing_path(old)
    report = run(old, out, epoch=epoch)
    console.print(f"read {report.source} ({report.root_class}, restricted unpickler: no code from the file ran)")
    dropped = ", ".join(f"{k} ({v:,})" for k, v in report.dropped.items())
    if dropped:
        console.print(f"dropped modules the forward never calls: {dropped}")
    console.print(f"wrote {report.out}: {report.tensors} tensors, {report.parameters:,} parameters used")


def summary(
    ckpt: Path | None = typer.Argument(None, help="A toolkit checkpoint (default: a fresh network at 128 px)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input size (default: the checkpoint's, or 128)."),
) -> None:
    """The layer table with output shapes and parameter counts."""
    _need_torch()
    from ..checkpoint import load_checkpoint, spec_of
    from ..summary import summarize

    size = 128
    if ckpt is not None:
        size = spec_of(load_checkpoint(ckpt)).height
    if image_size is not None:
        size = check_size(image_size)
    s = summarize(size, size)
    table = Table(title=f"EVA4 mask + depth network at {size}x{size}", show_lines=False)
    for col, just in (("#", "right"), ("layer", "left"), ("type", "left"), ("output shape", "left"), ("params", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in s.rows:
        shape = "[-1, " + ", ".join(str(d) for d in r.shape[1:]) + "]"
        params = f"{r.params:,}" if r.first_call else f"({r.params:,} shared)" if r.params else "0"
        table.add_row(str(r.index), r.name, r.kind, shape, params)
    console.print(table)
    console.print(f"{len(s.rows)} layer calls; parameters used: {s.params_used:,}")
    console.print(s.explain())


def export(
    ckpt: Path = typer.Argument(..., help="A toolkit checkpoint (.pt)."),
    out: Path = typer.Option(Path("exports"), "--out", "-o", help="Output folder."),
) -> None:
    """Write model.onnx (normalisation and decoding in-graph, dynamic batch, metadata).

    The model is checked with onnx.checker and compared with PyTorch in ONNX Runtime before it
    is written; a model that disagrees is refused (exit 1).
    """
    _need_torch()
    from export.formats import run_exports

    from ..checkpoint import load_checkpoint
    existing_path(ckpt)
    load_checkpoint(ckpt)  # a bad checkpoint is bad input (exit 2), not a failed export
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    outcomes = run_exports(ckpt, out, ["onnx"])
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.ok:
            detail = o.detail
            console.print(
                f"wrote {o.path} ({o.format.precision}); ONNX Runtime vs PyTorch: max abs diff "
                f"{detail.max_abs_diff:.2e}, mean {detail.mean_abs_diff:.2e} on {detail.inputs} inputs"
            )
    if failed:
        raise CheckFailed("; ".join(str(o.error) for o in failed))


def register(app: typer.Typer) -> None:
    app.command("import-legacy")(import_legacy)
    app.command("summary")(summary)
    app.command("export")(export)
