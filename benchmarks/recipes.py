"""Recipes side by side: the same network, data, split and budget, one run, one table.

Makes a synthetic set (held-out *backgrounds*, as `toolkit train` splits), trains every recipe
asked for with exactly the same steps, batch and image size through the library's
`train.loop.run`, and prints a markdown table of the last epoch's held-out figures and the wall
time of each. Weights averaged by a recipe (EMA) are what it evaluates, as the run saves them.

    python benchmarks/recipes.py                   # seed vs improved, 64 px, 12 epochs
    python benchmarks/recipes.py --steps 2000 --image-size 96 --out runs/recipes
    python benchmarks/recipes.py --recipes improved --tails per_head,joint,shared   # the tail's statistics

The figures are eval-mode ones (running BatchNorm statistics), as every export computes them: how
the decoder tail keeps its statistics (`toolkit.net.model.TAIL_STATS`) shows there and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_inference import say_if_busy  # noqa: E402  (starts the load reading)

COLUMNS = (("val_mask_iou", "mask IoU"), ("val_mask_dice", "mask Dice"), ("val_seed_mask_iou", "seed mask IoU"),
           ("val_depth_above_half_iou", "depth IoU"), ("val_seed_depth_iou", "seed depth IoU"), ("val_depth_rmse", "depth RMSE"),
           ("val_depth_absrel", "AbsRel"), ("val_depth_delta1", "delta1"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="seed,improved")
    ap.add_argument("--tails", default="", help="tail statistics to run each recipe with (default: the recipe's own)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=None, help="stop each run after this many steps (default: all epochs)")
    ap.add_argument("--backgrounds", type=int, default=12)
    ap.add_argument("--foregrounds", type=int, default=8)
    ap.add_argument("--placements", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from train.config import TrainConfig, get_recipe
    from train.loop import run

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    for r in recipes:
        get_recipe(r)
    tails: list[str | None] = [t.strip() for t in args.tails.split(",") if t.strip()] or [None]
    runs = [(name, tail) for name in recipes for tail in tails]
    synth = {"backgrounds": args.backgrounds, "foregrounds": args.foregrounds, "placements": args.placements}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        rows = []
        for name, tail in runs:
            # Each run makes the same synthetic set (same options and seed) in its own folder: as
            # `toolkit train` does with no --data, which also gives metric depth (AbsRel, delta1).
            label = name if tail is None else f"{name}, tail {tail}"
            t0 = time.perf_counter()
            result = run(TrainConfig(out=out / label.replace(", tail ", "-"), recipe=name, epochs=args.epochs, synth=synth,
                                     batch_size=args.batch_size, image_size=args.image_size, max_steps=args.steps,
                                     workers=args.workers, seed=args.seed, tensorboard=False, force=True, tail=tail),
                         progress=False)
            seconds = time.perf_counter() - t0
            last = dict(result.history[-1]) if result.history else {}
            last.update(recipe=label, steps=result.steps, seconds=seconds)
            rows.append(last)
            print(f"{label}: {result.steps} steps in {seconds:.0f} s", file=sys.stderr)
    table = render(rows, args, torch.get_num_threads())
    print(table)
    say_if_busy()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0


def render(rows: list[dict], args: argparse.Namespace, threads: int) -> str:
    lines = [f"Recipes at equal budget: {rows[0]['steps'] if rows else 0} steps of {args.batch_size} pairs at "
             f"{args.image_size} px; synthetic set {args.backgrounds} backgrounds x {args.foregrounds} people x "
             f"{args.placements} (held-out backgrounds); {platform.processor() or platform.machine()}, "
             f"{threads} threads.", "",
             "| recipe | " + " | ".join(label for _, label in COLUMNS) + " | wall time |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for row in rows:
        cells = [f"{row[k]:.3f}" if isinstance(row.get(k), float) else "-" for k, _ in COLUMNS]
        lines.append(f"| {row['recipe']} | " + " | ".join(cells) + f" | {row['seconds']:.0f} s |")
    if len(rows) >= 2:
        base, best = rows[0], rows[-1]
        gains = [f"{label} {100 * (best[k] - base[k]):+.1f} points" for k, label in COLUMNS[:5]
                 if isinstance(best.get(k), float) and isinstance(base.get(k), float)]
        lines += ["", f"{best['recipe']} vs {base['recipe']}: " + ", ".join(gains)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
