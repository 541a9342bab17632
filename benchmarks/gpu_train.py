"""GPU training speed, one script for a CUDA machine: every speed knob at 128 px, same run.

Measures train images/s (forward, the seed recipe's losses, backward, SGD step; synthetic
tensors on the GPU, no data loading) for, in order of importance:
  fp32 NCHW bs128 (the baseline, as in gpu-training.md) -> bf16 + channels_last -> + polyphase
  depthwise -> + torch.compile -> + CUDA graphs (a manually captured whole step, and compile
  mode "reduce-overhead") -> the best at batch 256 and 512,
checks the polyphase depthwise conv against the reference conv on the GPU (forward and input,
weight and bias gradients, fp32 and bf16, NCHW and channels_last), and prints torch.profiler's
top-10 kernels of the baseline and the best configuration. A time budget (default 420 s, the
whole script stays under 8 minutes on an H100) skips what would not fit; results are written
after every configuration, so a run cut short still leaves them.

    python benchmarks/gpu_train.py OUT_DIR                 # writes OUT_DIR/gpu_train.json and .md
    python benchmarks/gpu_train.py OUT_DIR --budget 300 --no-compile
    python benchmarks/gpu_train.py OUT_DIR --cpu-smoke     # exercises the code paths on a CPU, tiny sizes

Timing: `--seconds` of steps after warm-up, one sync at the end (the training loop's per-step
`loss.item()` NaN check adds a sync per step; the "sync each step" row shows its cost).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.cpu_inference import say_if_busy  # noqa: E402  (starts the load reading)


@dataclass
class Config:
    name: str
    batch: int = 128
    channels_last: bool = False
    amp: str = "off"
    fast_dwconv: bool = False
    compile: str | None = None  # None, "default" or "reduce-overhead"
    graph: bool = False  # capture the whole step (forward, backward, SGD) in one CUDA graph
    sync_each_step: bool = False


def configs(compile_ok: bool, graphs_ok: bool) -> list[Config]:
    fast = {"channels_last": True, "amp": "bf16", "fast_dwconv": True}
    out = [Config("fp32 NCHW"), Config("bf16 + channels_last", channels_last=True, amp="bf16"),
           Config("bf16 + channels_last + polyphase", **fast),
           Config("bf16 + channels_last + polyphase, sync each step", sync_each_step=True, **fast)]
    if graphs_ok:
        out.append(Config("bf16 + channels_last + polyphase + CUDA graph", graph=True, **fast))
    if compile_ok:
        out += [Config("bf16 + channels_last + compile", channels_last=True, amp="bf16", compile="default"),
                Config("bf16 + channels_last + polyphase + compile", compile="default", **fast)]
        if graphs_ok:
            out.append(Config("bf16 + channels_last + polyphase + compile reduce-overhead", compile="reduce-overhead", **fast))
    for batch in (256, 512):
        out.append(Config(f"bf16 + channels_last + polyphase{' + CUDA graph' if graphs_ok else ''}, batch {batch}",
                          batch=batch, graph=graphs_ok, **fast))
    return out


class Step:
    """One configuration's model, optimizer, static inputs and step function."""

    def __init__(self, cfg: Config, device: torch.device, size: int):
        from toolkit.net.model import EVA4Net, MaskDepthModel
        from train import speed
        from train.config import get_recipe
        from train.losses import MaskDepthLoss

        self.cfg, self.device = cfg, device
        recipe = get_recipe("seed")
        self.options = speed.SpeedOptions(channels_last=cfg.channels_last, amp=cfg.amp, fast_dwconv=cfg.fast_dwconv)
        torch.manual_seed(0)
        self.model = speed.prepare_model(MaskDepthModel(EVA4Net(), recipe.spec.with_size(size)), device, self.options)
        self.net = self.model.net
        if cfg.compile:
            self.net = torch.compile(self.model.net, mode=cfg.compile)
        self.optimizer = torch.optim.SGD(self.model.net.parameters(), lr=recipe.lr, momentum=recipe.momentum)
        self.loss_fn = MaskDepthLoss(recipe)
        g = torch.Generator(device="cpu").manual_seed(1)
        fmt = speed.memory_format(self.options)
        n = cfg.batch
        self.inputs = [torch.rand(n, 3, size, size, generator=g).to(device).contiguous(memory_format=fmt) for _ in range(2)]
        self.targets = [(torch.rand(n, 1, size, size, generator=g) > 0.8).float().to(device),
                        torch.rand(n, 1, size, size, generator=g).to(device)]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None

    def _autocast(self):
        import contextlib

        if self.options.amp_dtype is None:
            return contextlib.nullcontext()
        # CUDA graphs need autocast's weight cache off (its casts would be captured once).
        return torch.autocast(self.device.type, dtype=self.options.amp_dtype, cache_enabled=not self.cfg.graph)

    def eager(self) -> torch.Tensor:
        bg, fgbg = self.inputs
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            mask_raw, depth_raw = self.net(self.model.norm_bg(bg), self.model.norm_fgbg(fgbg))
        loss, _ = self.loss_fn(mask_raw.float(), depth_raw.float(), *self.targets)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def capture(self) -> None:
        """Whole-step capture as in PyTorch's CUDA-graphs notes: warm up on a side stream, then
        record forward, backward and the optimizer step; replays reuse the static tensors."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.eager()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = self.eager()

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
            return self.loss
        return self.eager()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_config(cfg: Config, device: torch.device, size: int, seconds: float) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step = Step(cfg, device, size)
    if cfg.graph:
        step.capture()
    for _ in range(3):
        step()
    sync(device)
    setup_s = time.perf_counter() - t0
    loss = float(step())  # finite check once, outside the timed loop
    steps, start = 0, time.perf_counter()
    while True:
        value = step()
        if cfg.sync_each_step:
            float(value)
        steps += 1
        if steps % 5 == 0:
            sync(device)
            if time.perf_counter() - start >= seconds:
                break
    sync(device)
    elapsed = time.perf_counter() - start
    return {"config": cfg.name, "batch": cfg.batch, "images_per_s": cfg.batch * steps / elapsed,
            "ms_per_step": 1000 * elapsed / steps, "steps": steps, "setup_s": setup_s, "loss": loss,
            "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}, step


def profile_table(step: Step, device: torch.device, rows: int = 10) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for _ in range(2):
        step()
    sync(device)
    with profile(activities=acts) as prof:
        for _ in range(3):
            step()
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)


def _conv_grads(conv, x, gy, dtype):
    xi = x.clone().requires_grad_()
    conv.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        y = conv(xi)
    (y.float() * gy).sum().backward()
    return [y.float().detach(), xi.grad, conv.weight.grad, conv.bias.grad]


def check_polyphase(device: torch.device) -> list[dict]:
    """The polyphase conv and the reference nn.Conv2d, each against the fp32 reference computed
    without TF32 (the truth): max error relative to each tensor's largest value. "ok" judges the
    polyphase conv; the reference's own error is reported beside it (on the CPU, oneDNN's bf16
    channels_last dilated depthwise weight gradient is wrong, see train/speed.py)."""
    from torch import nn

    from train.speed import swap_dilated_depthwise

    names = ("output", "grad_input", "grad_weight", "grad_bias")
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        for cl in (False, True):
            for hw in ((64, 64), (33, 40)):
                torch.manual_seed(0)
                ref = nn.Conv2d(128, 128, 3, padding=2, dilation=2, groups=128).to(device)
                fast = nn.Conv2d(128, 128, 3, padding=2, dilation=2, groups=128).to(device)
                fast.load_state_dict(ref.state_dict())
                swap_dilated_depthwise(fast)
                x = torch.randn(8, 128, *hw, device=device)
                gy = torch.randn(8, 128, *hw, device=device)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                tf32 = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = False
                try:
                    truth = _conv_grads(ref, x.contiguous(), gy, torch.float32)
                finally:
                    torch.backends.cudnn.allow_tf32 = tf32
                errors = {}
                for label, conv in (("polyphase", fast), ("reference", ref)):
                    got = _conv_grads(conv, x, gy, dtype)
                    errors[label] = {n: float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                                     for n, a, b in zip(names, got, truth)}
                tol = 1e-5 if dtype == torch.float32 else 3e-2
                # TF32 convolutions (cuDNN's default) round inputs to 10-bit mantissas: allow for it.
                if device.type == "cuda" and dtype == torch.float32 and tf32:
                    tol = 3e-3
                out.append({"dtype": str(dtype).replace("torch.", ""), "channels_last": cl, "hw": list(hw),
                            "max_rel_error": errors["polyphase"], "reference_rel_error": errors["reference"],
                            "tolerance": tol, "ok": all(e <= tol for e in errors["polyphase"].values())})
    return out


def write(out: Path, report: dict) -> None:
    from toolkit.core.fsutil import write_text_atomic

    write_text_atomic(out / "gpu_train.json", json.dumps(report, indent=2) + "\n")
    base = report["results"][0]["images_per_s"] if report["results"] else None
    lines = [f"# GPU training speed\n\n{report['device']}, torch {report['torch']}, {report['size']} px, "
             f"seed recipe, SGD; cudnn.benchmark on, TF32 convolutions {report['tf32_conv']}\n",
             "| config | batch | images/s | vs fp32 NCHW | ms/step | setup s | max memory GiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        mem = f"{r['max_memory_gib']:.1f}" if r["max_memory_gib"] is not None else ""
        lines.append(f"| {r['config']} | {r['batch']} | {r['images_per_s']:.0f} | {r['images_per_s'] / base:.2f}x | "
                     f"{r['ms_per_step']:.1f} | {r['setup_s']:.0f} | {mem} |")
    for name, why in report["skipped"]:
        lines.append(f"| {name} | | skipped: {why} | | | | |")
    checks = report["polyphase_check"]
    lines.append(f"\nPolyphase depthwise vs the fp32 reference (no TF32) on this device: "
                 f"{'all pass' if checks and all(c['ok'] for c in checks) else 'FAIL' if checks else 'not run'}")
    for c in checks:
        errs = ", ".join(f"{k} {v:.1e}" for k, v in c["max_rel_error"].items())
        ref = ", ".join(f"{v:.1e}" for v in c["reference_rel_error"].values())
        lines.append(f"- {c['dtype']} {'channels_last' if c['channels_last'] else 'NCHW'} {c['hw']}: polyphase {errs} "
                     f"(tolerance {c['tolerance']:.0e}) {'ok' if c['ok'] else 'FAIL'}; nn.Conv2d: {ref}")
    for title, table in report["profiles"].items():
        lines.append(f"\n## torch.profiler top kernels: {title}\n\n```\n{table}```")
    write_text_atomic(out / "gpu_train.md", "\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu_train.json and gpu_train.md")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per configuration")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run; configs that would not fit are skipped")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (minutes of compilation)")
    parser.add_argument("--cpu-smoke", action="store_true", help="run the eager rows on the CPU at a tiny size (tests the script)")
    args = parser.parse_args()
    t_start = time.perf_counter()

    if args.cpu_smoke:
        device, size = torch.device("cpu"), 32
    elif not torch.cuda.is_available():
        print(f"gpu_train: no CUDA device visible to this PyTorch ({torch.__version__}); nothing to measure. "
              "Run it on a CUDA machine (or --cpu-smoke to exercise the script here).", file=sys.stderr)
        return 0
    else:
        device, size = torch.device("cuda"), args.size
        torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU {platform.processor() or platform.machine()}"
    report = {"device": name, "torch": torch.__version__, "size": size, "results": [], "skipped": [],
              "polyphase_check": [], "profiles": {},
              "tf32_conv": bool(torch.backends.cudnn.allow_tf32), "cuda": torch.version.cuda}
    report["polyphase_check"] = check_polyphase(device)
    write(args.out, report)
    cuda = device.type == "cuda"
    todo = configs(compile_ok=cuda and not args.no_compile, graphs_ok=cuda)
    if args.cpu_smoke:
        todo = [Config(c.name, batch=2, channels_last=c.channels_last, amp=c.amp, fast_dwconv=c.fast_dwconv,
                       sync_each_step=c.sync_each_step) for c in todo[:4]]
    best = (0.0, None)
    base_step = None
    # Rough worst-case cost of a row (setup + timing), to skip what would not fit the budget.
    reserve = {None: 20.0, "default": 90.0, "reduce-overhead": 120.0}
    for cfg in todo:
        left = args.budget - (time.perf_counter() - t_start)
        need = reserve[cfg.compile] + args.seconds + 15.0  # + the profiles at the end
        if left < need:
            report["skipped"].append((cfg.name, f"time budget ({left:.0f} s left, needs ~{need:.0f})"))
            continue
        try:
            row, step = time_config(cfg, device, size, args.seconds if not args.cpu_smoke else 0.5)
        except Exception as e:  # noqa: BLE001 - one failing knob must not lose the others' figures
            report["skipped"].append((cfg.name, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"))
            print(f"gpu_train: {cfg.name} failed: {e}", file=sys.stderr)
            if cuda:
                torch.cuda.empty_cache()
            continue
        report["results"].append(row)
        print(f"{cfg.name}: {row['images_per_s']:.0f} images/s (batch {cfg.batch}, setup {row['setup_s']:.0f} s)", flush=True)
        if base_step is None:
            base_step = step
            report["profiles"][f"{cfg.name}, batch {cfg.batch}"] = profile_table(step, device)
        elif row["images_per_s"] > best[0] and not cfg.compile and cfg.batch == todo[0].batch:
            best = (row["images_per_s"], (cfg, step))  # kept for its profile; the bigger batches are not
        del step
        if cuda:
            torch.cuda.empty_cache()
        if cfg.compile:
            torch._dynamo.reset()
        write(args.out, report)
    if best[1] is not None and time.perf_counter() - t_start < args.budget:
        cfg, step = best[1]
        report["profiles"][f"{cfg.name}, batch {cfg.batch}"] = profile_table(step, device)
    report["total_s"] = time.perf_counter() - t_start
    write(args.out, report)
    print((args.out / "gpu_train.md").read_text())
    say_if_busy()
    return 0 if all(c["ok"] for c in report["polyphase_check"]) else 1


if __name__ == "__main__":
    sys.exit(main())
