"""int8 ONNX (`model.int8.onnx`): static Q/DQ quantisation of the fp32 export, with an accuracy gate.

What it was asked for is one `Int8Options` (export.int8.options).

No torch: the fp32 `.onnx` is the input, ONNX Runtime's quantisation tools do the work.

Steps: `quant_pre_process` (ONNX Runtime's optimiser folds BatchNorm into Conv; symbolic shape
inference is skipped, it fails on this graph); calibration with a `CalibrationDataReader` over
real pairs at the model's size; `quantize_static` with per-channel weights; then the gate.

Pairs: a data set in the original layout (`--calib DIR`, folder or zip), split by whole
backgrounds (toolkit.data.holdout): the calibration pairs come from one part, the gate judges on
pairs from the held-out backgrounds only. Without `--calib`, a small synthetic set
(toolkit.data.synth) is made in a temporary folder.

Targets:
  * ``cpu`` (default): Q/DQ, activations uint8 asymmetric, weights int8 symmetric per channel
    (U8S8), `reduce_range` on x86 CPUs without VNNI (U8S8 can saturate there, ORT's guidance).
  * ``tensorrt``: Q/DQ, int8 activations and weights, both symmetric (every zero point is int8 0,
    which TensorRT asserts), with Optimum's TensorRT options (`ActivationSymmetric`,
    `WeightSymmetric`, `AddQDQPairToWeight`, `DedicatedQDQPair`), `QuantizeBias` off, and no Q/DQ
    on Conv outputs (Q/DQ on the inputs of weighted layers, as TensorRT's guide asks: Conv + ReLU
    fuse).

Nodes kept in float, found by graph structure (never by name): the first convolutions (the
ones the input normalisation feeds) and each output's full-resolution head (every node between
the last Resize and the output: the last depthwise-separable block, the final 1-channel conv and
the decoding): the heads' convolutions carry most of the quantisation error.

Why these choices (measured; the per-variant table is in benchmarks/README.md, "int8 variants"):
on x86 with VNNI, U8S8 Q/DQ is the fastest int8 in ONNX Runtime (as fast as QOperator, which gave
a wrong mask on an AVX-512/AMX Xeon); S8S8 is slower for no accuracy gain and symmetric S8S8
(TensorRT's only option) wastes half its range on ReLU outputs. Keeping the first convolutions and
the heads in float halves the depth error for about a third of the speed-up, and entropy
calibration beats minmax at a few seconds more, so both are the defaults.

Gate: the quantised model runs beside the fp32 model in ONNX Runtime on the held-out pairs and
is judged with `toolkit.verify.compare` at the int8 thresholds (mask IoU >= 0.97, depth RMSE <= 0.02),
and it runs its own self-test (its golden pairs beside PyTorch's outputs, the deploy path's
preprocessing, the int8 thresholds: what serve, stream and doctor run): one verdict, so a file
written here never fails its self-test later (`toolkit.verify.selftest.with_self_test`).
A miss of either starts the search for the layers to keep in float (`export.int8.search`, `search="auto"`);
a model that still fails is refused (CheckFailed, exit 1, nothing written, the figures in the
message) unless `force`, which writes the fixed rule's model with a warning. Synthetic calibration pairs prove the pipeline;
real pairs (`--calib`) are the meaningful test of a model's int8 accuracy.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from toolkit.core.errors import CheckFailed, UserError
from toolkit.core.fsutil import atomic_path
from toolkit.core.spec import METADATA_PREFIX
from toolkit.data.calib import CalibrationPairs
from toolkit.runtime import open_runner
from toolkit.verify.compare import ParityResult, Thresholds, batches, check_model
from toolkit.verify.selftest import with_self_test

from ..metadata import derived_metadata, load_fp32_source, read_metadata, set_metadata
from .options import Int8Options
from .quantise import quantise_graph

if TYPE_CHECKING:
    from .search import SearchResult

# -- the conversion ---------------------------------------------------------------------------
@dataclass
class Int8Report:
    path: Path | None
    options: Int8Options
    calib_pairs: int
    gate_pairs: int
    parity: ParityResult  # vs fp32 on the held-out pairs
    forced: bool = False
    float_nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    search: SearchResult | None = None  # when the gate missed and the search ran

    @property
    def target(self) -> str:
        return self.options.target

    @property
    def method(self) -> str:
        return self.options.method

    @property
    def passed(self) -> bool:
        return bool(self.parity)

    @property
    def search_summary(self) -> str:
        return self.search.summary() if self.search is not None else ""

    @property
    def searched(self) -> SearchResult | None:
        """The search's result when it found a passing model (what the halves follow)."""
        return self.search if self.search is not None and self.search.passed else None

    def summary(self) -> str:
        forced = "; written with --force" if self.forced else ""
        searched = f"; {self.search_summary}" if self.search is not None else ""
        return (f"target {self.target}, {self.method} calibration on {self.calib_pairs} pairs; "
                f"vs fp32 on held-out pairs: {self.parity.verdict()}{self.parity.and_self_test}{forced}{searched}")


def int8_metadata(target: str, method: str, settings: dict[str, Any], keep: list[str], pairs: CalibrationPairs) -> dict[str, str]:
    """What an int8 file records about its quantisation."""
    activations = "int8 symmetric" if target == "tensorrt" else "uint8 asymmetric"
    weights = "int8 symmetric per-channel" + (" (7-bit, reduce_range: no VNNI)" if settings["reduce_range"] else "")
    return {
        f"{METADATA_PREFIX}int8_target": target,
        f"{METADATA_PREFIX}int8_format": "QDQ",
        f"{METADATA_PREFIX}int8_activations": activations,
        f"{METADATA_PREFIX}int8_weights": weights,
        f"{METADATA_PREFIX}int8_float_nodes": ",".join(keep),
        f"{METADATA_PREFIX}calibration_method": method,
        f"{METADATA_PREFIX}calibration_pairs": str(pairs.calib_count),
        f"{METADATA_PREFIX}calibration_data": pairs.source,
    }


def quantize_int8(
    source: str | Path,
    out: str | Path,
    pairs: CalibrationPairs,
    options: Int8Options | None = None,
    *,
    say: Any = None,
) -> tuple[Path, Int8Report]:
    """Quantise the fp32 ONNX `source` to `out` as `options` say (default: `Int8Options()`).
    When the gate fails and `options.search` is "auto", the layers to keep in float are searched
    for (`export.int8.search`); a model that still fails is refused (CheckFailed) unless
    `options.force`. `say(line)` hears the search's progress."""
    o = options or Int8Options()
    source, out = Path(source), Path(out)
    _, props = load_fp32_source(source, "int8")
    if pairs.calib_count == 0 or pairs.gate_count == 0:
        raise UserError("int8: no calibration or gate pairs")
    model, keep, settings = quantise_graph(source, pairs.calib, target=o.target, method=o.method, out=out)
    result = _gate(source, out, model, pairs, o.thresholds, _metadata(props, source, out, o, settings, keep, pairs))
    report = Int8Report(None, o, pairs.calib_count, pairs.gate_count, result, float_nodes=keep, notes=list(pairs.notes))
    if not result and o.search == "auto":
        model, keep, result = _searched(source, out, pairs, props, report, say) or (model, keep, result)
        report.parity, report.float_nodes = result, keep
    figures = f"{result.figures()} held out from the {pairs.described}"
    if not result:
        why = "; ".join(result.failures)
        if not o.force:
            searched = f"; {report.search_summary}" if report.search_summary else ""
            hint = _refusal_hint(result, pairs)
            raise CheckFailed(f"{out}: not written: int8 model fails the accuracy gate: {why} (vs fp32: {figures}){searched}; {hint}")
        report.forced = True
        report.notes.append(f"warning: int8 model fails the accuracy gate ({why}); written anyway (--force)")
    verdict = "passed" if result else "FAILED (written with --force)"
    set_metadata(model, read_metadata(model) | {f"{METADATA_PREFIX}int8_gate": f"vs fp32: {figures}{result.and_self_test}: {verdict}"})
    with atomic_path(out) as dst:
        dst.write_bytes(model.SerializeToString())
    report.path = out
    return out, report


def _refusal_hint(result: ParityResult, pairs: CalibrationPairs) -> str:
    """What to do about a refused int8 model: real calibration pairs help a gate miss, not a
    self-test miss (the golden pairs are the model's own)."""
    if not result.own_failures:
        return "--force writes it anyway, and serve, stream and doctor will then refuse it as this check did"
    return "calibrate on real pairs with --calib DIR, or --force to write it anyway" if pairs.source == "synthetic" else "--force writes it anyway"


def _metadata(props: dict[str, str], source: Path, out: Path, options: Int8Options, settings: dict[str, Any],
              keep: list[str], pairs: CalibrationPairs) -> dict[str, str]:
    return derived_metadata(props, "int8", source, out, int8_metadata(options.target, options.method, settings, keep, pairs))


def _gate(source: Path, out: Path, model: onnx.ModelProto, pairs: CalibrationPairs, thresholds: Thresholds | None,
          metadata: dict[str, str]) -> ParityResult:
    """Set `metadata` on `model`, check it with onnx.checker, and judge it beside `source` on the
    held-out pairs, and by its own self-test."""
    _finished(model, out, metadata)
    with tempfile.TemporaryDirectory(prefix="toolkit-int8-") as tmp:
        candidate = Path(tmp) / "model.int8.onnx"
        candidate.write_bytes(model.SerializeToString())
        return with_self_test(check_model(source, candidate, batches(pairs.gate), thresholds), open_runner(candidate))


def _finished(model: onnx.ModelProto, out: Path, metadata: dict[str, str]) -> None:
    """`metadata` set on `model`, and the model through onnx.checker (one line when it fails)."""
    set_metadata(model, metadata)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # onnx.checker.ValidationError
        raise CheckFailed(f"{out}: not written: the int8 model fails onnx.checker ({str(e).strip().splitlines()[0][:200]})") from e


def _searched(source: Path, out: Path, pairs: CalibrationPairs, props: dict[str, str], report: Int8Report,
              say: Any) -> tuple[onnx.ModelProto, list[str], ParityResult] | None:
    """The searched model, its float layers and its gate result when the search passes (None
    when it does not); `report` records the search either way."""
    from .search import search_float_layers

    found = search_float_layers(source, pairs.calib, pairs.gate, report.options, say=say, out=out)
    report.search = found
    if not found.passed:
        return None
    extra = {f"{METADATA_PREFIX}int8_search": found.record(source)}
    _finished(found.model, out, _metadata(props, source, out, report.options, found.settings, found.in_effect, pairs) | extra)
    return found.model, found.in_effect, found.parity  # the search judged this model on the gate's pairs, at the gate's thresholds
