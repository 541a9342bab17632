"""Loader samples/s next to training samples/s of the same configuration: which one limits?

The loader is the project's own: `toolkit.data.reader.open_dataset` over a synthetic set made
with `toolkit.data.synth.synthesize` (a folder of JPEG/PNG files, and the same set as zips),
wrapped in `train.dataset.PairTensors` and the training loop's `EpochBatches` sampler, in a
`torch.utils.data.DataLoader` with 0, 1 or 2 worker processes (decode + resize happen in the
workers; each opens its own zip handles). One sample = one pair: bg, fgbg, mask and depth.

Training samples/s come from `benchmarks/train_speed.py`'s step (synthetic tensors, no
loading) for the skeleton's eager step ("before") and `train.speed`'s CPU default ("auto").
With 0 workers loading and training take turns, so the pipeline runs at 1 / (1/L + 1/T); with
workers they overlap but share the machine's cores (on a 2-core machine a worker takes CPU from
the training step). "limits" names the slower side for the auto step.

    python benchmarks/loader.py                       # folder + zip, workers 0,1,2, 64 and 128 px
    python benchmarks/loader.py --workers 0,2 --sizes 128 --batches 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from cpu_inference import cpu_name, emit  # noqa: E402


def loader_rate(data: Path, size: int, batch: int, workers: int, batches: int) -> tuple[float, float]:
    """(samples/s over `batches` batches after the first, seconds to the first batch)."""
    from torch.utils.data import DataLoader

    from toolkit.data import reader
    from train.dataset import EpochBatches, PairTensors

    pairs = reader.open_dataset(data)
    sampler = EpochBatches(len(pairs), batch, seed=0)
    kw = {"num_workers": workers, "persistent_workers": workers > 0}
    loader = DataLoader(PairTensors(pairs, range(len(pairs)), (size, size)), batch_sampler=sampler,
                        generator=torch.Generator(), **kw)
    t0 = time.perf_counter()
    epoch, seen, first, start = 0, 0, None, 0.0
    while seen < batches + 1:
        sampler.set_epoch(epoch)
        for b in loader:
            if first is None:
                first = time.perf_counter() - t0
                start = time.perf_counter()
                count = 0
            else:
                count += int(b["bg"].shape[0])
            seen += 1
            if seen >= batches + 1:
                break
        epoch += 1
    rate = count / (time.perf_counter() - start)
    del loader  # stops the persistent workers
    return rate, first


def train_rates(size: int, batch: int, steps: int, names: tuple[str, ...] = ("before", "auto")) -> dict[str, float]:
    """Training samples/s of the eager skeleton step and train.speed's CPU default."""
    from train_speed import make_runner

    out = {}
    default_threads = torch.get_num_threads()
    for name in names:
        torch.set_num_threads(default_threads)
        runner = make_runner(name, size, batch, threads=None)
        t0 = time.perf_counter()
        for _ in range(steps):
            runner.step()
        out[name] = batch * steps / (time.perf_counter() - t0)
    torch.set_num_threads(default_threads)
    return out


def _fmt(value: float | None) -> str:
    return "not timed" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per loader configuration")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps per size and config")
    parser.add_argument("--backgrounds", type=int, default=4, help="synthetic set: backgrounds (x foregrounds x placements pairs)")
    parser.add_argument("--foregrounds", type=int, default=6)
    parser.add_argument("--placements", type=int, default=4)
    parser.add_argument("--skip-before", action="store_true", help="time only the auto training step (the eager one is slow)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        workers = [int(w) for w in args.workers.split(",") if w]
        if not sizes or not workers or any(s <= 0 or s % 4 for s in sizes) or any(w < 0 for w in workers):
            raise ValueError
    except ValueError:
        raise SystemExit("error: --sizes must be positive multiples of 4 and --workers numbers >= 0") from None

    from toolkit.data import synth

    rows = []
    with tempfile.TemporaryDirectory(prefix="toolkit-loader-") as tmp:
        sets = {}
        for variant in ("folder", "zip"):
            report = synth.synthesize(Path(tmp) / variant, backgrounds=args.backgrounds, foregrounds=args.foregrounds,
                                      placements=args.placements, size=160, seed=0, zip=variant == "zip")
            sets[variant] = report.out
        pairs = report.pairs
        for size in sizes:
            train = train_rates(size, args.batch, args.train_steps, ("auto",) if args.skip_before else ("before", "auto"))
            for variant, data in sets.items():
                for w in workers:
                    rate, first = loader_rate(data, size, args.batch, w, args.batches)
                    auto = train["auto"]
                    pipeline = 1 / (1 / rate + 1 / auto) if w == 0 else min(rate, auto)
                    rows.append(f"| {size} | {variant} | {w} | {rate:.1f} | {first:.2f} | {_fmt(train.get('before'))} | "
                                f"{auto:.2f} | {pipeline:.2f}{'' if w == 0 else ' (at most)'} | "
                                f"{'loader' if rate < auto else 'training'} |")
                    print(rows[-1], file=sys.stderr, flush=True)

    lines = [f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}; synthetic set of {pairs} pairs "
             f"(160 px JPEG/PNG), batch {args.batch}, {args.batches} timed batches; training: synthetic tensors, "
             f"{args.train_steps} steps",
             "", "| size | data | workers | loader samples/s | first batch s | train before samples/s | "
             "train auto samples/s | pipeline samples/s | limits |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |", *rows]
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
