"""The export formats, one declarative table; each export runs wrapped so a failure is one line.

A row names the option that asks for it, the file(s) it writes, what it needs from earlier
rows, a check of its options that runs before anything is written (`preflight`), and the
function that writes it (`run`, given one `ExportContext`). `run_exports` runs the selected
rows in table order (a row's needs come before it), passing each the paths the earlier rows
produced: fp16 and int8 convert the fp32 ONNX, engines are built from every ONNX precision of
the run, the Triton repository takes the ONNX model and an engine when one was built.

Nothing here imports torch at module level: only the `onnx` row needs it (it reads the
checkpoint); fp16/int8 work from the fp32 `.onnx`.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import CheckFailed, MissingDependency, ToolkitError, UserError

DEFAULT_BATCH = (1, 8, 32)
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_TRITON_NAME = "eva4"
TRITON_MAX_BATCH = 32
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
TRITON_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # Triton's model folder names (as export/triton.py)


@dataclass
class ExportOptions:
    """What the user asked for; `validate()` checks it (UserError) before anything is written."""

    graph: str = "folded"  # export.onnx.GRAPHS: the folded tail (faster) or the literal layers
    fp16: bool = False
    int8: bool = False
    engine: bool = False
    triton: Path | None = None  # a Triton model repository folder
    triton_name: str = DEFAULT_TRITON_NAME
    calib: Path | None = None  # a data set (folder or zip, original layout) for int8 calibration and the checks
    int8_target: str = "cpu"
    calib_method: str = "entropy"
    calib_pairs: int = 32
    gate_pairs: int = 16
    force: bool = False
    batch: tuple[int, int, int] = DEFAULT_BATCH
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Path | None = None  # default: <out>/tensorrt.timing-cache
    _validated: bool = field(default=False, init=False, repr=False, compare=False)

    @classmethod
    def from_keys(cls, keys: Sequence[str]) -> ExportOptions:
        """Options that select the given format keys ("onnx" is always on)."""
        known = {f.key for f in FORMATS}
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise UserError(f"unknown export format(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if "triton" in keys:
            raise UserError("the triton format needs a repository folder: use ExportOptions(triton=DIR)")
        return cls(fp16="fp16" in keys, int8="int8" in keys, engine="engine" in keys)

    def selected(self) -> list[str]:
        """Format keys this run writes, in table order."""
        chosen = {"onnx", *(k for k, on in (("fp16", self.fp16), ("int8", self.int8), ("engine", self.engine),
                                             ("triton", self.triton is not None)) if on)}
        return [f.key for f in FORMATS if f.key in chosen]

    def validate(self) -> ExportOptions:
        from .int8 import METHODS, TARGETS, check_calibration_data, check_pair_counts
        from .onnx import check_graph

        check_graph(self.graph)
        if self.int8_target not in TARGETS:
            raise UserError(f"--int8-target must be one of {', '.join(TARGETS)}, got {self.int8_target!r}")
        if self.calib_method not in METHODS:
            raise UserError(f"--calib-method must be one of {', '.join(METHODS)}, got {self.calib_method!r}")
        check_pair_counts(self.calib_pairs, self.gate_pairs)
        self.batch = parse_batch(self.batch)
        if int(self.workspace_mb) <= 0:
            raise UserError(f"--workspace must be a positive number of MiB, got {self.workspace_mb}")
        if self.calib is not None:
            if not self.int8 and not self.fp16:
                raise UserError("--calib is used by --int8 (calibration and gate) and --fp16 (its check): give one of them")
            check_calibration_data(self.calib)
        if self.engine and self.int8 and self.int8_target != "tensorrt":
            raise UserError("--engine builds int8 engines from a TensorRT-target int8 model (zero points 0): "
                            "add --int8-target tensorrt, or drop --int8")
        for fmt in FORMATS:
            if fmt.key in self.selected() and fmt.preflight is not None:
                fmt.preflight(self)
        self._validated = True
        return self


def parse_batch(value: str | Sequence[int]) -> tuple[int, int, int]:
    """'1,8,32' or (1, 8, 32) -> a (min, opt, max) profile with 1 <= min <= opt <= max."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise UserError(f"--batch must be min,opt,max (three whole numbers), got {value!r}") from None
    else:
        nums = [int(v) for v in value]
    if len(nums) != 3:
        raise UserError(f"--batch must be min,opt,max (three numbers), got {','.join(map(str, nums))}")
    lo, opt, hi = nums
    if not 1 <= lo <= opt <= hi:
        raise UserError(f"--batch must satisfy 1 <= min <= opt <= max, got {lo},{opt},{hi}")
    from .onnx import MAX_BATCH

    if hi > MAX_BATCH:
        raise UserError(f"--batch max {hi} exceeds the ONNX export's dynamic batch limit {MAX_BATCH}")
    return lo, opt, hi


@dataclass
class Artifact:
    """One file (or folder) a row wrote."""

    path: Path
    precision: str
    summary: str  # the check figures, one line
    detail: Any = None  # the row's own report (OnnxCheck, Fp16Report, Int8Report, EngineReport, ...)
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportContext:
    """Everything a row's `run` gets: the checkpoint, the output folder, the options, what the
    rows before it produced, and (made once, on first use) the validation/calibration pairs."""

    checkpoint: Path
    out_dir: Path
    options: ExportOptions
    produced: dict[str, list[Artifact]] = field(default_factory=dict)  # row key -> what it wrote
    _pairs: Any = None

    def onnx_model(self, precision: str) -> Path | None:
        """The ONNX file of `precision` written earlier in this run, if any."""
        key = {"fp32": "onnx"}.get(precision, precision)
        for artifact in self.produced.get(key, []):
            if artifact.precision == precision:
                return artifact.path
        return None

    @property
    def fp32_onnx(self) -> Path:
        path = self.onnx_model("fp32")
        if path is None:  # run_exports never runs a row whose needs failed
            raise UserError("the fp32 ONNX model was not exported in this run")
        return path

    def pairs(self) -> Any:
        """The `CalibrationPairs` (calibration part, held-out gate part) at the model's size:
        from `--calib`, else a small synthetic set made in a temporary folder."""
        if self._pairs is None:
            from toolkit.runtime.onnx_runner import OnnxRunner

            from .int8 import load_pairs, synthetic_pairs

            runner = OnnxRunner(self.fp32_onnx)
            size = runner.spec.size  # type: ignore[union-attr]
            o = self.options
            if o.calib is not None:
                self._pairs = load_pairs(o.calib, size, calib_pairs=o.calib_pairs, gate_pairs=o.gate_pairs)
            else:
                with tempfile.TemporaryDirectory(prefix="toolkit-calib-") as tmp:
                    self._pairs = synthetic_pairs(tmp, size, calib_pairs=o.calib_pairs, gate_pairs=o.gate_pairs)
        return self._pairs


@dataclass(frozen=True)
class ExportFormat:
    key: str  # the option that selects it ("onnx" is always on)
    filename: str  # what it writes, relative to the output folder (a pattern for engines)
    precision: str
    description: str
    run: Callable[[ExportContext], list[Artifact]]
    needs: tuple[str, ...] = ()  # rows that must have succeeded before this one runs
    uses: tuple[str, ...] = ()  # rows whose outputs it takes when they ran (optional)
    extra: str | None = None  # the pip extra an optional library comes from
    preflight: Callable[[ExportOptions], None] | None = None


# -- the rows ---------------------------------------------------------------------------------
def _onnx_fp32(ctx: ExportContext) -> list[Artifact]:
    from .onnx import export_onnx

    path, check = export_onnx(ctx.checkpoint, ctx.out_dir / "model.onnx", graph=ctx.options.graph)
    summary = (f"{ctx.options.graph} graph; ONNX Runtime vs PyTorch: max abs diff {check.max_abs_diff:.2e}, "
               f"mean {check.mean_abs_diff:.2e} on {check.inputs} inputs")
    return [Artifact(path, "fp32", summary, check)]


def _fp16(ctx: ExportContext) -> list[Artifact]:
    from .fp16 import convert_fp16
    from .onnx import batches

    pairs = ctx.pairs()
    path, report = convert_fp16(ctx.fp32_onnx, ctx.out_dir / "model.fp16.onnx", batches(pairs.everything()))
    return [Artifact(path, "fp16", report.summary() + f" ({pairs.source} data)", report, report.notes)]


def _int8(ctx: ExportContext) -> list[Artifact]:
    from .int8 import quantize_int8

    o = ctx.options
    path, report = quantize_int8(ctx.fp32_onnx, ctx.out_dir / "model.int8.onnx", ctx.pairs(),
                                 target=o.int8_target, method=o.calib_method, force=o.force)
    assert path is not None
    return [Artifact(path, "int8", report.summary(), report, report.notes)]


def _tensorrt_preflight(options: ExportOptions) -> None:
    if importlib.util.find_spec("tensorrt") is None:
        raise MissingDependency("TensorRT (needed for --engine)", "gpu")


def _engines(ctx: ExportContext) -> list[Artifact]:
    from toolkit.fsutil import sha256_file

    from .tensorrt import build_engine

    o = ctx.options
    cache = o.timing_cache or ctx.out_dir / "tensorrt.timing-cache"
    digest = sha256_file(ctx.checkpoint)
    built = []
    for precision in ONNX_PRECISIONS:
        source = ctx.onnx_model(precision)
        if source is None:
            continue
        out = ctx.out_dir / f"model.{precision}.engine"
        report = build_engine(source, out, precision=precision, batch=o.batch, workspace_mb=o.workspace_mb,
                              timing_cache=cache, checkpoint_sha256=digest)
        summary = (f"TensorRT {report.tensorrt_version} on {report.gpu_name}, batch {','.join(map(str, report.batch))}, "
                   f"built in {report.build_seconds:.1f} s from {source.name}")
        built.append(Artifact(out, precision, summary, report, list(report.notes)))
    return built


def _triton_preflight(options: ExportOptions) -> None:
    if not TRITON_NAME.match(options.triton_name) or options.triton_name in (".", ".."):
        raise UserError(f"Triton model name {options.triton_name!r}: use letters, digits, '_', '.', '-'")
    if options.triton is not None and options.triton.exists() and not options.triton.is_dir():
        raise UserError(f"{options.triton}: exists and is not a folder")


def _triton(ctx: ExportContext) -> list[Artifact]:
    from .triton import write_triton_repo

    o = ctx.options
    assert o.triton is not None
    engines = {a.precision: a.path for a in ctx.produced.get("engine", [])}
    engine = next((engines[p] for p in ("fp16", "fp32", "int8") if p in engines), None)
    max_batch = min(TRITON_MAX_BATCH, o.batch[2]) if engine is not None else TRITON_MAX_BATCH
    model_dir = write_triton_repo(o.triton, o.triton_name, ctx.fp32_onnx, engine=engine, max_batch_size=max_batch)
    plan = f" and {engine.name} as {o.triton_name}_trt" if engine is not None else ""
    return [Artifact(model_dir, "fp32", f"Triton repository {o.triton}: model.onnx as {o.triton_name}{plan}, max_batch_size {max_batch}")]


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", "model.onnx", "fp32", "ONNX, fp32, normalisation and decoding in-graph", _onnx_fp32),
    ExportFormat("fp16", "model.fp16.onnx", "fp16", "ONNX, fp16 weights and activations, fp32 I/O", _fp16, needs=("onnx",)),
    ExportFormat("int8", "model.int8.onnx", "int8", "ONNX, int8 Q/DQ (cpu or tensorrt target), accuracy-gated", _int8, needs=("onnx",)),
    ExportFormat("engine", "model.<precision>.engine", "per source", "TensorRT engine per ONNX precision of the run (+ .json sidecar)",
                 _engines, needs=("onnx",), uses=("fp16", "int8"), extra="gpu", preflight=_tensorrt_preflight),
    ExportFormat("triton", "<triton dir>/<name>/", "fp32 (+ engine)", "Triton model repository (ONNX model, plus the engine when built)",
                 _triton, needs=("onnx",), uses=("engine",), preflight=_triton_preflight),
)


@dataclass
class ExportOutcome:
    format: ExportFormat
    artifacts: list[Artifact] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0  # of the error: 2 bad input / missing library, 1 a failed check

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def path(self) -> Path | None:
        return self.artifacts[0].path if self.artifacts else None

    @property
    def detail(self) -> Any:
        return self.artifacts[0].detail if self.artifacts else None


def run_exports(
    checkpoint: Path, out_dir: Path, keys: Sequence[str] | None = None, options: ExportOptions | None = None
) -> list[ExportOutcome]:
    """Run the selected formats in table order; a failing format is recorded, not raised.

    Give `options` (what the CLI does), or `keys` (format keys, default options). A row whose
    needs failed is not run (its outcome says why). `options` are validated first: bad values
    raise UserError before anything is written.
    """
    if options is None:
        options = ExportOptions.from_keys(list(keys or ["onnx"]))
    if not options._validated:
        options.validate()
    ctx = ExportContext(Path(checkpoint), Path(out_dir), options)
    outcomes: list[ExportOutcome] = []
    failed: set[str] = set()
    for fmt in FORMATS:
        if fmt.key not in options.selected():
            continue
        missing = [k for k in fmt.needs if k in failed or k not in ctx.produced]
        if missing:
            failed.add(fmt.key)
            outcomes.append(ExportOutcome(fmt, error=f"{fmt.key}: not run, it needs {', '.join(missing)}, which failed", exit_code=1))
            continue
        try:
            artifacts = fmt.run(ctx)
        except ToolkitError as e:
            failed.add(fmt.key)
            outcomes.append(ExportOutcome(fmt, error=_one_line(str(e)), exit_code=e.exit_code))
            continue
        except ImportError as e:  # an optional library missing where no preflight caught it
            failed.add(fmt.key)
            hint = f": pip install 'toolkit[{fmt.extra}]'" if fmt.extra else ""
            outcomes.append(ExportOutcome(fmt, error=_one_line(f"{fmt.key}: {e}{hint}"), exit_code=MissingDependency.exit_code))
            continue
        ctx.produced[fmt.key] = artifacts
        outcomes.append(ExportOutcome(fmt, artifacts))
    return outcomes


def exit_code(outcomes: Sequence[ExportOutcome]) -> int:
    """0 when all succeeded; 2 when any failure is bad input or a missing library; else 1."""
    codes = [o.exit_code for o in outcomes if not o.ok]
    if not codes:
        return 0
    return UserError.exit_code if UserError.exit_code in codes else CheckFailed.exit_code


def _one_line(text: str) -> str:
    return " ".join(text.split())
