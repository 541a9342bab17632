"""CPU inference: every exported format beside PyTorch eager and the machine's floor, one run.

Machines differ (a 2-core AVX2 EPYC, an AVX-512/VNNI/AMX Xeon), so absolute times say little.
This script measures, in the same run:
  * the machine's floor: sgemm GFLOP/s (numpy and torch, best of), and the time one 128x128
    pair would take at that rate (the network is ~6.14 GFLOP per pair);
  * PyTorch eager on the checkpoint (the baseline), and each ONNX format through ONNX Runtime:
    the default (folded) graph in fp32/fp16/int8 and, with `literal` in --formats, the fp32
    graph that follows the network layer by layer;
and prints a markdown table of ms/image, images/s, speed-up vs eager, distance from the floor,
plus each format's parity verdict vs PyTorch.

Two floors: "x floor" is the network's arithmetic as written (6.14 GFLOP per 128x128 pair) at
the sgemm rate, the yardstick for every row; "x own floor" is the row's own graph's arithmetic
(`toolkit.gflop_per_pair` in its metadata: the folded graph does ~3.6 GFLOP for the same
outputs) at that rate, i.e. how close that graph runs to the machine's matmul speed.

    python benchmarks/cpu_inference.py                      # the original epoch-12 weights
    python benchmarks/cpu_inference.py --ckpt run/best.pt --formats onnx,fp16,int8 --batch 8
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit.tasks.busy import BusyCheck  # noqa: E402

# The load before this benchmark's work (it imports this module first): `emit` ends its output
# with a warning when other work shared the CPUs meanwhile (toolkit.tasks.busy).
BUSY = BusyCheck().start()

GFLOP_PER_PAIR = 6.14  # architecture.md, 2 x multiply-adds at 128 x 128


def sgemm_gflops(n: int = 1024, repeats: int = 5) -> tuple[float, str]:
    """Best sustained float32 matmul rate of numpy's BLAS and torch on this machine."""
    best, source = 0.0, ""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    candidates = [("numpy", lambda: a @ a)]
    try:
        import torch

        t = torch.from_numpy(a)
        candidates.append(("torch", lambda: torch.mm(t, t)))
    except ImportError:
        pass
    for name, fn in candidates:
        fn()
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            rate = 2 * n**3 / (time.perf_counter() - t0) / 1e9
            if rate > best:
                best, source = rate, name
    return best, source


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def graph_gflop(model: Path) -> tuple[float, str]:
    """(GFLOP per pair, graph name) an ONNX export records; fp16/int8 inherit their source's."""
    props = _metadata(model)
    return float(props["toolkit.gflop_per_pair"]), props.get("toolkit.graph", "?")


def _metadata(model: Path) -> dict[str, str]:
    import onnx

    from export.metadata import read_metadata

    return read_metadata(onnx.load(str(model), load_external_data=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="toolkit checkpoint (default: the original epoch-12 weights, imported)")
    parser.add_argument("--formats", default="literal,onnx,fp16,int8",
                        help="export formats to time (onnx, the folded fp32 graph, is always included; literal = the layer-by-layer fp32 graph)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    from export.formats import ExportOptions, run_exports
    from toolkit.core.spec import IOSpec
    from toolkit.net.legacy import import_legacy
    from toolkit.tasks.bench import bench
    from toolkit.verify.parity import run_parity

    with tempfile.TemporaryDirectory(prefix="toolkit-bench-") as tmp:
        tmp = Path(tmp)
        ckpt = args.ckpt
        if ckpt is None:
            ckpt = import_legacy(ROOT / "tests" / "fixtures" / "eva4-week15-epoch12.pt", tmp / "epoch12.pt", calibration=None).out  # speed only
        wanted = {k for k in args.formats.split(",") if k}
        # --force: time the int8 model even when it misses the accuracy gate; parity says so below.
        options = ExportOptions(fp16="fp16" in wanted, int8="int8" in wanted, force="int8" in wanted)
        outcomes = run_exports(ckpt, tmp / "export", options=options)
        if "literal" in wanted:  # first, beside the baseline it follows layer by layer
            outcomes = run_exports(ckpt, tmp / "literal", options=ExportOptions(graph="literal")) + outcomes
        models = [a.path for o in outcomes if o.ok for a in o.artifacts]
        failed = [f"{o.format.key}: {o.error}" for o in outcomes if not o.ok]
        skipped: list[str] = []
        own_gflop = {str(m): graph_gflop(m) for m in models}
        size = IOSpec.from_metadata(_metadata(models[0])).size if models else (128, 128)
        network_gflop = GFLOP_PER_PAIR * size[0] * size[1] / 128**2

        gflops, gemm_by = sgemm_gflops()
        floor_ms = network_gflop / gflops * 1000
        rows = bench([ckpt, *models], [args.batch], warmup=args.warmup, iters=args.iters, threads=args.threads)
        verdicts = {str(r.model): r for r in run_parity(models, ckpt, limit=8, batch_size=4).results} if models else {}

    lines = [
        f"CPU: {cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores; sgemm {gflops:.0f} GFLOP/s ({gemm_by});"
        f" floor {floor_ms:.1f} ms per {size[0]}x{size[1]} pair ({network_gflop:.2f} GFLOP); batch {args.batch}, {args.iters} iterations",
        "",
        "| model | graph | backend | precision | ms/image | images/s | vs torch eager | x floor | GFLOP | x own floor | parity |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ms = 1000 / r.images_per_s
        verdict = verdicts.get(r.model)
        parity = "reference" if verdict is None else ("pass" if verdict else "FAIL: " + "; ".join(verdict.failures))
        gflop, graph = own_gflop.get(r.model, (network_gflop, "literal"))
        name = Path(r.model).parent.name + "/" + Path(r.model).name if r.model in own_gflop else Path(r.model).name
        lines.append(f"| {name} | {graph} | {r.backend} | {r.precision} | {ms:.1f} | {r.images_per_s:.1f} | "
                     f"{r.speedup:.2f}x | {ms / floor_ms:.2f} | {gflop:.2f} | {ms / (gflop / gflops * 1000):.2f} | {parity} |")
    for f in failed:
        lines.append(f"\nexport failed: {f}")
    if skipped:
        lines.append(f"\nformats not available in this version: {', '.join(skipped)}")
    emit(lines, args.markdown)


def emit(lines: list[str], markdown: Path | None) -> None:
    """Print a benchmark's lines, and write them to `markdown` when given; the last says when
    the machine was busy while it ran (its figures, and same-run ratios, are unreliable then)."""
    from toolkit.core.fsutil import write_text_atomic

    busy = BUSY.note("figures and ratios")
    text = "\n".join(lines + ([busy] if busy else []))
    print(text)
    if markdown:
        write_text_atomic(markdown, text + "\n")


def say_if_busy() -> None:
    """For a benchmark that prints its own lines: the busy-machine warning after them, when due."""
    busy = BUSY.note("figures and ratios")
    if busy:
        print(busy)


if __name__ == "__main__":
    main()
