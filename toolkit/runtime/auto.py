"""`--provider auto`: the fastest runtime for a model on this machine, measured, and said.

Which runtime wins depends on the machine and the graph (OpenVINO and ONNX Runtime run the folded
fp32 graph within ~20 % of each other on a 2-core EPYC, in either order by precision; a GPU
provider wins by far where there is one), so it is timed, not guessed: each runtime this machine
has for the file opens the model, runs a few warm-up calls, then the candidates are timed in
interleaved rounds at batch 1 and the fastest median wins. A few seconds at start (the first run
on ONNX Runtime's TensorRT provider builds its engine first: minutes, then cached); the note says
what was measured; a runtime that cannot load the model is left out with a note. A checkpoint runs on CUDA when PyTorch sees a GPU, else on the CPU (no timing:
PyTorch is the reference, not a deployment runtime). An engine has one runtime.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError

ROUNDS = 5
WARMUP = 2


def candidates(path: Path) -> list[str]:
    """The providers this machine has for an `.onnx` file, CPU first."""
    import onnxruntime as ort

    found = ["cpu"]
    if importlib.util.find_spec("openvino") is not None:
        from ..core.optional import openvino_core

        devices = list(openvino_core().available_devices)  # "CPU", "GPU.0", "NPU": an Intel box's iGPU and NPU too
        found += [f"openvino:{d}" if d != "CPU" else "openvino" for d in ("CPU", "GPU", "NPU")
                  if any(x == d or x.startswith(d + ".") for x in devices)]
    available = ort.get_available_providers()
    found += [p for p, ep in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")) if ep in available]
    return found


def _time(runners: dict[str, Any]) -> dict[str, float]:
    """Median ms per call of each activated runner at batch 1, interleaved rounds."""
    rng = np.random.default_rng(0)
    first = next(iter(runners.values()))
    io, size = first.interface, first.spec.size
    feed = {k: rng.random((1, *io.shape(k, size)), dtype=np.float32) for k in io.inputs}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        for _ in range(WARMUP):
            runner.infer(feed)
    for _ in range(ROUNDS):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.infer(feed)
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) * 1000 for name, t in times.items()}


def pick_provider(path: str | Path, opener: Callable[..., Any], *, part: str = "whole", **options: Any) -> tuple[str, str]:
    """(the provider `auto` means for the model file `path` here, the note that says why).
    `opener`: `open_runner` (passed in: the runner protocol imports this module, not the other
    way round). `part`: what the file holds (a fixed camera times its frame half: what runs per frame)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".engine":
        return "cpu", "--provider auto: an engine runs on TensorRT, its only runtime"
    if suffix == ".pt":
        from ..core.optional import import_optional

        torch = import_optional("torch", "PyTorch (needed to run a .pt checkpoint)", "train")
        provider = "cuda" if torch.cuda.is_available() else "cpu"
        return provider, f"--provider auto: PyTorch on {provider.upper()}"
    names = candidates(path)
    shadowed = _shadowed_gpu_build()
    if len(names) == 1:
        from ..core.install import install_hint

        return "cpu", (f"--provider auto: ONNX Runtime's CPU provider, the only runtime here ({install_hint('openvino')} "
                       f"to try OpenVINO){shadowed}")
    runners, left_out = {}, []
    try:
        for name in names:
            try:
                runner = opener(path, part=part, **(options | {"provider": name})).activate()
            except UserError as e:  # this runtime cannot load the model: the others still can
                left_out.append(f"{name} left out: {getattr(e, 'reason', e)}")
                continue
            runners[name] = runner  # a listed provider that does not load raised above: it never falls back
        if not runners:
            raise UserError(f"{path}: --provider auto: no runtime here loads the model ({'; '.join(left_out)})")
        ms = _time(runners)
    finally:
        for runner in runners.values():
            runner.deactivate()
    best = min(ms, key=ms.__getitem__)
    others = [f"{n} {t:.1f} ms" for n, t in sorted(ms.items(), key=lambda kv: kv[1]) if n != best] + left_out
    what = "frame" if part == "frame" else "pair"
    rest = f"; {', '.join(others)}" if others else ""
    return best, f"--provider auto: {best} ({ms[best]:.1f} ms per {what} at batch 1, timed here{rest}){shadowed}"


def _shadowed_gpu_build() -> str:
    """"; <why>: <fix>" when onnxruntime-gpu is installed but the CPU build is the one imported
    (its GPU providers were never candidates), else ""."""
    import onnxruntime as ort

    from .gpu_libs import ort_gpu_missing, shadowed_gpu_build

    available = ort.get_available_providers()
    return f"; {': '.join(ort_gpu_missing(available))}" if shadowed_gpu_build(available) else ""
