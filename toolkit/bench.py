"""Latency and throughput per model and batch size, beside a baseline measured in the same run.

Absolute times mean little across machines (an AVX2 EPYC vs an AMX Xeon), so every row also
carries its speed relative to the baseline: PyTorch eager on the checkpoint the first model was
exported from (found through its metadata) when torch is installed, else the first model given.
No torch at import: `.onnx` models bench on the edge install.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .runtime import open_runner
from .spec import INPUT_NAMES, MAX_BATCH


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


def bench(
    models: list[str | Path],
    batches: list[int],
    *,
    warmup: int = 3,
    iters: int = 20,
    threads: int | None = None,
    provider: str = "cpu",
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    if not models:
        raise UserError("bench: give at least one --model")
    bad = [b for b in batches if not 0 < b <= MAX_BATCH]
    if bad or not batches:
        raise UserError(f"--batch: batch sizes must be in 1..{MAX_BATCH}, got {','.join(map(str, bad or batches))}")
    if iters <= 0:
        raise UserError(f"--iters must be a positive number, got {iters}")
    if warmup < 0:
        raise UserError(f"--warmup must not be negative, got {warmup}")
    if threads is not None and threads <= 0:
        raise UserError(f"bench: --threads must be a positive number, got {threads}")
    rows: list[BenchRow] = []
    baseline: dict[int, float] = {}
    rng = np.random.default_rng(0)
    # Every model is opened and loaded once (then freed: one model is held at a time) before any
    # is timed, so a bad last model is an error at once, not after minutes of timing the others.
    # A checkpoint runs at the first exported model's size, so the ratios compare like with like.
    from .compare import open_at

    exported = [open_runner(m, threads=threads, provider=provider) for m in models if Path(m).suffix.lower() != ".pt"]
    size = exported[0].spec.size if exported else None
    runners = [open_at(m, size, threads=threads, provider=provider) if size else open_runner(m, threads=threads, provider=provider)
               for m in models]
    for runner in runners:
        with runner:
            pass
    for i, (path, runner) in enumerate(zip(models, runners)):
        with runner:
            h, w = runner.spec.size
            for b in batches:
                feed = {k: rng.random((b, 3, h, w), dtype=np.float32) for k in INPUT_NAMES}
                for _ in range(warmup):
                    runner.infer(feed)
                times = []
                for _ in range(iters):
                    t0 = time.perf_counter()
                    runner.infer(feed)
                    times.append(time.perf_counter() - t0)
                t = np.asarray(times) * 1000
                ips = b * iters / (t.sum() / 1000)
                if i == 0:
                    baseline[b] = ips
                row = BenchRow(str(path), runner.backend, runner.precision, b, float(np.percentile(t, 50)),
                               float(np.percentile(t, 90)), float(np.percentile(t, 99)), ips, ips / baseline[b], h, w)
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
    from .compare import find_reference

    try:
        ref = find_reference(first, open_runner(first))  # metadata only: nothing is loaded
    except UserError:
        return models, f"baseline: {first.name} (its source checkpoint was not found; pass --baseline CKPT)"
    return [ref, *models], f"baseline: {ref.name} (PyTorch eager, the checkpoint {first.name} came from)"
