"""The export formats, one declarative table; each export runs wrapped so a failure is one line.

A row names the option that asks for it (`selected`), the file(s) it writes (`filename`, which
`target` turns into the path the row writes), what it needs from earlier rows, a
check that runs before anything is written (`preflight`), and the function that writes it (`run`,
given one `ExportContext`). The options themselves are checked in export.options. `run_exports` runs the selected
rows in table order (a row's needs come before it), passing each the paths the earlier rows
produced: fp16 and int8 convert the fp32 ONNX, engines are built from every ONNX precision of
the run, the Triton repository takes the ONNX model and an engine when one was built. Every
ONNX precision comes with its fixed-camera halves (`X.bg.onnx`, `X.frame.onnx`: export.fixed_camera),
listed as artifacts with their `part`; engines are built for the halves too.

Nothing here imports torch at module level: only the `onnx` row needs it (it reads the
checkpoint); fp16/int8 work from the fp32 `.onnx`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.core.errors import CheckFailed, MissingDependency, ToolkitError, UserError
from toolkit.core.install import install_hint

from .context import Artifact, ExportContext
from .halves_rows import derived_halves, given_halves, halves_artifacts
from .options import ExportOptions

if TYPE_CHECKING:
    from toolkit.verify.compare import ParityResult

    from .fp16 import Fp16Report
    from .int8 import Int8Report
    from .tensorrt import EngineReport

    ReportOfRow = ParityResult | Fp16Report | Int8Report | EngineReport

ONNX_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportFormat:
    key: str  # the row's name (`selected` says which options ask for it; "onnx" is always on)
    filename: str  # what it writes under `root` ({precision}: each engine's; {name}: the Triton model's)
    description: str
    run: Callable[[ExportContext], list[Artifact]]
    needs: tuple[str, ...] = ()  # rows that must have succeeded before this one runs
    uses: tuple[str, ...] = ()  # rows whose outputs it takes when they ran (optional)
    extra: str | None = None  # the pip extra an optional library comes from
    preflight: Callable[[ExportOptions], None] | None = None
    root: str = "out"  # "out": the --out folder; "triton": the --triton repository
    selected: Callable[[ExportOptions], bool] = lambda options: True  # whether a run writes it


# -- the rows ---------------------------------------------------------------------------------
def _onnx_fp32(ctx: ExportContext) -> list[Artifact]:
    if ctx.from_onnx:
        return [_given_onnx(ctx.source), *given_halves(ctx.source)]
    from .fixed_camera import export_halves
    from .onnx import export_onnx

    o = ctx.options
    path, check = export_onnx(ctx.source, target(ctx, "onnx"), graph=o.graph, size=o.image_size, dynamic=o.dynamic_size)
    at = f"any multiple of 4 (nominal {_size_of(path)}; checked at two sizes)" if o.dynamic_size else _size_of(path)
    summary = f"{o.graph} graph at {at}; ONNX Runtime vs PyTorch: {_diffs(check)}"
    bg, frame, pair_check = export_halves(ctx.source, path)
    return [Artifact(path, "fp32", summary, check), *halves_artifacts(bg, frame, "fp32", f"vs PyTorch: {_diffs(pair_check)}")]


def _diffs(check: ParityResult) -> str:
    """The fp32 check's figures ('max abs diff 2.1e-06 <= 1e-04 on 2 pairs, mean 3.0e-07'), and
    its self-test's verdict."""
    mean = sum(check.mean_abs.values()) / len(check.mean_abs)  # both outputs have as many values
    return f"{check.judged()}, mean {mean:.2e}{check.and_self_test}"


def _size_of(path: Path) -> str:
    """'128x224': the input size an exported model takes."""
    from toolkit.runtime.onnx_info import read_onnx_info

    h, w = read_onnx_info(path).spec.size
    return f"{h}x{w}"


def _given_onnx(path: Path) -> Artifact:
    """The exported model the run was given, used as it is (checked as the toolkit's own)."""
    from toolkit.runtime.onnx_info import read_onnx_info

    info = read_onnx_info(path, require_spec=True)
    precision = info.metadata.get("toolkit.precision", "fp32")
    graph = info.metadata.get("toolkit.graph", "?")
    return Artifact(path, precision, f"the given model ({graph} graph), used as it is", written=False)


def _fp16(ctx: ExportContext) -> list[Artifact]:
    from toolkit.verify.compare import batches

    from .fixed_camera import fp16_halves
    from .fp16 import convert_fp16

    pairs = ctx.pairs()
    feeds = batches(pairs.everything())
    path, report = convert_fp16(ctx.fp32_onnx, target(ctx, "fp16"), feeds)
    whole = Artifact(path, "fp16", report.summary() + f" ({pairs.described})", report, report.notes)
    return [whole, *derived_halves(ctx, whole, lambda: fp16_halves(ctx.fp32_onnx, path, feeds))]


def _int8(ctx: ExportContext) -> list[Artifact]:
    from .int8 import quantize_int8
    from .int8.halves import int8_halves

    path, report = quantize_int8(ctx.fp32_onnx, target(ctx, "int8"), ctx.pairs(), ctx.options.int8_options, say=ctx.say)
    whole = Artifact(path, "int8", report.summary(), report, report.notes)
    return [whole, *derived_halves(ctx, whole, functools.partial(int8_halves, ctx.fp32_onnx, report, ctx.pairs()))]


def _tensorrt_preflight(options: ExportOptions) -> None:
    if importlib.util.find_spec("tensorrt") is None:
        raise MissingDependency("TensorRT (needed for --engine)", "gpu")


def _engines(ctx: ExportContext) -> list[Artifact]:
    from .tensorrt import build_engine

    o = ctx.options
    cache = o.timing_cache or ctx.out_dir / "tensorrt.timing-cache"
    digest = ctx.checkpoint_sha256()
    from toolkit.runtime.fixed import half_paths

    from .fixed_camera import remove_stale_halves

    built = []
    for precision in ONNX_PRECISIONS:
        source = ctx.onnx_model(precision)
        if source is None:
            continue
        out = target(ctx, "engine", precision)
        jobs = [(source, out, "whole")]
        if ctx.has_halves(source):  # the fixed-camera halves' engines beside the whole model's
            jobs += [(s, o, part) for s, o, part in zip(half_paths(source), half_paths(out), ("bg", "frame"))]
        stale = [] if ctx.has_halves(source) else remove_stale_halves(out)
        for onnx_file, engine, part in jobs:
            dla = o.dla_core if precision != "fp32" else None  # DLA runs fp16/int8; the fp32 engine stays on the GPU
            report = build_engine(onnx_file, engine, precision=precision, batch=o.batch, workspace_mb=o.workspace_mb,
                                  timing_cache=cache, checkpoint_sha256=digest, sizes=o.size_profile,
                                  compat=o.engine_compat, dla_core=dla)
            portable = (f", {o.engine_compat}-compatible" if o.engine_compat != "none" else "") + (f", DLA core {dla}" if dla is not None else "")
            summary = (f"TensorRT {report.tensorrt_version} on {report.gpu_name}, batch {report.batch}{portable}, "
                       f"built in {report.build_seconds:.1f} s from {onnx_file.name}")
            if part == "whole":
                summary += "; " + gate_engine(ctx, engine, precision)
            built.append(Artifact(engine, precision, summary, report, list(report.notes) + (stale if part == "whole" else []), part=part))
    return built


def gate_engine(ctx: ExportContext, engine: Path, precision: str) -> str:
    """Run a just-built engine on the gate's held-out pairs beside the fp32 ONNX, on this GPU:
    TensorRT fuses and picks kernels unlike ONNX Runtime on the CPU, where the fp16/int8 files
    were judged. An engine that misses its precision's thresholds is removed with its sidecar
    (CheckFailed, exit 1), as a failing ONNX file is never written."""
    from toolkit.core.errors import CheckFailed
    from toolkit.runtime import open_runner
    from toolkit.runtime.tensorrt_runner import sidecar_path
    from toolkit.verify.compare import batches, check_model
    from toolkit.verify.selftest import with_self_test

    pairs = ctx.pairs()
    result = with_self_test(check_model(ctx.fp32_onnx, engine, batches(pairs.gate)), open_runner(engine))
    if not result:
        for path in (engine, sidecar_path(engine)):
            path.unlink(missing_ok=True)
        raise CheckFailed(f"{engine}: removed: the {precision} engine fails its check against {ctx.fp32_onnx.name} on this GPU: "
                          f"{'; '.join(result.failures)} ({result.figures()})")
    return f"vs {ctx.fp32_onnx.name} on this GPU: {result.judged()}{result.and_self_test}"


def _triton_preflight(options: ExportOptions) -> None:
    if options.triton is not None and options.triton.exists() and not options.triton.is_dir():
        raise UserError(f"{options.triton}: exists and is not a folder")


def _triton(ctx: ExportContext) -> list[Artifact]:
    from .triton import DEFAULT_MAX_BATCH, write_triton_repo

    o = ctx.options
    repo = target(ctx, "triton").parent
    engines = {a.precision: a.path for a in ctx.produced.get("engine", []) if a.part == "whole"}
    engine = next((engines[p] for p in ("fp16", "fp32", "int8") if p in engines), None)
    max_batch = min(DEFAULT_MAX_BATCH, o.batch.max) if engine is not None else DEFAULT_MAX_BATCH
    kind, why = triton_instance_kind(o.triton_kind)
    model_dir = write_triton_repo(repo, o.triton_name, ctx.fp32_onnx, engine=engine, max_batch_size=max_batch, onnx_instance_kind=kind)
    plan = f" and {engine.name} as {o.triton_name}_trt" if engine is not None else ""
    summary = f"Triton repository {repo}: model.onnx as {o.triton_name}{plan}, max_batch_size {max_batch}, instance kind {kind} ({why})"
    return [Artifact(model_dir, "fp32", summary)]


def triton_instance_kind(asked: str | None) -> tuple[str, str]:
    """Triton's instance kind for the ONNX model, and why: as asked (`--triton-kind`), else GPU
    when this machine has CUDA (PyTorch or ONNX Runtime sees it), else CPU. A CPU-only server
    cannot load a KIND_GPU model, and a GPU server would run a KIND_CPU one on its CPU."""
    if asked is not None:
        return f"KIND_{asked.upper()}", f"--triton-kind {asked}"
    if _machine_has_cuda():
        return "KIND_GPU", "this machine has CUDA; --triton-kind cpu for a CPU server"
    return "KIND_CPU", "no CUDA on this machine; --triton-kind gpu for a GPU server"


def _machine_has_cuda() -> bool:
    with contextlib.suppress(Exception):  # a broken torch install is "no CUDA" here
        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                return True
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("onnx", "model.onnx", "ONNX, fp32, normalisation and decoding in-graph; its fixed-camera halves .bg/.frame beside it", _onnx_fp32),
    ExportFormat("fp16", "model.fp16.onnx", "ONNX, fp16 weights and activations, fp32 I/O (and its halves)", _fp16, needs=("onnx",),
                 selected=lambda o: o.fp16),
    ExportFormat("int8", "model.int8.onnx", "ONNX, int8 Q/DQ (cpu or tensorrt target), accuracy-gated (and its halves)", _int8,
                 needs=("onnx",), selected=lambda o: o.int8),
    ExportFormat("engine", "model.{precision}.engine", "TensorRT engine per ONNX precision of the run and its halves (+ .json sidecars)",
                 _engines, needs=("onnx",), uses=("fp16", "int8"), extra="gpu", preflight=_tensorrt_preflight,
                 selected=lambda o: o.engine),
    ExportFormat("triton", "{name}", "Triton model repository (ONNX model, plus the engine when built)", _triton,
                 needs=("onnx",), uses=("engine",), preflight=_triton_preflight, root="triton",
                 selected=lambda o: o.triton is not None),
)


def target(ctx: ExportContext, key: str, precision: str = "") -> Path:
    """Where the row `key` writes (for `precision`): its table `filename` under its root."""
    fmt = next(f for f in FORMATS if f.key == key)
    return ctx.place(fmt.filename, fmt.root, precision)


def selected_formats(options: ExportOptions) -> list[ExportFormat]:
    """The rows a run with `options` writes, in table order."""
    return [f for f in FORMATS if f.selected(options)]


def options_for(keys: Sequence[str]) -> ExportOptions:
    """Options that select the given format keys ("onnx" is always on)."""
    known = {f.key for f in FORMATS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise UserError(f"unknown export format(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if "triton" in keys:
        raise UserError("the triton format needs a repository folder: use ExportOptions(triton=DIR)")
    return ExportOptions(fp16="fp16" in keys, int8="int8" in keys, engine="engine" in keys)


def preflight(options: ExportOptions) -> None:
    """The selected rows' own checks (libraries, folders): bad input is refused before any work."""
    for fmt in selected_formats(options):
        if fmt.preflight is not None:
            fmt.preflight(options)


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
    def detail(self) -> ReportOfRow | None:
        return self.artifacts[0].detail if self.artifacts else None


def check_source(source: Path, options: ExportOptions) -> None:
    """A checkpoint, or an exported `.onnx` (then what only a checkpoint can make is refused)."""
    if source.suffix.lower() not in (".pt", ".onnx"):
        given = "a folder" if source.is_dir() else (f"a '{source.suffix}' file" if source.suffix else "a file without a suffix")
        raise UserError(f"{source}: export takes a toolkit checkpoint (.pt) or an exported model (.onnx), not {given}")
    if source.suffix.lower() == ".onnx" and options.graph != "folded":
        raise UserError(f"--graph only applies to a checkpoint: {source.name} is already exported")
    if source.suffix.lower() != ".onnx":
        return
    if options.image_size is not None or options.dynamic_size:
        flag = "--image-size" if options.image_size is not None else "--dynamic-size"
        raise UserError(f"{flag} only applies to a checkpoint: {source.name} is already exported at its size")
    if not (options.fp16 or options.int8 or options.engine or options.triton is not None):
        raise UserError(f"{source.name} is already exported: give --fp16, --int8, --engine or --triton to make something from it")
    if (options.fp16 or options.int8) and source.is_file():
        from toolkit.runtime.onnx_info import read_onnx_info

        precision = read_onnx_info(source, require_spec=True).metadata.get("toolkit.precision", "fp32")
        if precision != "fp32":
            raise UserError(f"{source}: is an {precision} model; --fp16 and --int8 are made from the fp32 export")


def run_exports(
    source: Path, out_dir: Path, keys: Sequence[str] | None = None, options: ExportOptions | None = None,
    say: Callable[[str], None] | None = None,
) -> list[ExportOutcome]:
    """Run the selected formats in table order; a failing format is recorded, not raised.

    `source`: a toolkit checkpoint, or an exported `.onnx`: then the `onnx` row uses it as it
    is and the others (fp16/int8 from an fp32 model, engines, Triton) run without PyTorch.

    Give `options` (what the CLI does), or `keys` (format keys, default options). A row whose
    needs failed is not run (its outcome says why). The options were checked when they were
    made; the rows' preflights run first, so a missing library is refused before anything is
    written. `say(line)` hears the progress of long rows (the int8 search).
    """
    if options is None:
        options = options_for(list(keys or ["onnx"]))
    check_source(Path(source), options)
    preflight(options)
    ctx = ExportContext(Path(source), Path(out_dir), options, say=say or (lambda _: None))
    outcomes: list[ExportOutcome] = []
    failed: set[str] = set()
    for fmt in selected_formats(options):
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
            hint = f": {install_hint(fmt.extra)}" if fmt.extra else ""
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
