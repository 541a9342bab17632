"""`toolkit infer` over a folder of many pairs: memory stays flat, throughput stays steady.

The claim under test: `toolkit.tasks.infer.infer_files` streams. It holds one batch of images at a
time and keeps nothing per finished pair, so its memory at 100% of a run equals its memory at
10%, whatever the number of pairs. The script makes N pairs of small PNGs in a temporary
folder, exports an ONNX model from the repository's epoch-12 checkpoint (re-specified to a
small input size, so the run measures the per-pair bookkeeping rather than convolutions; the
network is fully convolutional), and runs `infer_files` on the folders with a probe around the
runner that records, at 10%, 50% and 100% of the pairs:

  * tracemalloc's current and peak Python allocations (started after the model is loaded),
  * the process's resident set size (VmRSS) and its high-water mark (VmHWM),
  * pairs/s over the window since the previous point.

Same-run ratios, not absolute figures: "growth 10% -> 100%" divided by the pairs done in
between is the memory each finished pair leaves behind (0 when streaming), and the window
rates show whether the run slows down as it goes.

    python benchmarks/infer_stream.py                    # 10,000 pairs
    python benchmarks/infer_stream.py --pairs 2000 --no-tracemalloc
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_inference import say_if_busy  # noqa: E402  (starts the load reading)
from toolkit.runtime.base import Runner  # noqa: E402

POINTS = (0.10, 0.50, 1.00)
MiB = 2**20


def proc_status(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux), else NaN."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / MiB
    except OSError:
        pass
    return float("nan")


class Probe(Runner):
    """Delegates to a real runner and records memory when the pairs done cross each point."""

    def __init__(self, inner: Runner, total: int, use_tracemalloc: bool):
        super().__init__(inner.path, inner.spec, inner.metadata)
        self.inner, self.total, self.use_tracemalloc = inner, total, use_tracemalloc
        self.backend, self.notes = inner.backend, inner.notes
        self.done = 0
        self.rows: list[dict[str, float]] = []
        self._todo = list(POINTS)
        self._t0 = self._last_t = 0.0
        self._last_done = 0

    def _activate(self) -> None:
        self.inner.activate()
        if self.use_tracemalloc:
            tracemalloc.start()
        self._t0 = self._last_t = time.perf_counter()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, feed):
        out = self.inner.infer(feed)
        # Recorded when the batch *before* this one has been written (infer_files writes a
        # batch's PNGs after the next infer call is made): what is measured is what stays.
        self._record()
        self.done += len(feed["bg"])
        return out

    def _record(self, final: bool = False) -> None:
        while self._todo and (final or self.done >= self._todo[0] * self.total):
            point = self._todo.pop(0)
            now = time.perf_counter()
            current, peak = tracemalloc.get_traced_memory() if self.use_tracemalloc else (float("nan"),) * 2
            window = max(now - self._last_t, 1e-9)
            self.rows.append({
                "point": point, "pairs": self.done, "seconds": now - self._t0,
                "rate": (self.done - self._last_done) / window,
                "traced": current / MiB, "traced_peak": peak / MiB,
                "rss": proc_status("VmRSS"), "hwm": proc_status("VmHWM"),
            })
            self._last_t, self._last_done = now, self.done

    def finish(self) -> None:
        self._record(final=True)
        if self.use_tracemalloc:
            tracemalloc.stop()


def make_pairs(root: Path, n: int, size: int) -> tuple[Path, Path]:
    """N bg/fgbg PNG pairs, paired by file name, with a person-ish block pasted on the fgbg."""
    from PIL import Image

    bgs, fgs = root / "bg", root / "fgbg"
    bgs.mkdir(parents=True)
    fgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        bg = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        fg = bg.copy()
        y, x = rng.integers(0, size // 2, 2)
        fg[y : y + size // 2, x : x + size // 4] = rng.integers(0, 255, 3)
        Image.fromarray(bg).save(bgs / f"pair_{i:06d}.png", compress_level=1)
        Image.fromarray(fg).save(fgs / f"pair_{i:06d}.png", compress_level=1)
    return bgs, fgs


def export_model(root: Path, model_size: int) -> Path:
    """The epoch-12 fixture, imported, re-specified to `model_size` px, exported to ONNX."""
    from export.onnx import export_onnx
    from toolkit.net.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint, spec_of
    from toolkit.net.legacy import import_legacy

    imported = root / "epoch12.pt"
    import_legacy(ROOT / "tests" / "fixtures" / "eva4-week15-epoch12.pt", imported, calibration=None)  # speed only
    ckpt = load_checkpoint(imported)
    small = make_checkpoint(ckpt["model"], spec_of(ckpt).with_size(model_size), epoch=ckpt["epoch"], source=ckpt["source"])
    save_checkpoint(root / "small.pt", small)
    export_onnx(root / "small.pt", root / "model.onnx")
    return root / "model.onnx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=32, help="Side of the generated images in pixels.")
    ap.add_argument("--model-size", type=int, default=32, help="Input size the model is exported at (multiple of 4).")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-tracemalloc", action="store_true", help="RSS only (tracemalloc slows allocation-heavy code).")
    args = ap.parse_args()

    from toolkit.runtime import open_runner
    from toolkit.tasks.infer import infer_files

    with tempfile.TemporaryDirectory(prefix="toolkit-infer-stream-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        bgs, fgs = make_pairs(root / "data", args.pairs, args.size)
        model = export_model(root, args.model_size)
        setup = time.perf_counter() - t0
        probe = Probe(open_runner(model, threads=args.threads), args.pairs, not args.no_tracemalloc)
        start = time.perf_counter()
        report = infer_files(probe, bgs, fgs, root / "out", batch_size=args.batch_size)
        probe.finish()
        total = time.perf_counter() - start
        assert report.pairs == args.pairs and not report.failures, (report.pairs, report.failures[:3])
        written = sum(1 for _ in (root / "out").rglob("*.png"))

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end")
    print(f"{args.pairs} pairs of {args.size}x{args.size} PNGs, model input {args.model_size}x{args.model_size} "
          f"(ONNX Runtime, CPU), batch {args.batch_size}; {written} PNGs written; setup {setup:.0f} s, "
          f"infer {total:.1f} s = {args.pairs / total:.1f} pairs/s overall"
          + ("" if args.no_tracemalloc else " (with tracemalloc on)"))
    print()
    print("| point | pairs done | elapsed s | pairs/s (window) | traced MiB | traced peak MiB | RSS MiB | RSS peak MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in probe.rows:
        print(f"| {r['point']:.0%} | {r['pairs']} | {r['seconds']:.1f} | {r['rate']:.1f} | {r['traced']:.2f} | "
              f"{r['traced_peak']:.2f} | {r['rss']:.1f} | {r['hwm']:.1f} |")
    # 10% and 50% are both taken mid-run (model loaded, a batch in flight); 100% is taken after
    # infer_files returned (model unloaded, only its report alive): what the run kept.
    first, mid, last = probe.rows
    print()
    for label, key in (("traced", "traced"), ("traced peak", "traced_peak"), ("RSS", "rss")):
        pairs = max(mid["pairs"] - first["pairs"], 1)
        grew = mid[key] - first[key]
        print(f"- {label} growth 10% -> 50%: {grew:+.2f} MiB over {pairs} pairs = {grew * MiB / pairs:+.0f} bytes per pair")
    print(f"- traced after the run vs at 10%: {last['traced'] - first['traced']:+.2f} MiB (the report of {last['pairs']} pairs included)")
    print(f"- window rate 50%->100% vs 10%->50%: {last['rate'] / max(mid['rate'], 1e-9):.2f}x")
    say_if_busy()


if __name__ == "__main__":
    main()
