"""The int8 search beside the fixed rule: gate figures, layers kept in float, speed-up, search time.

For each checkpoint and calibration source (synthetic, and a data set with `--calib`), in one
run: the fixed rule's int8 model (export/int8/quantise.py: first convolutions and heads in float) and the
searched one (export/int8/search.py, run even where the fixed rule passes, to show what it
keeps), each judged by the int8 gate against the fp32 ONNX on the held-out pairs, and timed
beside fp32 at batch 8 in interleaved rounds (ONNX Runtime, CPU, no thread spinning).

    python benchmarks/int8_search.py                                  # the epoch-12 fixture and the trained one
    python benchmarks/int8_search.py --ckpt a.pt --ckpt b.pt --calib data/ --markdown out.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_inference import cpu_name, emit, sgemm_gflops  # noqa: E402

FIXTURES = (ROOT / "tests" / "fixtures" / "eva4-week15-epoch12.pt", ROOT / "tests" / "fixtures" / "synthetic-64px-trained.pt")


def _checkpoint(path: Path, folder: Path) -> Path:
    """A toolkit checkpoint: the original author's files are imported first."""
    from toolkit.core.errors import UserError
    from toolkit.net.checkpoint import load_checkpoint

    try:
        load_checkpoint(path)
        return path
    except UserError:
        from toolkit.net.legacy import import_legacy

        out = folder / f"{path.stem}.pt"
        import_legacy(path, out)
        return out


def _speedups(fp32: Path, models: list[Path], rounds: int = 12) -> list[float]:
    from toolkit.tasks.bench import open_targets, time_interleaved

    targets = open_targets([fp32, *models], ["cpu"], None)
    time_interleaved(targets, [8], 3, rounds)
    base = float(np.median(targets[0].times[8]))
    return [base / float(np.median(t.times[8])) for t in targets[1:]]


def _row(name: str, source: str, fp32: Path, pairs, folder: Path) -> list[str]:
    from export.int8 import Int8Options, quantize_int8
    from export.int8.search import search_float_layers
    from toolkit.core.errors import CheckFailed

    rule = folder / f"{name}-{source}-rule.int8.onnx"
    try:
        _, report = quantize_int8(fp32, rule, pairs, Int8Options(search="off", force=True))
        rule_fig, rule_ok = report.parity, report.passed
    except CheckFailed as e:
        return [f"| {name} | {source} | fixed rule failed: {e} |"]
    t0 = time.monotonic()
    found = search_float_layers(fp32, pairs.calib, pairs.gate, Int8Options())
    seconds = time.monotonic() - t0
    searched = folder / f"{name}-{source}-search.int8.onnx"
    if found.passed:
        searched.write_bytes(found.model.SerializeToString())
    speed = _speedups(fp32, [rule, searched] if found.passed else [rule])

    def fig(r) -> str:
        decided = f" ({r.mask_iou_decided:.3f})" if r.mask_iou_decided is not None else ""
        return f"{r.mask_iou:.3f}{decided} / {r.depth_rmse:.4f}"

    rows = [f"| {name} | {source} | fixed rule | {len(report.float_nodes)} | {fig(rule_fig)} | "
            f"{'pass' if rule_ok else 'FAIL'} | {speed[0]:.2f}x | |"]
    kept = (", ".join(found.named()) or "none") + (f" (+{len(set(found.in_effect) - set(found.float_layers))} beside them)"
                                                   if set(found.in_effect) - set(found.float_layers) else "")
    rows.append(f"| {name} | {source} | search | {len(found.float_layers)} of {found.layer_count}: {kept} | "
                f"{fig(found.parity)} | {'pass' if found.passed else 'FAIL: ' + found.stopped} | "
                f"{(f'{speed[1]:.2f}x') if found.passed else '-'} | {seconds:.0f} s, {found.evaluated} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, action="append", help="checkpoints (toolkit or original author's); default: the fixtures")
    parser.add_argument("--calib", type=Path, help="a data set (original layout) for the --calib rows")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    from export.int8 import load_pairs, synthetic_pairs
    from export.onnx import export_onnx
    from toolkit.runtime import open_runner

    gflops, blas = sgemm_gflops()
    lines = [f"machine: {cpu_name()}, sgemm {gflops:.0f} GFLOP/s ({blas})", "",
             "| model | calibration | int8 | float layers | mask IoU (decided) / depth RMSE vs fp32 | gate | x fp32 b8 | search |",
             "| --- | --- | --- | --- | --- | --- | ---: | --- |"]
    with tempfile.TemporaryDirectory(prefix="int8-search-") as tmp:
        folder = Path(tmp)
        for given in args.ckpt or list(FIXTURES):
            ckpt = _checkpoint(given, folder)
            fp32 = folder / f"{given.stem}.onnx"
            export_onnx(ckpt, fp32)
            size = open_runner(fp32).spec.size
            sources = [("synthetic", synthetic_pairs(folder / f"pairs-{given.stem}", size))]
            if args.calib is not None:
                sources.append((f"--calib {args.calib.name}", load_pairs(args.calib, size)))
            for source, pairs in sources:
                lines += _row(given.stem, source, fp32, pairs, folder)
                print(lines[-1], flush=True)
    lines += ["", "mask IoU over all pixels, and in brackets over the pixels fp32 decides by > 0.02 (the gate passes on either);",
              "x fp32 b8: pairs/s at batch 8 over the fp32 ONNX's, same run; search: its time and candidates judged."]
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
