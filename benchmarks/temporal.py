"""Temporal stability: flicker and mask IoU against the truth, with and without `--smooth`.

The synthetic footage (a figure walking over a room, toolkit.deploy.footage) has true masks.
Each frame gets camera-like noise (+-2 levels); the model runs on every frame against the
empty room, and each smoothing weight is applied to the same outputs, so the rows differ only
by the smoothing. Flicker: mean |mask_t - mask_t-1| over the pixels whose truth did not change
(toolkit.deploy.temporal); IoU: thresholded at 0.5 against the true mask, averaged over frames.

    python benchmarks/temporal.py                       # the epoch-12 weights, exported to ONNX
    python benchmarks/temporal.py --model model.onnx --frames 96 --smooth 0,0.3,0.6,0.8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_inference import emit  # noqa: E402
from benchmarks.stream import default_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file; default: the epoch-12 weights as ONNX")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--smooth", default="0,0.3,0.6,0.8")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    from toolkit.deploy.footage import background, walking_scene
    from toolkit.deploy.temporal import FlickerMeter, Smoother
    from toolkit.render import imageio
    from toolkit.runtime.fixed import open_fixed_camera
    from toolkit.verify import metrics

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model(Path(tmp))
        runner = open_fixed_camera(model)
        size = runner.spec.size
        frames, truths = walking_scene(args.frames, *size)
        rng = np.random.default_rng(0)
        noisy = [np.clip(f.astype(np.int16) + rng.integers(-2, 3, f.shape), 0, 255).astype(np.uint8) for f in frames]
        with runner:
            runner.set_background(imageio.to_nchw([background(*size).astype(np.float32) / 255.0]))
            outs = [runner.infer_frames(imageio.to_nchw([f.astype(np.float32) / 255.0])) for f in noisy]
    lines = [f"model {Path(model).name}, {args.frames} frames at {size[0]}x{size[1]}, noise +-2 levels", "",
             "| --smooth | flicker (still truth) | flicker (label-free) | mask IoU vs truth |", "| ---: | ---: | ---: | ---: |"]
    for alpha in (float(a) for a in args.smooth.split(",")):
        smoother, truth_meter, free_meter, ious = Smoother(alpha), FlickerMeter(), FlickerMeter(), []
        previous = None
        for frame, truth, out in zip(noisy, truths, outs):
            mask, _ = smoother(out["mask"][0, 0], out["depth"][0, 0])
            still = ~(truth ^ previous) if previous is not None else None
            truth_meter.add(frame.astype(np.float32) / 255.0, mask, still)
            free_meter.add(frame.astype(np.float32) / 255.0, mask)
            ious.append(metrics.mask_iou(mask[None, None], truth[None, None].astype(np.float32)))
            previous = truth
        lines.append(f"| {alpha:g} | {truth_meter.value:.4f} | {free_meter.value:.4f} | {float(np.mean(ious)):.4f} |")
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
