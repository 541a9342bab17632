"""The fixed camera: the whole network per frame against the background's features computed once.

For each precision (fp32, int8) and runtime (ONNX Runtime's CPU provider, OpenVINO when
installed) and batch size (1, 8), the same run times, in interleaved rounds:
  * whole: the exported model on (background repeated, frames), what any other tool runs;
  * cached: its halves, `set_background` once, then `infer_frames` (toolkit.runtime.fixed);
and prints ms per frame, the speed-up, the largest |whole - cached| output difference, and
ms per frame as a multiple of the machine's floor: the literal network's arithmetic (6.14 GFLOP
per 128x128 pair) at this machine's sgemm rate, measured in the same run. A reference row,
OpenVINO on the layer-by-layer ONNX (what a user who exports the network themselves would run),
gives "vs OV literal". Then `toolkit stream` end to end on a synthetic clip, with the cache and
with `--no-bg-cache` (frames/s, decode and encode included).

ONNX Runtime's threads do not spin between calls here (`allow_spinning=0`): spinning threads of
one runtime would eat the time of the next one timed.

    python benchmarks/fixed_camera.py                       # the original epoch-12 weights
    python benchmarks/fixed_camera.py --ckpt run/best.pt --image-size 128x224 --iters 40
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_inference import GFLOP_PER_PAIR, cpu_name, emit, sgemm_gflops  # noqa: E402


def _export(ckpt: Path, folder: Path, size: tuple[int, int] | None) -> tuple[list[Path], Path, dict[str, str]]:
    """fp32 and int8 (with --force: timed even when it misses its gate; the table says so) with
    their pairs, and the literal fp32 graph; returns (models, literal model, gate verdicts)."""
    from export.formats import run_exports
    from export.options import ExportOptions

    outcomes = run_exports(ckpt, folder / "export", options=ExportOptions(int8=True, force=True, image_size=size))
    literal = run_exports(ckpt, folder / "literal", options=ExportOptions(graph="literal", image_size=size))
    failed = [f"{o.format.key}: {o.error}" for o in outcomes + literal if not o.ok]
    if failed:
        raise SystemExit("export failed: " + "; ".join(failed))
    models = [a.path for o in outcomes for a in o.artifacts if a.part == "whole"]
    gates = {}
    for o in outcomes:
        for a in o.artifacts:
            if a.part == "whole" and a.precision == "int8":
                gates["int8"] = "gate passed" if a.detail is not None and a.detail.passed else "gate FAILED (forced)"
    return models, literal[0].artifacts[0].path, gates


def _runners(models: list[Path], literal: Path, providers: list[str]) -> list[tuple[str, object, object]]:
    """(row name, whole runner, cached runner) per model and provider, plus the reference row."""
    from toolkit.runtime import open_runner
    from toolkit.runtime.fixed import HalvesRunner

    def options(provider: str) -> dict[str, object]:
        return {"provider": provider} | ({"spinning": False} if provider == "cpu" else {})

    rows = []
    for model in models:
        for provider in providers:
            whole = open_runner(model, **options(provider))
            rows.append((f"{whole.precision} {whole.backend}", whole, HalvesRunner(model, **options(provider))))
    if "openvino" in providers:
        rows.append(("fp32 literal openvino (reference)", open_runner(literal, provider="openvino"), None))
    return rows


def _time(rows: list[tuple[str, object, object]], batch: int, warmup: int, iters: int, size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """ms per frame of every row's whole and cached runner, interleaved; and max |whole - cached|."""
    rng = np.random.default_rng(0)
    bg = rng.random((1, 3, *size), dtype=np.float32)
    frames = rng.random((batch, 3, *size), dtype=np.float32)
    whole_feed = {"bg": np.repeat(bg, batch, axis=0), "fgbg": frames}  # made once: only the model is timed
    calls = []
    for name, whole, cached in rows:
        calls.append((name, "whole", lambda r=whole: r.infer(whole_feed)))
        if cached is not None:
            cached.set_background(bg)
            calls.append((name, "cached", lambda r=cached: r.infer_frames(frames)))
    times: dict[tuple[str, str], list[float]] = {(n, k): [] for n, k, _ in calls}
    for _, _, call in calls:
        for _ in range(warmup):
            call()
    for _ in range(iters):
        for name, kind, call in calls:
            t0 = time.perf_counter()
            call()
            times[(name, kind)].append(time.perf_counter() - t0)
    out: dict[str, dict[str, float]] = {}
    for name, whole, cached in rows:
        figures = {"whole": float(np.median(times[(name, "whole")])) * 1000 / batch}
        if cached is not None:
            figures["cached"] = float(np.median(times[(name, "cached")])) * 1000 / batch
            a, b = whole.infer(whole_feed), cached.infer_frames(frames)
            figures["diff"] = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        out[name] = figures
    return out


def _stream_fps(model: Path, folder: Path, frames: int, size: tuple[int, int], batch: int) -> dict[str, float]:
    """`toolkit stream` frames/s on a synthetic clip, cached and whole, best of two interleaved runs."""
    from toolkit.deploy.footage import walking_frames, write_video
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    h, w = size
    try:
        clip = str(write_video(folder / "clip.mp4", walking_frames(frames, h * 2, w * 2), fps=25))
        out = folder / "out.mp4"
    except Exception:  # noqa: BLE001 - PyAV (the video extra) missing: a folder of PNG frames instead
        from toolkit.render.imageio import save_png

        (folder / "clip").mkdir(exist_ok=True)
        for i, f in enumerate(walking_frames(frames, h * 2, w * 2)):
            save_png(folder / "clip" / f"f{i:04d}.png", f)
        clip, out = str(folder / "clip"), folder / "out"
    best = {"cached": 0.0, "whole": 0.0}
    for _ in range(2):
        for kind in best:
            report = stream(model, clip, out, StreamOptions(bg_frames=8, batch=batch, bg_cache=kind == "cached"))
            best[kind] = max(best[kind], report.fps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="toolkit checkpoint (default: the original epoch-12 weights, imported)")
    parser.add_argument("--image-size", default=None, help="export size HxW (default: the checkpoint's training size)")
    parser.add_argument("--provider", default="cpu,openvino", help="runtimes, comma-separated (openvino skipped when not installed)")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--stream-frames", type=int, default=64, help="clip length for the end-to-end row (0: skip)")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()

    import importlib.util

    from toolkit.core.spec import parse_image_size
    from toolkit.net.legacy import import_legacy

    providers = [p for p in args.provider.split(",") if p and (p != "openvino" or importlib.util.find_spec("openvino"))]
    size_arg = parse_image_size(args.image_size) if args.image_size else None
    with tempfile.TemporaryDirectory(prefix="toolkit-fixed-") as tmp:
        folder = Path(tmp)
        ckpt = args.ckpt or import_legacy(ROOT / "tests" / "fixtures" / "eva4-week15-epoch12.pt", folder / "epoch12.pt", calibration=None).out  # speed only
        models, literal, gates = _export(ckpt, folder, size_arg)
        from toolkit.runtime.onnx_info import read_onnx_info

        size = read_onnx_info(models[0]).spec.size
        gflops, gemm_by = sgemm_gflops()
        floor_ms = GFLOP_PER_PAIR * size[0] * size[1] / 128**2 / gflops * 1000
        rows = _runners(models, literal, providers)
        for _, whole, cached in rows:
            whole.activate()
            if cached is not None:
                cached.activate()
        results = {b: _time(rows, b, args.warmup, args.iters, size) for b in (int(v) for v in args.batch.split(","))}
        fps = _stream_fps(models[0], folder, args.stream_frames, size, 4) if args.stream_frames > 0 else None
    lines = [f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} cores; sgemm {gflops:.0f} GFLOP/s ({gemm_by}); "
             f"literal floor {floor_ms:.2f} ms per {size[0]}x{size[1]} frame; median of {args.iters} interleaved rounds", ""]
    lines += ["| model | batch | whole ms/frame | cached ms/frame | speed-up | max abs diff | cached x floor | vs OV literal |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b, table in results.items():
        reference = table.get("fp32 literal openvino (reference)", {}).get("whole")
        for name, f in table.items():
            gate = f" ({gates[name.split()[0]]})" if name.split()[0] in gates else ""
            if "cached" not in f:
                lines.append(f"| {name} | {b} | {f['whole']:.2f} | | | | {f['whole'] / floor_ms:.2f} | 1.00x |")
                continue
            vs = f"{reference / f['cached']:.2f}x" if reference else ""
            lines.append(f"| {name}{gate} | {b} | {f['whole']:.2f} | {f['cached']:.2f} | {f['whole'] / f['cached']:.2f}x | "
                         f"{f['diff']:.1e} | {f['cached'] / floor_ms:.2f} | {vs} |")
    if fps is not None:
        lines += ["", f"`toolkit stream` end to end ({args.stream_frames} frames, {models[0].name}, batch 4, cpu): "
                  f"{fps['cached']:.1f} frames/s with the cached background, {fps['whole']:.1f} with --no-bg-cache "
                  f"({fps['cached'] / fps['whole']:.2f}x)"]
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
