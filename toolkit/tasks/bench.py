"""Latency and throughput per model and batch size, beside a baseline measured in the same run.

Absolute times mean little across machines (an AVX2 EPYC vs an AMX Xeon), so every row also
carries its speed relative to the baseline: PyTorch eager on the checkpoint the first model was
exported from (found through its metadata) when torch is installed, else the first model given.
The models are timed in interleaved rounds, all loaded during the timing, so every ratio is
measured over the same stretch of the machine's time.
No torch at import: `.onnx` models bench on the edge install.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError, positive
from ..core.spec import INPUT_NAMES, MAX_BATCH
from ..runtime import Runner, open_runner
from .busy import BusyCheck, LoadReader, machine_reading


@dataclass
class BenchRow:
    model: str
    backend: str
    precision: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    images_per_s: float
    speedup: float = 1.0  # images/s relative to the baseline (first model) at the same batch
    height: int = 0  # the input size timed (the model's own): a ratio means little across sizes
    width: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_batch_sizes(text: str) -> list[int]:
    """'1,8' -> [1, 8]; the sizes themselves are checked by `bench`."""
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes:
        raise UserError(f"--batch must be comma-separated integers, got {text!r}")
    return sizes


def parse_providers(provider: str) -> list[str]:
    """'cpu,openvino' -> ['cpu', 'openvino']: the runtimes `bench` and `val` run each model on."""
    providers = [p.strip() for p in provider.split(",") if p.strip()]
    if not providers:
        raise UserError(f"--provider must name at least one provider, got {provider!r}")
    return providers


@dataclass
class Target:
    """One model on one runtime, as bench times it."""

    path: str | Path
    runner: Runner
    times: dict[int, list[float]]  # batch -> seconds per call


def open_targets(models: list[str | Path], providers: list[str], threads: int | None) -> list[Target]:
    """Every `.onnx` model on every provider (`cpu,openvino`: both runtimes in one table), the
    other models once. A checkpoint runs at the first exported model's size, so the ratios compare
    like with like. ONNX Runtime's threads do not spin here: spinning threads of one runtime eat the
    time of the next one timed (the ratios would lie)."""
    from ..verify.compare import open_at

    def options(path: str | Path, provider: str) -> dict[str, Any]:  # the OpenVINO runner takes and ignores `spinning`
        onnx = Path(path).suffix.lower() == ".onnx"
        return {"threads": threads, "provider": provider} | ({"spinning": False} if onnx else {})

    pairs = [(m, p) for m in models for p in (providers if Path(m).suffix.lower() == ".onnx" else
                                               [_torch_provider(providers)] if Path(m).suffix.lower() == ".pt" else providers[:1])]
    exported = {i: open_runner(m, **options(m, p)) for i, (m, p) in enumerate(pairs) if Path(m).suffix.lower() != ".pt"}
    size = next(iter(exported.values())).spec.size if exported else None
    runners = [exported[i] if i in exported else open_at(m, size, **options(m, p)) for i, (m, p) in enumerate(pairs)]
    for (m, p), r in zip(pairs, runners):
        if Path(m).suffix.lower() == ".pt" and p == "cpu" and any(q in ("cuda", "tensorrt") for q in providers):
            r.notes.append(f"{Path(m).name}: PyTorch sees no CUDA device here: the checkpoint's row runs on the CPU")
    return [Target(m, r, {}) for (m, _), r in zip(pairs, runners)]


def _torch_provider(providers: list[str]) -> str:
    """Where a checkpoint row runs: PyTorch on CUDA when a GPU provider is asked and PyTorch sees
    a GPU, else on the CPU (the row is the reference; `--provider openvino` means nothing to it)."""
    if not any(p in ("cuda", "tensorrt", "auto") for p in providers):
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def time_interleaved(targets: list[Target], batches: list[int], warmup: int, iters: int) -> None:
    """Time every target at every batch in interleaved rounds (one call each per round), so a
    machine that slows down or speeds up during the run weighs on every target alike."""
    rng = np.random.default_rng(0)
    try:
        for t in targets:  # every model loaded before any is timed: a bad last model fails first
            t.runner.activate()
        for b in batches:
            feeds = []
            for t in targets:
                h, w = t.runner.spec.size
                feeds.append({k: rng.random((b, 3, h, w), dtype=np.float32) for k in INPUT_NAMES})
                for _ in range(warmup):
                    t.runner.infer(feeds[-1])
                t.times[b] = []
            for _ in range(iters):
                for t, feed in zip(targets, feeds):
                    t0 = time.perf_counter()
                    t.runner.infer(feed)
                    t.times[b].append(time.perf_counter() - t0)
    finally:
        for t in targets:
            t.runner.deactivate()


def check_timing(batches: list[int], warmup: int, iters: int) -> None:
    """The timing options `bench` and `val` share: batch sizes in range, positive counts."""
    bad = [b for b in batches if not 0 < b <= MAX_BATCH]
    if bad or not batches:
        raise UserError(f"--batch: batch sizes must be in 1..{MAX_BATCH}, got {','.join(map(str, bad or batches))}")
    positive(iters, "--iters")
    if warmup < 0:
        raise UserError(f"--warmup must not be negative, got {warmup}")


def bench(
    models: list[str | Path],
    batches: list[int],
    *,
    warmup: int = 3,
    iters: int = 20,
    threads: int | None = None,
    provider: str = "cpu",
    on_row: Callable[[BenchRow], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    load: LoadReader = machine_reading,
) -> list[BenchRow]:
    """Rows per model (and provider, for `.onnx` models and a comma list such as `cpu,openvino`)
    and batch size, with images/s relative to the first row's at the same batch. `on_note` gets
    what each runtime chose or fell back to (after loading: a provider that is not there), once
    each, before the rows, and a warning when the machine was busy (`toolkit.tasks.busy`; `load`
    reads the load average); the backend column names the execution provider that ran. images/s
    is the batch over the median call time, the statistic of the p50 beside it."""
    if not models:
        raise UserError("bench: give at least one --model")
    providers = parse_providers(provider)
    check_timing(batches, warmup, iters)
    positive(threads, "bench: --threads")
    targets = open_targets(models, providers, threads)
    busy = BusyCheck(load).start()
    time_interleaved(targets, batches, warmup, iters)
    if on_note:
        busy_line = busy.note("times and ratios")
        for note in dict.fromkeys([n for t in targets for n in t.runner.notes] + ([busy_line] if busy_line else [])):
            on_note(note)
    rows: list[BenchRow] = []
    baseline: dict[int, float] = {}
    for t in targets:
        h, w = t.runner.spec.size
        for b in batches:
            ms = np.asarray(t.times[b]) * 1000
            ips = b * 1000 / float(np.percentile(ms, 50))  # the p50's statistic: the two agree
            baseline.setdefault(b, ips)
            row = BenchRow(str(t.path), t.runner.backend_used, t.runner.precision, b, float(np.percentile(ms, 50)),
                           float(np.percentile(ms, 90)), float(np.percentile(ms, 99)), ips, ips / baseline[b], h, w)
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


def with_baseline(models: list[Path], baseline: Path | None) -> tuple[list[Path], str]:
    """Put the baseline first: the given checkpoint, or the first model's source checkpoint."""
    if baseline is not None:
        return [baseline, *[m for m in models if m != baseline]], f"baseline: {baseline.name} (given)"
    first = models[0]
    if first.suffix == ".pt":
        return models, f"baseline: {first.name} (PyTorch eager)"
    try:
        import torch  # noqa: F401
    except ImportError:
        return models, f"baseline: {first.name} (PyTorch is not installed, so not eager PyTorch)"
    from ..verify.parity import find_reference

    try:
        ref = find_reference(first, open_runner(first))  # metadata only: nothing is loaded
    except UserError:
        return models, f"baseline: {first.name} (its source checkpoint was not found; pass --baseline CKPT)"
    return [ref, *models], f"baseline: {ref.name} (PyTorch eager, the checkpoint {first.name} came from)"
