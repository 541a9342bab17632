"""ONNX Runtime backend (edge install: no torch).

The graph holds the normalisation and decoding, so this runner only feeds arrays in and reads
arrays out. The model's I/O spec comes from its `metadata_props` (written at export).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MissingDependency, UserError
from ..spec import INPUT_NAMES, OUTPUT_NAMES, IOSpec
from .base import Runner


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, provider: str = "cpu"):
        super().__init__(path)
        self.threads = threads
        self.provider = provider
        self.session = None
        self._load_metadata()

    def _load_metadata(self) -> None:
        session = self._session()
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise UserError(
                f"{self.path}: model has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                f"expected {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}"
            )
        for value in list(session.get_inputs()) + list(session.get_outputs()):
            if value.type != "tensor(float)":
                raise UserError(f"{self.path}: {value.name} is {value.type}, the toolkit's models use float32 inputs and outputs")
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)
        shape = inputs["bg"].shape
        fixed = tuple(shape[2:]) if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]) else None
        if len(shape) != 4 or shape[1] != 3:
            raise UserError(f"{self.path}: input bg has shape {shape}, expected [N, 3, H, W]")
        try:
            self.spec = IOSpec.from_metadata(self.metadata)
        except ValueError:
            if fixed is None:
                raise UserError(f"{self.path}: model has no toolkit metadata and no fixed input size") from None
            self.spec = IOSpec().with_size(*fixed)
        if fixed is not None and fixed != self.spec.size:
            raise UserError(f"{self.path}: metadata says {self.spec.height}x{self.spec.width} but the graph takes {fixed[0]}x{fixed[1]}")
        self.session = session

    def _session(self):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependency("onnxruntime", "edge") from e
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        providers = ["CPUExecutionProvider"]
        if self.provider == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        try:
            return ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.path}: not a loadable ONNX model ({first[:200]})") from e

    def _activate(self) -> None:
        if self.session is None:
            self._load_metadata()

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.session is not None
        try:
            values = self.session.run(list(OUTPUT_NAMES), {n: feed[n] for n in INPUT_NAMES})
        except Exception as e:  # ORT's own exception types (Fail, InvalidArgument, RuntimeException)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.path}: ONNX Runtime failed to run the model ({first[:200]})") from e
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(OUTPUT_NAMES, values)}
