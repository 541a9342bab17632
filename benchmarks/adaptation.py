"""The background after a lighting change and a camera shift: adapting against keeping it fixed.

The synthetic footage (toolkit.deploy.footage.scripted_scene, true masks) has a figure walking
over a room; at one frame the light drops to 60 %, in a second clip the camera shifts by 2 x 3
pixels. Each clip runs through `toolkit stream` twice, with the background fixed and with
`--bg-update 0.02 --bg-relearn`, and the mask IoU against the truth is taken per frame. The table
gives the IoU before the event (mean of the frames before it), right after it, and when (in
seconds of footage at 25 fps) the adapting run is back to >= 90 % of its pre-event IoU.

    python benchmarks/adaptation.py                        # the epoch-12 weights, exported to ONNX
    python benchmarks/adaptation.py --model model.onnx --frames 150
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

FPS = 25


def _ious(model: Path, frames: list, truths: list, bg: Path, folder: Path, adapt) -> list[float]:
    from PIL import Image

    from toolkit import metrics
    from toolkit.deploy.stream import stream

    src = folder / "frames"
    src.mkdir(exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(src / f"{i:04d}.png")
    masks = folder / ("masks-adapt" if adapt else "masks-fixed")
    stream(model, str(src), folder / ("out-adapt" if adapt else "out-fixed"), bg=bg, masks_dir=masks, batch=1,
           pipelined=False, adapt=adapt, self_test=False)
    got = [np.asarray(Image.open(p), np.float32) / 255.0 for p in sorted(masks.iterdir())]
    return [metrics.mask_iou(g[None, None], t[None, None].astype(np.float32)) for g, t in zip(got, truths)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    from PIL import Image

    from toolkit.deploy.adapt import Adaptation
    from toolkit.deploy.footage import background, scripted_scene
    from toolkit.runtime import open_runner

    event = args.frames // 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model(Path(tmp))
        h, w = open_runner(model).spec.size
        Image.fromarray(background(h, w)).save(Path(tmp) / "bg.png")
        for name, kwargs in (("light -> 60 %", {"light_at": event}), ("camera shift 2x3 px", {"shift_at": event})):
            frames, truths = scripted_scene(args.frames, h, w, **kwargs)
            runs = {}
            for label, adapt in (("fixed", None), ("adapting", Adaptation(rate=0.02, relearn=True))):
                folder = Path(tmp) / f"{name[:5]}-{label}"
                folder.mkdir()
                runs[label] = _ious(model, frames, truths, Path(tmp) / "bg.png", folder, adapt)
            for label, ious in runs.items():
                before = float(np.mean(ious[:event]))
                after = float(np.mean(ious[event:event + 5]))
                back = next((i for i in range(event, len(ious)) if np.mean(ious[i:i + 5]) >= 0.9 * before), None)
                when = f"{(back - event) / FPS:.2f} s" if back is not None else "not within the clip"
                rows.append(f"| {name} | {label} | {before:.3f} | {after:.3f} | {float(np.mean(ious[-10:])):.3f} | {when} |")
    lines = [f"model {Path(model).name}, {args.frames} frames at {h}x{w}, event at frame {event} ({event / FPS:.1f} s at {FPS} fps)", "",
             "| event | background | IoU before | IoU right after | IoU at the end | back to 90 % |",
             "| --- | --- | ---: | ---: | ---: | ---: |", *rows]
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
