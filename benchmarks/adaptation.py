"""The background after a lighting change and a camera shift: adapting against keeping it fixed.

The synthetic footage (toolkit.deploy.footage.scripted_scene with `room=True`: a room and a person
of the synthetic data set, of a seed no training set here used, true masks) has the person walking
across the room; a third of the way in the light drops (to 30 % by default), in a second clip the
camera shifts (6 x 9 pixels). Each clip runs through `toolkit stream` with the background fixed
and with `--bg-update 0.02 --bg-relearn`, and once more from the event on with the *true* new
background (the event applied to the empty room): what the model itself reaches on the changed
scene, the ceiling any adaptation can reach. The table gives the mean mask IoU against the truth
before and after the event, the ceiling on the same frames, their ratio, and when (seconds of
footage at 25 fps) a 5-frame mean is back at 90 % of the ceiling and stays there.

    python benchmarks/adaptation.py                        # the trained 64 px fixture, exported to ONNX
    python benchmarks/adaptation.py --model model.onnx --light 0.6 --shift 2 3 --size 128
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

FPS = 25
FOOTAGE_SEED = 7  # rooms and people the trained fixture's set (seed 0) does not have


def trained_model(folder: Path) -> Path:
    """The trained fixture (tests/fixtures/synthetic-64px-trained.pt) exported to ONNX."""
    from export.onnx import export_onnx

    ckpt = folder / "trained.pt"
    ckpt.write_bytes((ROOT / "tests" / "fixtures" / "synthetic-64px-trained.pt").read_bytes())
    export_onnx(ckpt, folder / "model.onnx")
    return folder / "model.onnx"


def _ious(model: Path, frames: list, truths: list, bg: Path, folder: Path, adapt) -> list[float]:
    from PIL import Image

    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream
    from toolkit.verify import metrics

    src = folder / "frames"
    src.mkdir(exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(src / f"{i:04d}.png")
    masks = folder / ("masks-adapt" if adapt else "masks-fixed")
    stream(model, str(src), folder / ("out-adapt" if adapt else "out-fixed"), StreamOptions(bg=bg, masks_dir=masks, batch=1,
           pipelined=False, adapt=adapt, self_test=False))
    got = [np.asarray(Image.open(p), np.float32) / 255.0 for p in sorted(masks.iterdir())]
    return [metrics.mask_iou(g[None, None], t[None, None].astype(np.float32)) for g, t in zip(got, truths)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--light", type=float, default=0.3, help="the light after the event, a share of before")
    parser.add_argument("--shift", type=int, nargs=2, default=(6, 9), help="the camera shift in pixels (down, right)")
    parser.add_argument("--size", type=int, default=96, help="footage frames are size x size (the model resizes them)")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    from toolkit.runtime import open_runner

    event = args.frames // 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or trained_model(Path(tmp))
        h = w = args.size
        size = "x".join(map(str, open_runner(model).spec.size))
        events = ((f"light -> {args.light:.0%}", {"light_at": event, "light": args.light}),
                  (f"camera shift {args.shift[0]}x{args.shift[1]} px", {"shift_at": event, "shift": tuple(args.shift)}))
        for name, kwargs in events:
            rows += _event_rows(model, name, kwargs, args.frames, h, event, Path(tmp))
    lines = [f"model {Path(model).name} ({size}), {args.frames} frames at {h}x{w}, event at frame {event} "
             f"({event / FPS:.1f} s at {FPS} fps)", "",
             "| event | background | IoU before | IoU after | true bg after | after / true bg | back to 90 % of true bg |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |", *rows]
    emit(lines, args.markdown)


def _event_rows(model: Path, name: str, kwargs: dict, n: int, size: int, event: int, tmp: Path) -> list[str]:
    """The fixed and adapting runs over one scripted event, beside the IoU with the true
    background after it (what the model itself reaches on the changed scene: the ceiling)."""
    from PIL import Image

    from toolkit.deploy.adapt import Adaptation
    from toolkit.deploy.footage import room_background, scripted_scene

    bg = room_background(size, seed=FOOTAGE_SEED)
    Image.fromarray(bg).save(tmp / "bg.png")
    frames, truths = scripted_scene(n, size, size, room=True, seed=FOOTAGE_SEED, **kwargs)
    true_bg = _event_on(bg, kwargs)
    Image.fromarray(true_bg).save(tmp / "true-bg.png")
    tag = name[:5].replace(" ", "")
    (tmp / f"{tag}-ceiling").mkdir()
    ceiling = np.asarray(_ious(model, frames[event:], truths[event:], tmp / "true-bg.png", tmp / f"{tag}-ceiling", None))
    rows = []
    for label, adapt in (("fixed", None), ("adapting", Adaptation(rate=0.02, relearn=True))):
        folder = tmp / f"{tag}-{label}"
        folder.mkdir()
        ious = np.asarray(_ious(model, frames, truths, tmp / "bg.png", folder, adapt))
        after = ious[event:]
        rows.append(f"| {name} | {label} | {ious[:event].mean():.3f} | {after.mean():.3f} | {ceiling.mean():.3f} | "
                    f"{after.mean() / ceiling.mean():.0%} | {_back(after, ceiling)} |")
    return rows


def _event_on(bg: np.ndarray, kwargs: dict) -> np.ndarray:
    """The background as the camera sees it after the event."""
    h, w = bg.shape[:2]
    if "shift_at" in kwargs:
        dy, dx = kwargs.get("shift", (2, 3))
        bg = np.pad(bg, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[:h, :w]
    if "light_at" in kwargs:
        bg = np.clip(bg.astype(np.float32) * kwargs.get("light", 0.6), 0, 255).astype(np.uint8)
    return bg


def _back(after: np.ndarray, ceiling: np.ndarray, share: float = 0.9, window: int = 5) -> str:
    """Seconds of footage after the event until the IoU (a `window`-frame mean) is back at
    `share` of what the true background gives on the same frames, and stays there on average."""
    kernel = np.ones(window) / window
    ours, best = np.convolve(after, kernel, "valid"), np.convolve(ceiling, kernel, "valid")
    ok = ours >= share * best
    back = next((i for i in range(len(ok)) if ok[i] and ok[i:].mean() >= 0.8), None)
    return f"{back / FPS:.2f} s" if back is not None else "not within the clip"


if __name__ == "__main__":
    main()
