"""What an export run shares between the rows of `export.formats`: the files written so far
(`Artifact`) and the run's source, options and pairs (`ExportContext`). Kept apart from the table
so the rows' helpers (`export.halves_rows`) can use them without importing the table back."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.core.errors import UserError

from .options import ExportOptions

if TYPE_CHECKING:
    from toolkit.data.calib import CalibrationPairs
    from toolkit.verify.compare import ParityResult

    from .fp16 import Fp16Report
    from .int8 import Int8Report
    from .tensorrt import EngineReport

    ReportOfRow = ParityResult | Fp16Report | Int8Report | EngineReport


@dataclass
class Artifact:
    """One file (or folder) a row wrote, or (`written` False) the given ONNX model it used."""

    path: Path
    precision: str
    summary: str  # the check figures, one line
    detail: ReportOfRow | None = None  # the row's own report
    notes: list[str] = field(default_factory=list)
    written: bool = True
    part: str = "whole"  # or "bg" / "frame": a half of a fixed-camera model beside the whole model


@dataclass
class ExportContext:
    """Everything a row's `run` gets: the source (a checkpoint, or an exported `.onnx`), the
    output folder, the options, what the rows before it produced, and (made once, on first use)
    the validation/calibration pairs."""

    source: Path
    out_dir: Path
    options: ExportOptions
    produced: dict[str, list[Artifact]] = field(default_factory=dict)  # row key -> what it wrote
    say: Callable[[str], None] = field(default=lambda _: None, repr=False)  # progress of long rows (the int8 search)
    calibration: CalibrationPairs | None = None

    def place(self, filename: str, root: str, precision: str = "") -> Path:
        """Where a row of the table writes: its `filename` (for `precision`) under its `root`
        ("out": the --out folder, "triton": the repository); `formats.target` looks the row up."""
        folder = self.options.triton if root == "triton" else self.out_dir
        assert folder is not None  # the triton row only runs with a repository folder
        return folder / filename.format(precision=precision, name=self.options.triton_name)

    @property
    def from_onnx(self) -> bool:
        """The source is an exported `.onnx`: the rows that need only ONNX run, without PyTorch."""
        return self.source.suffix.lower() == ".onnx"

    def checkpoint_sha256(self) -> str:
        """The source checkpoint's SHA-256: of the `.pt`, or as the given ONNX model records it."""
        from toolkit.core.fsutil import sha256_file

        if not self.from_onnx:
            return sha256_file(self.source)
        from toolkit.runtime.onnx_info import read_onnx_info

        return read_onnx_info(self.source).metadata.get("toolkit.checkpoint_sha256", "")

    def onnx_model(self, precision: str) -> Path | None:
        """The ONNX file of `precision` written (or given) earlier in this run, if any."""
        for artifacts in self.produced.values():
            for artifact in artifacts:
                if artifact.precision == precision and artifact.path.suffix == ".onnx" and artifact.part == "whole":
                    return artifact.path
        return None

    def has_halves(self, model: Path) -> bool:
        """The halves of `model` was written (or found beside the given model) in this run."""
        from toolkit.runtime.fixed import half_paths

        halves = set(half_paths(model))
        return sum(a.path in halves for artifacts in self.produced.values() for a in artifacts) == 2

    @property
    def fp32_onnx(self) -> Path:
        path = self.onnx_model("fp32")
        if path is None:  # run_exports never runs a row whose needs failed: only a given model can lack it
            raise UserError(f"{self.source}: is not an fp32 model; fp16, int8 and Triton are made from the fp32 export")
        return path

    def pairs(self) -> CalibrationPairs:
        """The calibration part and held-out gate part at the model's size: from `--calib`, else
        a small synthetic set made in a temporary folder."""
        if self.calibration is None:
            from toolkit.data.calib import load_pairs, synthetic_pairs
            from toolkit.runtime.onnx_info import read_onnx_info

            size = read_onnx_info(self.fp32_onnx).spec.size
            o = self.options
            if o.calib is not None:
                self.calibration = load_pairs(o.calib, size, calib_pairs=o.calib_pairs, gate_pairs=o.gate_pairs)
            else:
                with tempfile.TemporaryDirectory(prefix="toolkit-calib-") as tmp:
                    self.calibration = synthetic_pairs(tmp, size, calib_pairs=o.calib_pairs, gate_pairs=o.gate_pairs)
        return self.calibration


