"""`ParityOptions`: every option of `toolkit parity`, and the rules of which go together, checked
when it is made, so a Python caller gets the CLI's one-line errors (the CLI builds one).

Three modes, picked by the options: beside a reference model (the default: a checkpoint, or the
one a model's metadata names; `save_golden` also keeps what was compared on), against a golden
folder (`golden`: its pairs, outputs and thresholds; no PyTorch), and layer by layer (`layers`:
every intermediate tensor beside the fp32 reference's, in ONNX Runtime on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .compare import Thresholds
from .parity import DEFAULT_BATCH, DEFAULT_LIMIT, check_run_options

DEFAULT_LAYERS_LIMIT = 4  # --layers runs one pair at a time


@dataclass(frozen=True)
class ParityOptions:
    models: tuple[Path, ...] = ()
    reference: Path | None = None
    data: Path | None = None
    limit: int | None = None  # None: DEFAULT_LIMIT (DEFAULT_LAYERS_LIMIT with layers)
    batch_size: int | None = None  # None: DEFAULT_BATCH
    overrides: Thresholds = field(default_factory=Thresholds)
    provider: str = "cpu"
    save_golden: Path | None = None
    golden: Path | None = None
    layers: bool = False
    layer_tol: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(Path(m) for m in self.models))
        check_run_options(DEFAULT_LIMIT if self.limit is None else self.limit,
                          DEFAULT_BATCH if self.batch_size is None else self.batch_size, self.provider)
        if self.layer_tol is not None and not self.layers:
            raise UserError("--layer-tol is the tolerance of parity --layers: give --layers")
        if self.golden is not None and (self.limit is not None or self.batch_size is not None):
            raise UserError("parity --golden DIR runs the folder's own pairs in its own batches: --limit and --batch-size do not go with it")
        if self.layers:
            self._check_layers()
        if self.golden is not None and (self.reference is not None or self.data is not None or self.save_golden is not None):
            raise UserError("parity --golden DIR judges against the folder's pairs and outputs: "
                            "--reference, --data and --save-golden do not go with it")

    def _check_layers(self) -> None:
        if self.batch_size is not None:
            raise UserError("parity --layers runs one pair at a time: --batch-size does not go with it")
        if self.golden is not None or self.save_golden is not None:
            raise UserError("parity --layers compares against a reference model: --golden and --save-golden do not go with it")
        overridden = any(v is not None for v in (self.overrides.max_abs, self.overrides.mask_iou, self.overrides.depth_rmse))
        if self.provider != "cpu" or overridden:
            raise UserError("parity --layers runs both graphs in ONNX Runtime on the CPU and judges tensors by --layer-tol: "
                            "--provider, --max-abs, --mask-iou and --depth-rmse do not go with it")

    @property
    def mode(self) -> str:
        """"layers", "golden" or "reference"."""
        return "layers" if self.layers else "golden" if self.golden is not None else "reference"

    def run(self) -> Any:
        """The check the options ask for: a `ParityReport` (reference, golden) or a list of
        `LayerReport`s (layers)."""
        if self.mode == "layers":
            from .layers import compare_layers

            if not self.models:
                raise UserError("parity --layers: give at least one --model")
            limit = self.limit or DEFAULT_LAYERS_LIMIT
            return [compare_layers(m, self.reference, self.data, limit=limit, tolerance=self.layer_tol) for m in self.models]
        if self.mode == "golden":
            from .parity import check_golden

            assert self.golden is not None
            return check_golden(self.golden, list(self.models), provider=self.provider, overrides=self.overrides)
        from .parity import run_parity

        return run_parity(list(self.models), self.reference, self.data, limit=self.limit or DEFAULT_LIMIT,
                          batch_size=self.batch_size or DEFAULT_BATCH, overrides=self.overrides, provider=self.provider,
                          save_golden=self.save_golden)
