"""`toolkit stream` at a camera's resolution: each output beside inference alone, in one run.

A fixed camera's edge box waits on the work around the model as much as on the model: decoding
a 1280x720 frame, resizing it for the model, drawing the picture and encoding it. This script
runs, on the same synthetic H.264 clip (a figure walking over a fixed background) and the same
model, in the same process:
  * inference alone at batch B: the runner on frames resized beforehand, nothing decoded,
    drawn or encoded: the ceiling every other row is a ratio to;
  * --no-video with --events: decode, infer, a JSON line per frame;
  * --layout overlay: the overlay video at the camera's size;
  * --layout panel: the three-tile panel video at the camera's size (the default output), and
    with --out-size 640x360 (each tile at that size);
  * a live camera (the clip replayed at its frame rate, newest frame wins) into the overlay
    video, at batch B and 1: frames/s and the latency from a frame leaving the camera to its
    outputs written (p50, p99), the figures a live user feels.
Each clip size is its own table row group; rows are repeated, interleaved, and the best kept, so
a burst of load elsewhere hits every row alike. Every stream runs with the file preset the CLI
uses for files (veryfast; superfast for pictures of 2 MP and more, the 720p panel) unless it is live.

    python benchmarks/stream.py                       # 1280x720 and 640x360, 64 frames, batch 4
    python benchmarks/stream.py --model model.onnx --sizes 1280x720 --frames 96
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

from benchmarks.cpu_inference import cpu_name, emit  # noqa: E402  (starts the load reading)

LIVE_FPS = 25.0


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
        x = [imageio.from_uint8(imageio.resize_uint8(f, size)) for f in frames]
        bg = imageio.to_nchw(x[:1])
        runner.infer({"bg": bg, "fgbg": bg})
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            group = imageio.to_nchw(x[i : i + batch])
            runner.infer({"bg": np.repeat(bg, len(group), axis=0), "fgbg": group})
        return len(x) / (time.perf_counter() - start)


def paced_camera(clip: Path):
    """The clip replayed as a camera: each frame handed over at its time (LIVE_FPS), decoding included."""
    from toolkit.deploy.video import FrameSource, open_source

    class PacedCamera(FrameSource):
        kind = "camera"

        def __init__(self) -> None:
            self.file = open_source(str(clip))
            super().__init__("paced camera", LIVE_FPS, None)

        def _frames(self):
            start = time.perf_counter()
            for i, frame in enumerate(self.file):
                time.sleep(max(0.0, start + i / LIVE_FPS - time.perf_counter()))
                yield frame

        def close(self) -> None:
            self.file.close()

    return PacedCamera()


def run_rows(model: Path, clip: Path, folder: Path, batch: int, frames: int) -> dict[str, tuple[float, str]]:
    """Frames/s of each stream row (and the live row's latency) on one clip, once each."""
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    rows: dict[str, tuple[float, str]] = {}
    common = dict(bg_frames=10, batch=batch)
    cases = {
        "--no-video --events": (None, StreamOptions(video=False, events=str(folder / "events.jsonl"), **common)),
        "--layout overlay": (folder / "overlay.mp4", StreamOptions(layout="overlay", **common)),
        "--layout panel": (folder / "panel.mp4", StreamOptions(layout="panel", **common)),
        "--layout panel --out-size 640x360": (folder / "panel-small.mp4", StreamOptions(layout="panel", out_size=(360, 640), **common)),
    }
    for name, (out, options) in cases.items():
        report = stream(model, str(clip), out, options)
        assert report.frames == frames, report
        rows[name] = (report.fps, "")
    for live_batch in sorted({batch, 1}, reverse=True):
        options = StreamOptions(layout="overlay", bg_frames=10, batch=live_batch)
        report = stream(model, paced_camera(clip), folder / "live.mp4", options)
        rows[f"live {LIVE_FPS:g} fps, overlay, batch {live_batch}"] = (
            report.fps, f"{report.latency_ms_p50:.0f} / {report.latency_ms_p99:.0f} ms, {report.dropped} dropped")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file (.onnx, .pt, .engine); default: the epoch-12 weights as ONNX")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--sizes", default="1280x720,640x360", help="clip sizes WxH, comma separated")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="runs per row, interleaved; the best is kept")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    from toolkit.deploy.footage import walking_frames, write_video
    from toolkit.tasks.busy import usable_cpus

    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or default_model(folder)
        lines += [f"CPU: {cpu_name()}, {usable_cpus()} usable cores; model {Path(model).name}; "
                  f"{args.frames} frames per clip (H.264), batch {args.batch}; best of {args.repeats}", "",
                  "| clip | run | frames/s | vs infer | live p50 / p99 |", "| --- | --- | ---: | ---: | --- |"]
        for size in [s for s in args.sizes.split(",") if s]:
            w, h = (int(v) for v in size.lower().split("x"))
            frames = walking_frames(args.frames, h, w)
            clip = write_video(folder / f"clip-{w}x{h}.mp4", frames, fps=int(LIVE_FPS))
            ceiling, best = 0.0, {}
            for _ in range(args.repeats):
                ceiling = max(ceiling, infer_only(model, frames, args.batch))
                for name, (fps, extra) in run_rows(model, clip, folder, args.batch, args.frames).items():
                    if fps > best.get(name, (0.0, ""))[0]:
                        best[name] = (fps, extra)
                print(f"{size}: round done", file=sys.stderr, flush=True)
            lines.append(f"| {w}x{h} | inference alone, batch {args.batch} | {ceiling:.1f} | 1.00x | |")
            lines += [f"| {w}x{h} | {name} | {fps:.1f} | {fps / ceiling:.2f}x | {extra} |" for name, (fps, extra) in best.items()]
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
