"""`toolkit data ...`: make a synthetic set, show channel statistics, check a set.

A thin shell: every command parses options, calls one library function (toolkit.data) and
prints its result. DIR may be a folder holding the layout or a single zip file. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ..core import spec
from ..core.errors import CheckFailed, positive
from ..core.fsutil import check_output_file, write_text_atomic
from ..data.inspect import channel_stats, check_dataset
from ..data.reader import open_dataset
from ..data.synth import synthesize
from .common import console, existing_path
from .tables import Col, show_table

data_app = typer.Typer(
    help="Make, inspect and check data sets (folders or zip files in the original layout).",
    no_args_is_help=True,
    add_completion=False,
)

DirArg = Annotated[Path, typer.Argument(help="Data folder or zip file (original layout).", show_default=False)]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write the result as JSON to FILE.", metavar="FILE")
]


@data_app.command("synth")
def synth_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the data set into.", show_default=False)],
    backgrounds: Annotated[int, typer.Option(help="Number of background rooms (Shelves_<k>).")] = 8,
    foregrounds: Annotated[int, typer.Option(help="Number of people (p<m>).")] = 6,
    placements: Annotated[int, typer.Option(help="Placements per pair (it); the second half mirrored.")] = 2,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 160,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same bytes.")] = 0,
    zip_: Annotated[bool, typer.Option("--zip", help="Write one zip file per kind instead of folders.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing, non-empty --out folder whole.")] = False,
    depth_convention: Annotated[str, typer.Option(
        "--depth-convention", help="Which way the depth grey runs: far-bright (the original set's) or near-bright "
        "(what the toolkit wrote before); dataset.json records it.")] = "far-bright",
) -> None:
    """Write a synthetic data set with exact depth, in the original names and layout.

    The set is written beside --out (as .NAME.partial) and renamed into place when complete.
    --out must not exist or be empty; --force replaces a non-empty one whole.
    """
    report = synthesize(out, backgrounds=backgrounds, foregrounds=foregrounds, placements=placements,
                        size=size, seed=seed, zip=zip_, force=force, depth_convention=depth_convention)
    console.print(report.summary(), soft_wrap=True)


STATS_COLUMNS = (Col("kind"), Col("channel"), *(Col(h, right=True) for h in ("mean", "std", "original mean", "original std")))
CHECK_COLUMNS = (Col("item"), Col("value", prose=True), Col("verdict", verdict=True))


@data_app.command("stats")
def stats_cmd(
    data: DirArg,
    size: Annotated[int | None, typer.Option(help="Resize to SIZE x SIZE first (as training would).")] = None,
    limit: Annotated[int | None, typer.Option(help="Use at most this many samples, spread evenly.")] = None,
    json_file: JsonOpt = None,
) -> None:
    """Per-channel mean and std of bg, fgbg, mask and depth, beside the original's."""
    existing_path(data, "file or folder")
    if json_file is not None:
        check_output_file(json_file)
    hw = (positive(size, "--size"),) * 2 if size is not None else None
    if limit is not None:
        positive(limit, "--limit")
    with open_dataset(data) as ds:
        stats = channel_stats(ds, size=hw, limit=limit)
        used = min(len(ds), limit) if limit else len(ds)
    reference = {"bg": (spec.BG_MEAN, spec.BG_STD), "fgbg": (spec.FGBG_MEAN, spec.FGBG_STD),
                 "mask": ((spec.MASK_MEAN,), (spec.MASK_STD,)), "depth": ((spec.DEPTH_MEAN,), (spec.DEPTH_STD,))}
    rows = []
    for kind, s in stats.items():
        names = ("R", "G", "B") if len(s["mean"]) == 3 else ("-",)
        ref_mean, ref_std = reference[kind]
        rows += [(kind if c == 0 else "", name, f"{s['mean'][c]:.4f}", f"{s['std'][c]:.4f}", f"{ref_mean[c]:.3f}", f"{ref_std[c]:.3f}")
                 for c, name in enumerate(names)]
    show_table(f"{data}: {used} samples" + (f" at {size}x{size}" if size else ""), STATS_COLUMNS, rows)
    if json_file is not None:
        payload = {"source": str(data), "samples": used, "size": [size, size] if size else None, "stats": stats}
        write_text_atomic(json_file, json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {json_file}", soft_wrap=True)


@data_app.command("check")
def check_cmd(
    data: DirArg,
    json_file: JsonOpt = None,
    show: Annotated[int, typer.Option(help="List at most this many files per problem.")] = 10,
) -> None:
    """Decode every image; report unreadable, unpaired, odd and unsafe files (exit 1 if not ok)."""
    existing_path(data, "file or folder")
    if json_file is not None:
        check_output_file(json_file)
    report = check_dataset(data)
    style = {"ok": "green", "note": "yellow", "FAIL": "bold red"}
    rows = [(item, value, Text(verdict, style=style[verdict])) for item, value, verdict in report.rows()]
    show_table(f"data check: {data}", CHECK_COLUMNS, rows)
    for line in report.details(limit=max(show, 0)):
        console.print(line, markup=False)
    if json_file is not None:
        write_text_atomic(json_file, json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_file}", soft_wrap=True)
    if not report.ok:
        raise CheckFailed(f"data check failed for {data}: {', '.join(report.problems())}")
    console.print(Text("data check passed", style="green"))
