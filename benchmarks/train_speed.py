"""CPU training speed: the skeleton's eager step ("before") against each speed knob, same run.

One training step = forward (normalisation + network), the seed recipe's losses, backward and an
SGD step (momentum 0.9), on synthetic tensors (no data loading: see `benchmarks/loader.py`).
"before" is the skeleton's loop: NCHW, fp32, PyTorch's default threads, plain convolutions.

Shared machines are noisy, so configurations are interleaved: every round times each of them
once, in turn (ABAB...), and a configuration's ratio is the median over rounds of its speed
divided by the baseline's speed in the same round. The machine's floor (sgemm GFLOP/s) is
measured in the same run; "x floor" is the time per sample divided by the time ~3x the forward
FLOPs (forward + two backward GEMMs) would take at that rate.

    python benchmarks/train_speed.py                          # 128 and 64 px, batch 16
    python benchmarks/train_speed.py --sizes 128 --rounds 5 --profile
    python benchmarks/train_speed.py --configs before,auto,auto+compile   # compile time is reported apart
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from cpu_inference import GFLOP_PER_PAIR, cpu_name, emit, sgemm_gflops  # noqa: E402

# name -> (channels_last, amp, fast_dwconv, compile); "auto" is train.speed's CPU default.
CONFIGS = {
    "before": (False, "off", False, False),
    "nchw+polyphase": (False, "off", True, False),
    "channels_last": (True, "off", False, False),
    "channels_last+polyphase": (True, "off", True, False),
    "channels_last+bf16": (True, "bf16", False, False),
    "channels_last+bf16+polyphase": (True, "bf16", True, False),
    "auto": None,
    "auto+compile": "compile",
}
DEFAULT_CONFIGS = "before,nchw+polyphase,channels_last,channels_last+polyphase,channels_last+bf16,auto"


@dataclass
class Runner:
    """One configuration's model, optimizer and step, ready to time."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    options: object
    inputs: tuple[torch.Tensor, ...]
    loss_fn: object
    compile_s: float = 0.0

    def step(self) -> float:
        from train import speed

        bg, fgbg, mask, depth = self.inputs
        with speed.autocast("cpu", self.options):
            mask_raw, depth_raw = self.model.net(self.model.norm_bg(bg), self.model.norm_fgbg(fgbg))
        loss, _parts = self.loss_fn(mask_raw.float(), depth_raw.float(), mask, depth)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def make_runner(name: str, size: int, batch: int, threads: int | None) -> Runner:
    from toolkit.net.model import EVA4Net, MaskDepthModel
    from train import speed
    from train.config import get_recipe
    from train.losses import MaskDepthLoss

    recipe = get_recipe("seed")
    spec = recipe.spec.with_size(size)
    kind = CONFIGS[name]
    if kind is None or kind == "compile":
        options = speed.resolve_speed("cpu", compile=kind == "compile", threads=threads)
    else:
        cl, amp, fast, comp = kind
        options = speed.SpeedOptions(channels_last=cl, amp=amp, fast_dwconv=fast, compile=comp, threads=threads)
    torch.manual_seed(0)
    model = speed.prepare_model(MaskDepthModel(EVA4Net(), spec), "cpu", options)
    optimizer = torch.optim.SGD(model.net.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    g = torch.Generator().manual_seed(1)
    fmt = speed.memory_format(options)
    bg, fgbg = (torch.rand(batch, 3, size, size, generator=g).contiguous(memory_format=fmt) for _ in range(2))
    mask = (torch.rand(batch, 1, size, size, generator=g) > 0.8).float()
    depth = torch.rand(batch, 1, size, size, generator=g)
    runner = Runner(name, model, optimizer, options, (bg, fgbg, mask, depth), MaskDepthLoss(recipe))
    t0 = time.perf_counter()
    runner.step()  # warm-up (and, when compiling, the compilation)
    runner.compile_s = time.perf_counter() - t0 if options.compile else 0.0
    return runner


def profile_top(runner: Runner, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def measure(names: list[str], size: int, batch: int, steps: int, rounds: int, threads: int | None,
            default_threads: int) -> tuple[dict[str, dict], dict[str, Runner]]:
    """Interleaved rounds; per config the median samples/s and median same-round ratio."""
    from train import speed

    runners = {}
    for name in names:
        torch.set_num_threads(default_threads)
        runners[name] = make_runner(name, size, batch, threads if name != "before" else None)
    speeds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names:
            # "before" runs with PyTorch's default threads, the others with the options' threads.
            torch.set_num_threads(default_threads)
            speed.apply_threads(runners[name].options)
            t0 = time.perf_counter()
            for _ in range(steps):
                runners[name].step()
            speeds[name].append(batch * steps / (time.perf_counter() - t0))
        print(f"  {size} px round {r + 1}/{rounds}: " + ", ".join(f"{n} {speeds[n][-1]:.2f}" for n in names),
              file=sys.stderr, flush=True)
    torch.set_num_threads(default_threads)
    base = speeds[names[0]]
    return {n: {"samples_s": statistics.median(v), "ratio": statistics.median(a / b for a, b in zip(v, base)),
                "min_ratio": min(a / b for a, b in zip(v, base)), "max_ratio": max(a / b for a, b in zip(v, base)),
                "compile_s": runners[n].compile_s, "options": runners[n].options.describe()}
            for n, v in speeds.items()}, runners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128,64", help="image sizes (px), comma-separated")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (ABAB...)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated, first is the baseline; known: {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=None, help="threads for the non-baseline configs (default: train.speed's pick)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of the baseline and the last config")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()

    from toolkit.core.errors import UserError
    from train import speed

    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        raise SystemExit(f"error: unknown config(s) {', '.join(unknown) or '(none)'}; known: {', '.join(CONFIGS)}")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        if any(s <= 0 or s % 4 for s in sizes):
            raise ValueError
    except ValueError:
        raise SystemExit(f"error: --sizes must be positive multiples of 4, got {args.sizes!r}") from None
    default_threads = torch.get_num_threads()
    threads = args.threads or speed.pick_cpu_threads()
    try:
        speed.SpeedOptions(threads=threads).validate("cpu")
    except UserError as e:
        raise SystemExit(f"error: {e}") from None

    gflops_before, gemm_by = sgemm_gflops()
    results, profiles = {}, []
    for size in sizes:
        results[size], runners = measure(names, size, args.batch, args.steps, args.rounds, threads, default_threads)
        if args.profile:
            for name in dict.fromkeys([names[0], names[-1]]):
                torch.set_num_threads(default_threads)
                speed.apply_threads(runners[name].options)
                profiles.append(f"### torch.profiler, {name}, {size} px batch {args.batch}, one step (self CPU time)\n\n"
                                f"```\n{profile_top(runners[name])}```")
            torch.set_num_threads(default_threads)
        del runners
    gflops = max(gflops_before, sgemm_gflops()[0])

    lines = [f"CPU: {cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores, torch {torch.__version__} "
             f"(default threads {default_threads}, others {threads}); native bf16: {speed.cpu_has_native_bf16()}; "
             f"sgemm {gflops:.0f} GFLOP/s ({gemm_by}); batch {args.batch}, {args.steps} steps x {args.rounds} interleaved rounds",
             "", "| size | config | options | samples/s | vs before (median) | range | x floor | compile s |",
             "| ---: | --- | --- | ---: | ---: | --- | ---: | ---: |"]
    for size, rows in results.items():
        floor_s = 3 * GFLOP_PER_PAIR * (size / 128) ** 2 / gflops  # seconds per sample at the sgemm rate
        for name, r in rows.items():
            comp = f"{r['compile_s']:.0f}" if r["compile_s"] else ""
            lines.append(f"| {size} | {name} | {r['options']} | {r['samples_s']:.2f} | {r['ratio']:.2f}x | "
                         f"{r['min_ratio']:.2f}-{r['max_ratio']:.2f} | {1 / r['samples_s'] / floor_s:.1f} | {comp} |")
    emit(lines + [""] + profiles, args.markdown)


if __name__ == "__main__":
    main()
