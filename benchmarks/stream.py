"""`toolkit stream` throughput: the threaded pipeline against the same work done one step at a time.

All rows run in the same process on the same synthetic clip (a figure walking over a fixed
background, H.264), with the same model, so their ratios hold on a machine whose absolute speed
(or load) differs:
  * sequential, batch 1: decode a frame, infer it, compose and encode it, then the next (baseline);
  * pipelined, batch 1 and batch B: decode, infer and encode in three threads with bounded queues;
  * infer only: the runner alone on pre-decoded frames at batch B — the ceiling the pipeline
    approaches when decoding and encoding are fully hidden behind inference.

    python benchmarks/stream.py                          # epoch-12 weights exported to ONNX (needs torch once)
    python benchmarks/stream.py --model model.onnx --frames 120 --size 320x240 --batch 4
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_inference import say_if_busy  # noqa: E402  (starts the load reading)


def default_model(folder: Path) -> Path:
    """The original epoch-12 weights, imported and exported to ONNX (needs the train extra once)."""
    from export.onnx import export_onnx
    from toolkit.net.legacy import import_legacy

    ckpt = folder / "epoch12.pt"
    import_legacy(ROOT / "tests" / "fixtures" / "eva4-week15-epoch12.pt", ckpt, calibration=None)  # speed only
    export_onnx(ckpt, folder / "model.onnx")
    return folder / "model.onnx"


def infer_only(model: Path, frames: list[np.ndarray], batch: int) -> float:
    """Frames/s of the runner alone (inputs resized beforehand, nothing decoded or encoded)."""
    from toolkit.render import imageio
    from toolkit.runtime import open_runner

    with open_runner(model) as runner:
        size = runner.spec.size
        x = [imageio.resize(f.astype(np.float32) / 255.0, size) for f in frames]
        bg = imageio.to_nchw(x[:1])
        runner.infer({"bg": bg, "fgbg": bg})
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            group = imageio.to_nchw(x[i : i + batch])
            runner.infer({"bg": np.repeat(bg, len(group), axis=0), "fgbg": group})
        return len(x) / (time.perf_counter() - start)


def stage_times(model: Path, clip: Path, frames: int) -> dict[str, float]:
    """ms per frame of each stage, run one after another on one frame at a time (what the threads overlap)."""
    from toolkit.deploy.stream import compose_panel
    from toolkit.deploy.video import VideoWriter, open_source
    from toolkit.render import imageio
    from toolkit.runtime import open_runner

    spent = {"decode": 0.0, "resize": 0.0, "infer": 0.0, "compose": 0.0, "encode": 0.0}
    with open_runner(model) as runner, open_source(str(clip)) as src:
        writer = VideoWriter(clip.with_name("stages.mp4"), "mp4", ("libx264", "mpeg4"), 25)
        size, bg, it = runner.spec.size, None, iter(src)
        for _ in range(frames):
            t0 = time.perf_counter()
            frame = next(it)
            t1 = time.perf_counter()
            x = imageio.to_nchw([imageio.resize(frame.astype(np.float32) / 255.0, size)])
            bg = x if bg is None else bg
            t2 = time.perf_counter()
            out = runner.infer({"bg": bg, "fgbg": x})
            t3 = time.perf_counter()
            panel, _ = compose_panel(frame, out["mask"][0, 0], out["depth"][0, 0])
            t4 = time.perf_counter()
            writer.write(panel)
            t5 = time.perf_counter()
            for key, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                spent[key] += dt
        writer.close()
    return {k: 1000 * v / frames for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file (.onnx, .pt, .engine); default: the epoch-12 weights as ONNX")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--size", default="320x240", help="clip size WxH")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="runs per row, interleaved; the best is kept")
    args = parser.parse_args()

    from toolkit.deploy.footage import walking_frames, write_video
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or default_model(folder)
        frames = walking_frames(args.frames, h, w)
        clip = write_video(folder / "clip.mp4", frames, fps=25)
        rows = {
            "sequential, batch 1 (baseline)": dict(pipelined=False, batch=1),
            "pipelined, batch 1": dict(pipelined=True, batch=1),
            f"pipelined, batch {args.batch}": dict(pipelined=True, batch=args.batch),
        }
        best: dict[str, float] = {name: 0.0 for name in rows}
        ceiling = 0.0
        for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every row alike
            for name, opts in rows.items():
                report = stream(model, str(clip), folder / "out.mp4", StreamOptions(bg_frames=10, **opts))
                assert report.frames == args.frames, report
                best[name] = max(best[name], report.fps)
            ceiling = max(ceiling, infer_only(model, frames, args.batch))
        stages = stage_times(model, clip, args.frames)

    base = best["sequential, batch 1 (baseline)"]
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"model {Path(model).name}; clip {args.frames} frames at {w}x{h}; best of {args.repeats}")
    print()
    print("| run | frames/s | vs sequential |")
    print("| --- | ---: | ---: |")
    for name, fps in best.items():
        print(f"| {name} | {fps:.1f} | {fps / base:.2f}x |")
    print(f"| infer only, batch {args.batch} (ceiling) | {ceiling:.1f} | {ceiling / base:.2f}x |")
    print()
    print("ms per frame, one stage at a time: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    rest = stages["decode"] + stages["resize"], stages["infer"], stages["compose"] + stages["encode"]
    print(f"threads overlap decode+resize {rest[0]:.1f} | infer {rest[1]:.1f} | compose+encode {rest[2]:.1f}: "
          f"at most {sum(rest) / max(rest):.2f}x from overlap alone, with a free core per stage")
    say_if_busy()


if __name__ == "__main__":
    main()
