"""The export formats, one declarative table; each export runs wrapped so a failure is one line.

A row names the option that asks for it, the file it writes and the function that writes it.
fp16, int8 and TensorRT rows join this table as those formats land.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class ExportFormat:
    key: str  # the CLI flag that selects it ("onnx" is always on)
    filename: str
    precision: str
    description: str
    run: Callable[[Path, Path], tuple[Path, Any]]


def _onnx_fp32(checkpoint: Path, out: Path) -> tuple[Path, Any]:
    from .onnx import export_onnx

    return export_onnx(checkpoint, out)


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", "model.onnx", "fp32", "ONNX, fp32, normalisation and decoding in-graph", _onnx_fp32),
)


@dataclass
class ExportOutcome:
    format: ExportFormat
    path: Path | None
    detail: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_exports(checkpoint: Path, out_dir: Path, keys: list[str]) -> list[ExportOutcome]:
    """Run the selected formats in table order; a failing format is recorded, not raised."""
    outcomes = []
    for fmt in FORMATS:
        if fmt.key not in keys:
            continue
        try:
            path, detail = fmt.run(checkpoint, out_dir / fmt.filename)
            outcomes.append(ExportOutcome(fmt, path, detail))
        except ToolkitError as e:
            outcomes.append(ExportOutcome(fmt, None, error=str(e)))
    return outcomes
