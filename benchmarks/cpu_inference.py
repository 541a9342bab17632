"""CPU inference: every exported format beside PyTorch eager and the machine's floor, one run.

Machines differ (a 2-core AVX2 EPYC, an AVX-512/VNNI/AMX Xeon), so absolute times say little.
This script measures, in the same run:
  * the machine's floor: sgemm GFLOP/s (numpy and torch, best of), and the time one 128x128
    pair would take at that rate (the network is ~6.14 GFLOP per pair);
  * PyTorch eager on the checkpoint (the baseline), and each ONNX format through ONNX Runtime;
and prints a markdown table of ms/image, images/s, speed-up vs eager and distance from the floor,
plus each format's parity verdict vs PyTorch.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="toolkit checkpoint (default: the original epoch-12 weights, imported)")
    parser.add_argument("--formats", default="onnx,fp16,int8", help="export formats to time (onnx is always included)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    from export.formats import ExportOptions, run_exports
    from toolkit.bench import bench
    from toolkit.compare import run_parity
    from toolkit.legacy import import_legacy

    with tempfile.TemporaryDirectory(prefix="toolkit-bench-") as tmp:
        tmp = Path(tmp)
        ckpt = args.ckpt
        if ckpt is None:
            ckpt = import_legacy(ROOT / "tests" / "fixtures" / "eva4-week15-epoch12.pt", tmp / "epoch12.pt").out
        wanted = {k for k in args.formats.split(",") if k}
        # --force: time the int8 model even when it misses the accuracy gate; parity says so below.
        options = ExportOptions(fp16="fp16" in wanted, int8="int8" in wanted, force=True)
        outcomes = run_exports(ckpt, tmp / "export", options=options)
        models = [a.path for o in outcomes if o.ok for a in o.artifacts]
        failed = [f"{o.format.key}: {o.error}" for o in outcomes if not o.ok]
        skipped: list[str] = []

        gflops, gemm_by = sgemm_gflops()
        floor_ms = GFLOP_PER_PAIR / gflops * 1000
        rows = bench([ckpt, *models], [args.batch], warmup=args.warmup, iters=args.iters, threads=args.threads)
        verdicts = {str(r.model): r for r in run_parity(models, ckpt, limit=8, batch_size=4).results} if models else {}

    lines = [
        f"CPU: {cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores; sgemm {gflops:.0f} GFLOP/s ({gemm_by});"
        f" floor {floor_ms:.1f} ms per 128x128 pair ({GFLOP_PER_PAIR} GFLOP); batch {args.batch}, {args.iters} iterations",
        "",
        "| model | backend | precision | ms/image | images/s | vs torch eager | x floor | parity |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ms = 1000 / r.images_per_s
        verdict = verdicts.get(r.model)
        parity = "reference" if verdict is None else ("pass" if verdict else "FAIL: " + "; ".join(verdict.failures))
        lines.append(f"| {Path(r.model).name} | {r.backend} | {r.precision} | {ms:.1f} | {r.images_per_s:.1f} | "
                     f"{r.speedup:.2f}x | {ms / floor_ms:.2f} | {parity} |")
    for f in failed:
        lines.append(f"\nexport failed: {f}")
    if skipped:
        lines.append(f"\nformats not available in this version: {', '.join(skipped)}")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
