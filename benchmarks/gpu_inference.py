"""GPU inference speed, one script for a CUDA machine: PyTorch knobs, parity, ONNX, same run.

Images/s (= pairs/s) at 128 px, batches 1, 64 and 256, inputs already on the GPU, of the literal
network (`toolkit.net.checkpoint.build_model`; fp32 eager NCHW is the baseline) and the folded one
(`toolkit.net.folded.fold`: same function, 3.62 instead of 6.14 GFLOP per pair), each in fp32 -> fp16
(weights and inputs converted, no autocast) -> + channels_last -> + torch.compile (default mode at the
largest batch; "reduce-overhead", i.e. CUDA graphs, at batch 1 where launch overhead rules).
Each is judged against the literal fp32 eager outputs (TF32 off: the truth) on the same synthetic
pairs by `toolkit.verify.compare`. Then `export.formats.run_exports` writes, on the CPU, folded fp32, fp16,
int8 (cpu and tensorrt targets, forced so they are timed even when their gate fails) and the literal
fp32 graph, and each ONNX runs on whatever GPU runtime there is (what was tried and what was
missing: one line each); without one, ONNX Runtime CPU at batch 8 gives reference rows only.
A time budget (default 360 s: the whole run stays under ~7 minutes on an H100) skips what would
not fit and says so; JSON and markdown are rewritten after every row, so a run cut short keeps them.

    python benchmarks/gpu_inference.py OUT_DIR                # OUT_DIR/gpu_inference.json and .md
    python benchmarks/gpu_inference.py OUT_DIR --no-compile --budget 200
    python benchmarks/gpu_inference.py OUT_DIR --cpu-smoke    # every code path on a CPU, 32 px, batches 1 and 2

Timing: warm-up calls (cuDNN autotuning, compilation), then as many calls as fill `--seconds`
and one synchronisation at the end. `--cpu-smoke` tests the script, not the speed: it compiles with
the "eager" backend (Inductor takes minutes on 2 cores) and runs the half rows in bf16 (CPU fp16
convolutions take seconds per call).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.cpu_inference import say_if_busy  # noqa: E402  (starts the load reading)
from benchmarks.gpu_inference_report import BASELINE, SEED, write  # noqa: E402
from toolkit.core.spec import INPUT_NAMES, OUTPUT_NAMES  # noqa: E402
from toolkit.runtime.base import Runner  # noqa: E402

GRAPHS = ("literal", "folded")
HALF = {"dtype": torch.float16, "name": "fp16"}  # --cpu-smoke: bfloat16, judged by the fp16 thresholds


@dataclass(frozen=True)
class Config:
    name: str
    graph: str  # "literal" (build_model as it is) or "folded" (toolkit.net.folded.fold)
    half: bool = False  # weights, inputs and activations in HALF["dtype"], no autocast
    channels_last: bool = False
    compile: str | None = None  # None, "default" or "reduce-overhead"
    batches: tuple[int, ...] = ()


def configs(batches: tuple[int, ...], compile_ok: bool) -> list[Config]:
    """Cheap eager rows first (both graphs), then the compiled ones, which cost minutes."""
    out, half = [], HALF["name"]
    for g in GRAPHS:
        out += [Config(f"{g} fp32", g, batches=batches), Config(f"{g} {half}", g, half=True, batches=batches),
                Config(f"{g} {half} + channels_last", g, True, True, batches=batches)]
    if compile_ok:  # each compile costs ~a minute: the largest batch only (the seed's figure is at 256), folded first
        out += [Config(f"{g} {half} + channels_last + compile", g, True, True, "default", batches[-1:]) for g in reversed(GRAPHS)]
        out += [Config(f"{g} {half} + channels_last + compile reduce-overhead", g, True, True, "reduce-overhead", batches[:1]) for g in reversed(GRAPHS)]
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def no_tf32():
    """The reference runs in true fp32: cuDNN's TF32 convolutions (PyTorch's default) off."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def time_calls(fn, seconds: float, device: torch.device) -> tuple[float, int]:
    """(ms per call, calls). One sync at the end only: a sync per call would serialise CPU and GPU."""
    for _ in range(3):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    sync(device)
    calls = max(3, min(100_000, math.ceil(seconds / max((time.perf_counter() - t0) / 3, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return 1000 * (time.perf_counter() - t0) / calls, calls


def build(cfg: Config, ckpt: dict, device: torch.device, backend: str):
    from toolkit.net.checkpoint import build_model
    from toolkit.net.folded import fold

    model = build_model(ckpt).eval()  # a fresh one each time: fold() shares modules, .to(dtype) is in place
    model = (fold(model) if cfg.graph == "folded" else model).to(device)
    if cfg.half:
        model = model.to(HALF["dtype"])
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        kw = {"mode": cfg.compile} if backend == "inductor" else {}  # modes are Inductor's
        return torch.compile(model, backend=backend, dynamic=False, **kw)  # one graph per batch size
    return model


def to_device(a: np.ndarray, cfg: Config, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)).to(device, HALF["dtype"] if cfg.half else torch.float32)
    return t.contiguous(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)


class FnRunner(Runner):
    """A torch callable as a `toolkit.runtime` runner, so `toolkit.verify.compare` judges it like any backend."""

    backend = "pytorch"

    def __init__(self, name: str, fn, cfg: Config, spec, device: torch.device, exact: bool = False):
        super().__init__(Path(name), spec, {"toolkit.precision": "fp16" if cfg.half else "fp32"})  # picks the thresholds
        self.fn, self.cfg, self.device, self.exact = fn, cfg, device, exact

    def _activate(self) -> None:
        return None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [to_device(feed[n], self.cfg, self.device) for n in INPUT_NAMES]
        with torch.no_grad(), (no_tf32() if self.exact else contextlib.nullcontext()):
            outs = self.fn(*args)
        return {n: o.float().contiguous().cpu().numpy() for n, o in zip(OUTPUT_NAMES, outs)}


def chunks(pairs: dict[str, np.ndarray], batch: int) -> list[dict[str, np.ndarray]]:
    """Parity feeds at a batch the configuration was timed at (no new compile); batch 1 on 16 pairs."""
    n = len(pairs["bg"]) if batch > 1 else min(16, len(pairs["bg"]))
    return [{k: pairs[k][i:i + batch] for k in INPUT_NAMES} for i in range(0, n - batch + 1, batch)]


def run_config(cfg: Config, ckpt, host, reference, device, seconds, backend, rows: list[dict], save) -> dict:
    """Time `cfg` at each of its batches (each row saved as it comes), then judge its outputs."""
    from toolkit.net.checkpoint import spec_of
    from toolkit.verify.compare import compare_runners

    t0 = time.perf_counter()
    fn = build(cfg, ckpt, device, backend)
    setup = time.perf_counter() - t0
    for b in cfg.batches:
        bg, fg = (to_device(host[k][:b], cfg, device) for k in INPUT_NAMES)
        with torch.no_grad():
            t0 = time.perf_counter()
            fn(bg, fg)  # the first call at this shape: cuDNN autotuning, compilation
            sync(device)
            first = time.perf_counter() - t0 + setup
            ms, calls = time_calls(lambda bg=bg, fg=fg: fn(bg, fg), seconds, device)
        rows.append({"config": cfg.name, "graph": cfg.graph, "precision": HALF["name"] if cfg.half else "fp32", "batch": b,
                     "images_per_s": 1000 * b / ms, "ms_per_batch": ms, "calls": calls, "first_call_s": first})
        setup = 0.0
        print(f"{cfg.name}, batch {b}: {1000 * b / ms:,.0f} images/s (first call {first:.1f} s)", flush=True)
        save()
    pb = max([b for b in cfg.batches if b <= len(host["pairs"]["bg"])], default=1)
    return compare_runners(reference, [FnRunner(cfg.name, fn, cfg, spec_of(ckpt), device)], chunks(host["pairs"], pb)).results[0].to_dict()


def copy_row(host, batch: int, seconds: float, device: torch.device) -> dict:
    """Host -> device cost of the fp32 inputs, which every timed row has on the GPU already."""
    src = [torch.from_numpy(np.ascontiguousarray(host[k][:batch])) for k in INPUT_NAMES]
    if device.type != "cuda":
        ms, _ = time_calls(lambda: [t.clone() for t in src], seconds, device)
        return {"config": "host copy (CPU smoke: no device to copy to)", "batch": batch, "images_per_s": 1000 * batch / ms, "ms_per_batch": ms}
    pinned = [t.pin_memory() for t in src]
    ms, _ = time_calls(lambda: [t.to(device, non_blocking=True) for t in pinned], seconds, device)
    pageable, _ = time_calls(lambda: [t.to(device) for t in src], seconds, device)
    mb = sum(t.numel() * 4 for t in src) / 1e6
    return {"config": f"host->device copy, fp32 bg + fgbg ({mb:.0f} MB), pinned", "batch": batch, "images_per_s": 1000 * batch / ms,
            "ms_per_batch": ms, "pageable_ms_per_batch": pageable, "gb_per_s": mb / ms}


def driver_version() -> str:
    with contextlib.suppress(OSError, IndexError, subprocess.SubprocessError):
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip().splitlines()[0]
    with contextlib.suppress(Exception):  # no nvidia-smi: the driver's CUDA version from cuda-python
        from cuda.bindings import runtime as cudart

        v = int(cudart.cudaDriverGetVersion()[1])
        return f"supports CUDA {v // 1000}.{v % 1000 // 10} (cuda-python; no nvidia-smi)"
    return "unknown"


def header(device: torch.device, args) -> dict:
    import onnxruntime as ort

    h = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "onnxruntime": ort.__version__,
         "ort_providers": ort.get_available_providers(), "size": args.size, "batches": list(args.batches), "seconds": args.seconds,
         "budget_s": args.budget, "half": f"{HALF['dtype']} weights and inputs, no autocast", "half_name": HALF["name"],
         "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
         "cudnn_benchmark": device.type == "cuda", "seed": SEED}
    if device.type != "cuda":
        return h | {"device": f"CPU {platform.machine()} (CPU smoke)", "compute_capability": None, "driver": None}
    p = torch.cuda.get_device_properties(0)
    return h | {"device": p.name, "compute_capability": f"{p.major}.{p.minor}", "memory_gib": p.total_memory / 2**30, "driver": driver_version()}


def runtimes_tried(o: dict, device: torch.device, model: Path | None, trt_batch) -> str | None:
    """One line per GPU runtime for ONNX (ONNX Runtime's TensorRT and CUDA providers, TensorRT
    itself): what was tried, what was missing. Returns the provider to time with, if one works."""
    import onnxruntime as ort

    from toolkit.runtime import open_runner
    from toolkit.runtime.onnx_runner import EP_NAMES

    avail = ort.get_available_providers()
    o["tried"].append(f"onnxruntime {ort.__version__}: providers {', '.join(avail)}")
    try:
        import tensorrt

        o["tried"].append(f"import tensorrt: {tensorrt.__version__} (engines are not built here: `toolkit export --engine` does that)")
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install's OSError
        o["tried"].append(f"import tensorrt: missing ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    for key in ("tensorrt", "cuda"):
        if EP_NAMES[key] not in avail:
            o["tried"].append(f"onnxruntime {EP_NAMES[key]}: missing (needs the onnxruntime-gpu package)")
        elif model is not None and device.type == "cuda":
            try:
                runner = open_runner(model, provider=key, trt_batch=trt_batch).activate()
                used = runner.providers[0] if runner.providers else "none"
                runner.deactivate()
                o["tried"].append(f"onnxruntime {EP_NAMES[key]}: session uses {used}" + (f" ({'; '.join(runner.notes)})" if runner.notes else ""))
                if used == EP_NAMES[key]:
                    return key
            except Exception as e:  # noqa: BLE001 - recorded; the CPU reference rows still run
                o["tried"].append(f"onnxruntime {EP_NAMES[key]}: failed to open ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    return None


def onnx_section(report, ckpt_path: Path, out: Path, host, device, fits, save, args) -> None:
    """Exports on the CPU; each ONNX on a GPU runtime if one works, else ORT CPU reference rows; parity vs torch fp32."""
    import onnxruntime as ort

    from export.formats import ExportOptions, run_exports
    from toolkit.runtime import open_runner
    from toolkit.verify.compare import compare_runners

    o = report["onnx"]
    few = {"calib_pairs": 4, "gate_pairs": 4} if args.cpu_smoke else {}
    runs = [("folded fp32 + fp16 + int8 (cpu target)", "onnx", ExportOptions(fp16=True, int8=True, force=True, **few), 45),
            ("int8, tensorrt target", "onnx-int8-tensorrt", ExportOptions(int8=True, int8_target="tensorrt", force=True, **few), 35),
            ("literal fp32", "onnx-literal", ExportOptions(graph="literal"), 20)]
    models: list[Path] = []
    for label, sub, options, need in runs:
        if not fits(f"ONNX export: {label}", need):
            continue
        t0 = time.perf_counter()
        outcomes = run_exports(ckpt_path, out / sub, options=options)
        seconds = time.perf_counter() - t0
        for oc in outcomes:
            if not oc.ok:
                o["exports"].append({"export": label, "file": oc.format.key, "error": oc.error})
            for a in oc.artifacts:
                if a.part != "whole":
                    continue  # the fixed-camera halves: benchmarks/fixed_camera.py times it
                if sub == "onnx-int8-tensorrt" and a.precision == "fp32":
                    continue  # the same folded fp32 model again (the int8 one is quantised from it)
                models.append(a.path)
                o["exports"].append({"export": label, "file": str(a.path.relative_to(out)), "precision": a.precision, "seconds": seconds,
                                     "summary": a.summary, "gate_passed": a.detail.passed if a.precision == "int8" else None})
        save()
    batches = sorted(args.batches)
    trt_batch = (batches[0], batches[len(batches) // 2], batches[-1])
    provider = runtimes_tried(o, device, models[0] if models else None, trt_batch)
    for m in models if provider else []:
        if not fits(f"ONNX {m.relative_to(out)} on {provider}", len(batches) * (args.seconds + 5) + (120 if provider == "tensorrt" else 5)):
            continue
        runner = open_runner(m, provider=provider, trt_batch=trt_batch).activate()
        session = runner.session
        for b in batches:
            binding = session.io_binding()  # inputs and outputs stay on the GPU, as in the torch rows
            for n in INPUT_NAMES:
                binding.bind_ortvalue_input(n, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(host[n][:b]), "cuda", 0))
            for n in OUTPUT_NAMES:
                binding.bind_output(n, "cuda")
            ms, calls = time_calls(lambda io=binding, s=session: s.run_with_iobinding(io), args.seconds, device)
            o["rows"].append({"model": str(m.relative_to(out)), "runtime": f"onnxruntime {session.get_providers()[0]}", "batch": b,
                              "images_per_s": 1000 * b / ms, "ms_per_batch": ms, "calls": calls})
            save()
        runner.deactivate()
    if models and not provider and fits("ONNX Runtime CPU reference rows", 30):
        from toolkit.tasks.bench import bench

        cpu_batch, iters = (2, 2) if args.cpu_smoke else (8, 5)
        o["note"] = f"No GPU runtime for ONNX here (see above): ONNX Runtime CPU at batch {cpu_batch}, a reference only, not comparable with the GPU rows."
        for r in bench(models, [cpu_batch], warmup=1, iters=iters, threads=1 if args.cpu_smoke else None, provider="cpu"):
            o["rows"].append({"model": str(Path(r.model).relative_to(out)), "runtime": "onnxruntime CPUExecutionProvider (reference only)",
                              "batch": r.batch, "images_per_s": r.images_per_s, "ms_per_batch": r.p50_ms, "calls": iters})
        save()
    if models and fits("ONNX parity vs PyTorch fp32", 25):
        candidates = [open_runner(m, provider=provider or "cpu") for m in models]
        with no_tf32():
            parity = compare_runners(open_runner(ckpt_path, provider=device.type), candidates, chunks(host["pairs"], 2 if args.cpu_smoke else 16))
        o["parity"] = [r.to_dict() | {"model": str(Path(r.model).relative_to(out))} for r in parity.results]
        save()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu_inference.json and .md")
    parser.add_argument("--work", type=Path, help="folder for the imported checkpoint and the exports (default: a temporary one)")
    parser.add_argument("--ckpt", type=Path, help="toolkit checkpoint (default: the epoch-12 fixture, imported into the work folder)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batches", type=lambda s: tuple(int(b) for b in s.split(",")), default=(1, 64, 256))
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per row")
    parser.add_argument("--budget", type=float, default=360.0, help="seconds for the whole run; what would not fit is skipped")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-onnx", action="store_true", help="skip the exports and the ONNX rows")
    parser.add_argument("--cpu-smoke", action="store_true", help="every code path on the CPU at 32 px, batches 1 and 2 (tests the script)")
    args = parser.parse_args()
    t_start = time.perf_counter()
    if args.cpu_smoke:
        device, args.size, args.batches, args.seconds, backend = torch.device("cpu"), 32, (1, 2), 0.2, "eager"
        HALF.update(dtype=torch.bfloat16, name="bf16")
        torch.set_num_threads(1)  # a shared 2-core machine: two spinning OpenMP pools would make it 10x slower
    elif not torch.cuda.is_available():
        print(f"gpu_inference: no CUDA device visible to this PyTorch ({torch.__version__}); nothing to measure. "
              "Run it on a CUDA machine (or --cpu-smoke to exercise the script here).", file=sys.stderr)
        return 0
    else:
        device, backend = torch.device("cuda"), "inductor"
        torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-inference-work-") as tmp:
        return measure(args, args.work or Path(tmp), device, backend, t_start)


def measure(args: argparse.Namespace, work: Path, device: torch.device, backend: str, t_start: float) -> int:
    """Everything after the device is chosen; files other than the report go to `work`."""
    work.mkdir(parents=True, exist_ok=True)
    from toolkit.data.synth import synthesize
    from toolkit.net.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint, spec_of
    from toolkit.net.legacy import import_legacy
    from toolkit.verify.compare import dataset_feeds

    ckpt_path = args.ckpt or import_legacy(ROOT / "tests" / "fixtures" / "eva4-week15-epoch12.pt", work / "epoch12.pt", calibration=None).out  # speed only
    ckpt = load_checkpoint(ckpt_path)
    if spec_of(ckpt).size != (args.size, args.size):  # the network is fully convolutional: re-specify the input size
        ckpt = make_checkpoint(ckpt["model"], spec_of(ckpt).with_size(args.size), epoch=ckpt["epoch"], source=ckpt["source"])
        ckpt_path = save_checkpoint(work / f"{ckpt_path.stem}-{args.size}px.pt", ckpt)
    n_pairs = 4 if args.cpu_smoke else 64
    with tempfile.TemporaryDirectory(prefix="gpu-inference-") as tmp:  # real-looking pairs: people on rendered scenes
        synthesize(Path(tmp) / "data", backgrounds=max(1, n_pairs // 8), foregrounds=4, placements=2, size=args.size, seed=1234)
        pairs = next(iter(dataset_feeds(Path(tmp) / "data", (args.size, args.size), limit=n_pairs, batch_size=n_pairs)))
    top = max(args.batches)
    host = {k: np.ascontiguousarray(np.concatenate([pairs[k]] * -(-top // n_pairs))[:top]) for k in INPUT_NAMES} | {"pairs": pairs}
    report = {"header": header(device, args), "results": [], "parity": [], "copy": None, "skipped": [],
              "onnx": {"tried": [], "exports": [], "rows": [], "parity": [], "note": ""}}

    def save() -> None:
        write(args.out, report)

    def fits(name: str, need: float) -> bool:
        left = args.budget - (time.perf_counter() - t_start)
        if left < need:
            report["skipped"].append((name, f"time budget ({left:.0f} s left, needs ~{need:.0f})"))
        return left >= need

    report["copy"] = copy_row(host, top, args.seconds, device)
    save()
    base_cfg = Config(BASELINE, "literal")
    reference = FnRunner("literal fp32 eager (TF32 off)", build(base_cfg, ckpt, device, backend), base_cfg, spec_of(ckpt), device, exact=True)
    cost = {None: 3.0 if device.type == "cuda" else 8.0, "default": 45.0, "reduce-overhead": 40.0}  # rough seconds per batch size beyond the timing
    for cfg in configs(tuple(args.batches), compile_ok=not args.no_compile):
        if not fits(cfg.name, len(cfg.batches) * (cost[cfg.compile] + args.seconds)):
            continue
        try:
            report["parity"].append(run_config(cfg, ckpt, host, reference, device, args.seconds, backend, report["results"], save))
        except Exception as e:  # noqa: BLE001 - one failing knob (a compile error) must not lose the others' figures
            report["skipped"].append((cfg.name, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"))
            print(f"gpu_inference: {cfg.name} failed: {e}", file=sys.stderr)
        if cfg.compile:
            torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()
    if not args.no_onnx:
        try:
            onnx_section(report, ckpt_path, work, host, device, fits, save, args)
        except Exception as e:  # noqa: BLE001 - the PyTorch figures are saved; say what stopped the rest
            report["skipped"].append(("ONNX section", f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"))
            print(f"gpu_inference: ONNX section failed: {e}", file=sys.stderr)
    report["total_s"] = time.perf_counter() - t_start
    save()
    print((args.out / "gpu_inference.md").read_text())
    say_if_busy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
