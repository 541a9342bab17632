"""OpenVINO backend for `.onnx` models (`--provider openvino`, `openvino:GPU`, `openvino:NPU`).

OpenVINO is the runtime of Intel edge boxes (CPU, integrated GPU, NPU). It reads the toolkit's
`.onnx` files directly, Q/DQ int8 included, so no other file is exported for it. Opening reads
the model's interface with `onnx` (the same checks as the ONNX Runtime runner) and picks the
device: one OpenVINO does not list here falls back to its CPU with a note. The model is read
and compiled at `activate()`; the batch axis stays dynamic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError, first_line
from ..core.optional import import_optional, openvino_core
from .base import Runner
from .onnx_info import read_onnx_info

DEVICES = ("CPU", "GPU", "NPU")


def _openvino() -> Any:
    return import_optional("openvino", "OpenVINO (needed for --provider openvino)", "openvino")


def plan_device(provider: str, available: list[str]) -> tuple[str, list[str]]:
    """'openvino' / 'openvino:GPU' -> the device to compile for, and a note when it falls back.
    `available` is OpenVINO's list ("CPU", "GPU.0", ...): "GPU" matches any GPU it has."""
    _, _, asked = provider.partition(":")
    asked = (asked or "CPU").upper()
    if asked not in DEVICES:
        raise UserError(f"unknown OpenVINO device {asked!r} in --provider {provider} (expected openvino, or openvino: one of {', '.join(DEVICES)})")
    if any(d == asked or d.startswith(asked + ".") for d in available):
        return asked, []
    return "CPU", [f"OpenVINO has no {asked} device here (it has {', '.join(available) or 'none'}): using CPU"]


class OpenVinoRunner(Runner):
    backend = "openvino"

    def __init__(self, path: str | Path, *, threads: int | None = None, provider: str = "openvino", **_options: object):
        info = read_onnx_info(path)
        super().__init__(path, info.spec, info.metadata)
        self._core = openvino_core()  # device discovery now; the same core compiles at activate()
        self.threads = threads
        self.device, self.notes[:] = plan_device(provider, list(self._core.available_devices))
        self.compiled: Any = None
        self._request: Any = None

    @property
    def name(self) -> str:
        return f"{self.path.name} (openvino {self.device})"

    def _activate(self) -> None:
        core = self._core
        # f32 hint: OpenVINO's CPU plugin otherwise runs fp32 graphs in bf16 on CPUs that have it
        # (AVX-512 BF16, AMX), ~6e-3 off: not the same model. fp16 and Q/DQ int8 keep their own types.
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"} if self.device in ("CPU", "GPU") else {}
        if self.threads and self.device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            self.compiled = core.compile_model(core.read_model(str(self.path)), self.device, config)
        except RuntimeError as e:  # OpenVINO raises RuntimeError with its own multi-line text
            raise UserError(f"{self.path}: not a loadable ONNX model: OpenVINO refuses it ({first_line(e)})") from e
        self._request = self.compiled.create_infer_request()

    def _deactivate(self) -> None:
        self._request = None
        self.compiled = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            result = self._request.infer({n: feed[n] for n in self.interface.inputs})
        except RuntimeError as e:
            raise UserError(f"{self.path}: OpenVINO failed to run the model ({first_line(e)})") from e
        return {n: np.asarray(result[self.compiled.output(n)], dtype=np.float32) for n in self.interface.outputs}
