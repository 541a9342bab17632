"""`toolkit parity`: the models, their reference checkpoint and the pairs, found and compared.

The comparison itself is `toolkit.verify.compare`'s; this finds what to compare: the checkpoint a
model's metadata names (`find_reference`), each model's halves (`with_halves`), the
pairs (a data set, or a small synthetic one), and writes a golden folder when asked
(`toolkit.verify.golden`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.spec import INPUT_NAMES
from ..runtime import Runner, open_runner
from .compare import (
    DEFAULT_THRESHOLDS,
    ParityReport,
    Thresholds,
    compare_to_outputs,
    dataset_feeds,
    open_at,
    thresholds_for,
)


def find_reference(model: Path, runner: Runner) -> Path:
    """The checkpoint a model's metadata names: its recorded path relative to the model, then
    its name beside the model or in the current folder; the SHA-256 must match."""
    from ..core.fsutil import sha256_file

    name = runner.metadata.get("toolkit.checkpoint")
    digest = runner.metadata.get("toolkit.checkpoint_sha256")
    rel = runner.metadata.get("toolkit.checkpoint_relpath")
    if not name:
        raise UserError(f"{model}: its metadata names no checkpoint; pass --reference CKPT")
    candidates = [Path(os.path.normpath(c)) for c in ([model.parent / rel] if rel else []) + [model.parent / name, Path.cwd() / name]]
    for candidate in candidates:
        if candidate.is_file() and (not digest or sha256_file(candidate) == digest):
            return candidate
    raise UserError(f"{model}: reference checkpoint '{rel or name}' (from its metadata) not found or changed; pass --reference CKPT")


def with_halves(runners: list[Runner], notes: list[str], **options: Any) -> list[Runner]:
    """Each runner, followed by its model's halves when they sit beside it: parity judges
    the halves (run as one model) with the same thresholds as the whole model. Halves that do not
    belong to their model are left out with a note in `notes` (the whole model is still judged)."""
    from ..runtime.fixed import HalvesRunner, has_halves

    out: list[Runner] = []
    for runner in runners:
        out.append(runner)
        if has_halves(runner.path):
            try:
                out.append(HalvesRunner(runner.path, **options))
            except UserError as e:
                notes.append(f"halves left out: {e}")
    return out


def parity_feeds(data: str | Path | None, size: tuple[int, int], *, limit: int = 16, batch_size: int = 8) -> list[dict[str, Any]]:
    """The pairs parity compares on: `limit` evenly spaced from `data`, or from a small synthetic
    set made for the run (2 backgrounds x 4 people x 2 placements, a fixed seed)."""
    with tempfile.TemporaryDirectory(prefix="toolkit-parity-") as tmp:
        if data is None:
            from ..data.synth import synthesize

            data = Path(tmp) / "synthetic"
            synthesize(data, backgrounds=2, foregrounds=4, placements=2, size=max(size), seed=1234)
        feeds = list(dataset_feeds(data, size, limit=limit, batch_size=batch_size))
    if not feeds:
        raise UserError("parity: no input pairs to compare on")
    return feeds


DEFAULT_LIMIT, DEFAULT_BATCH = 16, 8  # pairs compared, pairs per call


def check_run_options(limit: object, batch_size: object, provider: str) -> None:
    """How many pairs, in what batches, on which one provider: the rule `run_parity` and
    `ParityOptions` share."""
    for value in (limit, batch_size):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError("parity: --limit and --batch-size must be positive")
    if "," in provider:
        raise UserError(f"parity: --provider takes one provider, got {provider!r} (bench and val take a comma list)")


def run_parity(
    models: list[str | Path],
    reference: str | Path | None = None,
    data: str | Path | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    batch_size: int = DEFAULT_BATCH,
    overrides: Thresholds | None = None,
    provider: str = "cpu",
    save_golden: str | Path | None = None,
) -> ParityReport:
    """Open the models and the reference, pick the pairs, compare. The CLI's `parity`.

    `provider` applies to the models under test; the PyTorch reference always runs on the CPU.
    `save_golden`: also write the pairs and the reference's outputs there (`toolkit.verify.golden`);
    then `models` may be empty (the reference's own size is used).
    """
    if not models and not (save_golden and reference):
        raise UserError("parity: give at least one --model (or --reference CKPT with --save-golden DIR)")
    check_run_options(limit, batch_size, provider)
    if save_golden is not None:
        from .golden import check_golden_target

        check_golden_target(save_golden)  # before the work, not after it
    notes: list[str] = []
    first = open_runner(models[0], provider=provider) if models else None
    ref_path = Path(reference) if reference else find_reference(Path(models[0]), first)
    ref_runner = open_at(ref_path, first.spec.size if first else None)
    size = ref_runner.spec.size  # the network is fully convolutional: a checkpoint runs at the export's size
    runners = with_halves(([first] if first else []) + [open_at(m, size, provider=provider) for m in models[1:]],
                               notes, provider=provider)
    for r in runners:
        if r.spec.size != size:
            raise UserError(f"{r.path}: takes {r.spec.height}x{r.spec.width}, the reference {ref_path.name} {size[0]}x{size[1]}")
    if ref_path.suffix.lower() == ".pt":  # parity proves the exports equal it: say when it is itself off
        from ..net.recalibrate import check_statistics

        statistics = check_statistics(ref_path)
        if not statistics:
            notes.append(statistics.line())
    feeds = parity_feeds(data, size, limit=limit, batch_size=batch_size)
    with ref_runner:
        refs = [ref_runner.infer(feed) for feed in feeds]
    if save_golden is not None:
        from .golden import write_golden

        judged = {p: thresholds_for(p, overrides) for p in DEFAULT_THRESHOLDS}
        write_golden(save_golden, reference=ref_runner, feeds=feeds, refs=refs, thresholds=judged, source=Path(data).name if data is not None else "synthetic")
        notes.append(f"wrote {save_golden}: {sum(len(f[INPUT_NAMES[0]]) for f in feeds)} pairs and {ref_path.name}'s outputs "
                     "(toolkit parity --golden DIR --model M checks a model against them without PyTorch)")
    report = compare_to_outputs(str(ref_runner.path), refs, runners, feeds, [thresholds_for(r.precision, overrides) for r in runners]) \
        if runners else ParityReport(str(ref_runner.path), sum(len(f[INPUT_NAMES[0]]) for f in feeds), [])
    report.notes = list(dict.fromkeys([*notes, *(n for r in runners for n in r.notes)]))  # a provider's fallback, after loading
    return report


def _thresholds(manifest: dict[str, Any], precision: str, overrides: Thresholds | None) -> Thresholds:
    """The thresholds the golden folder was judged by for `precision` (the fp32 ones for an
    unknown precision, as parity does), with the values `overrides` sets replacing them."""
    saved = manifest.get("thresholds", {})
    row = saved.get(precision, saved.get("fp32"))
    base = Thresholds(**row) if isinstance(row, dict) else thresholds_for(precision)
    if overrides is None:
        return base
    return Thresholds(**(asdict(base) | {k: v for k, v in asdict(overrides).items() if v is not None}))


def check_golden(folder: str | Path, models: list[str | Path], *, provider: str = "cpu",
                 overrides: Thresholds | None = None) -> ParityReport:
    """`toolkit parity --golden DIR`: each model (and its halves, when beside it) on the
    folder's pairs beside the stored reference outputs; a `toolkit.verify.compare.ParityReport`."""
    from .golden import read_golden_dir

    if not models:
        raise UserError("parity --golden: give at least one --model")
    golden = read_golden_dir(folder)
    m = golden.manifest
    size = golden.spec.size
    source = "the synthetic set" if m.get("source") == "synthetic" else m.get("source", "?")
    notes = [f"golden folder {Path(folder).name}: {m['pairs']} pairs of {source} with the outputs of "
             f"{m['reference']} (sha256 {str(m['reference_sha256'])[:12]})"]
    runners = with_halves([open_at(p, size, provider=provider) for p in models], notes, provider=provider)
    for r in runners:
        if r.spec.size != size:
            raise UserError(f"{r.path}: takes {r.spec.height}x{r.spec.width}, the golden pairs are {size[0]}x{size[1]}")
        made_from = r.metadata.get("toolkit.checkpoint_sha256")
        if made_from and made_from != m["reference_sha256"]:
            notes.append(f"{r.path.name} was exported from another checkpoint (sha256 {made_from[:12]}) than the golden reference")
    judged = [_thresholds(m, r.precision, overrides) for r in runners]
    report = compare_to_outputs(f"{m['reference']} (golden: {Path(folder).name})", golden.refs, runners, golden.feeds, judged)
    report.notes = list(dict.fromkeys([*notes, *(n for r in runners for n in r.notes)]))
    return report
