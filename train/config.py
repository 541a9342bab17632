"""What a training run is asked to do (`TrainConfig`) and how the network is trained (`RECIPES`).

A recipe is everything that defines *how* the weights are fitted — optimiser, learning rate,
losses and their weights, and the output decoding the losses imply — so a checkpoint can name
its recipe and an exported model decodes its outputs the way they were trained. Recipes are a
table so new ones are one entry, not a new code path. The config is what a user chooses per run
(data, size, epochs, device, ...); it is stored in every checkpoint so `--resume` can restore it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError
from toolkit.core.spec import SEED_SPEC, Decoding, IOSpec
from toolkit.net.model import TAIL_STATS

DEFAULT_OUT = Path("runs/train")


@dataclass(frozen=True)
class Recipe:
    """How the weights are fitted. Losses are computed on the raw outputs (`train.losses`): the
    regression losses against targets encoded into the raw space with the spec's decoding
    (`Decoding.encode_target`), the others on the decoded values, so the decoding the export
    applies is the one the losses trained."""

    name: str
    description: str
    spec: IOSpec = SEED_SPEC  # only its decodings matter here; the size comes from the config
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "constant"  # stepped once per optimiser step (`train.optim`)
    warmup: float = 0.0  # share of the run's steps spent warming the learning rate up
    mask_loss: str = "l1"
    depth_loss: str = "l1"
    mask_weight: float = 1.0
    depth_weight: float = 2.0
    augment: bool = False  # flips for all four tensors, colour jitter on the inputs (`train.augment`)
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = none
    grad_clip: float = 0.0  # max global gradient norm; 0 = no clipping
    tail_stats: str = "shared"  # how the tail keeps its BatchNorm statistics (`toolkit.net.model.TAIL_STATS`)


# The improved recipe decodes the mask as a probability (trained as logits) and keeps the
# seed's affine depth decoding (a well-conditioned raw space; the losses see decoded values).
IMPROVED_SPEC = IOSpec(mask=Decoding("sigmoid"))

RECIPES: dict[str, Recipe] = {
    "seed": Recipe(
        name="seed",
        description="the original author's: SGD lr 0.01 momentum 0.9, L1(mask) + 2 L1(depth) on "
        "targets normalised with mask 0.079/0.254 and depth 0.35/0.208, affine_clip decoding; the tail's "
        "BatchNorm keeps one set of statistics per head (the same training computation as the original's "
        "shared set, whose blend eval mode cannot use)",
        # Per head or shared, training normalises each head's call by its own batch: the same
        # computation. Only the running statistics differ, and only per head are they what eval
        # mode needs (benchmarks/README.md: depth RMSE 0.106 vs 0.201 at equal budget).
        tail_stats="per_head",
    ),
    "improved": Recipe(
        name="improved",
        description="AdamW lr 3e-3 wd 1e-4, linear warm-up (5%) then cosine to 0, BCE-with-logits + soft Dice "
        "for the mask (sigmoid decoding), 4 x (L1 + SSIM + gradient L1) for depth, flips and colour jitter, "
        "EMA of weights (0.998), gradient norm clipped at 2, the shared tail's BatchNorm trained on both branches at once",
        spec=IMPROVED_SPEC,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-4,
        scheduler="warmup_cosine",
        warmup=0.05,
        mask_loss="bce_dice",
        depth_loss="l1_ssim_grad",
        mask_weight=1.0,
        # The depth terms compare decoded values (~0.2 std) where the seed compared normalised
        # ones (~1 std), and the tail is shared with the mask's logits: 4 keeps depth learning
        # alongside the mask (benchmarks/README.md: 1 leaves depth at its mean, 8 starves the mask).
        depth_weight=4.0,
        # joint over per_head: equal or better on every eval-mode figure at 480 steps, two seeds
        # (benchmarks/README.md, "the tail's BatchNorm statistics"); shared fails in eval mode.
        augment=True,
        ema=0.998,
        grad_clip=2.0,
        tail_stats="joint",
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None


# Fields that decide the weights' trajectory: a resumed run must keep them as they were (`data`
# may point at a moved copy of the same set; see `train.state.load_resume`).
TRAJECTORY_FIELDS = ("data", "batch_size", "image_size", "lr", "momentum", "recipe", "seed", "holdout", "clip_grad",
                     "init", "tail")

# What a field left at None means for a new run. None itself means "not given": a resumed run
# then keeps the run's own value, and only options actually given are compared with the run's.
DEFAULTS: dict[str, Any] = {"epochs": 12, "batch_size": 32, "image_size": 128, "recipe": "improved", "seed": 0,
                            "workers": 2, "holdout": 0.2}


@dataclass
class TrainConfig:
    """One training run. `None` means "not given": data -> a synthetic set made in `<out>/data`;
    out -> `runs/train` (or the folder of the run being resumed); lr / momentum -> the recipe's;
    max_steps -> no limit beyond `epochs`. The fields of `DEFAULTS` take their default at once
    for a new run; with `resume` set they stay None when not given and the resumed run's own
    settings are used (`train.state.load_resume`), so an option given with the default's value
    is told apart from one left out. With `init` (a new run from a model's weights) the recipe
    left out is the model's own (`train.init`), so its outputs keep the decoding they were
    trained with; `tail` left out is the recipe's.

    `deterministic` asks for deterministic kernels (and no cuDNN autotuning): on the CPU a
    resumed run is bit-identical to an unbroken one anyway, on CUDA only with it."""

    data: Path | None = None
    out: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    device: str = "auto"
    max_steps: int | None = None
    recipe: str | None = None
    seed: int | None = None
    workers: int | None = None
    holdout: float | None = None
    log_every: int = 10
    resume: Path | None = None
    tensorboard: bool = True
    samples: bool = True
    deterministic: bool = False
    clip_grad: float | None = None  # max gradient norm; None = the recipe's, 0 = no clipping
    preview_every: int = 0  # steps between TensorBoard sample grids inside an epoch; 0 = per epoch only
    amp: str = "auto"  # autocast: auto | off | bf16 | fp16 (train.speed)
    channels_last: bool | None = None  # None = where it pays (train.speed)
    compile: bool = False  # torch.compile the training forward
    synth: dict[str, int] = field(default_factory=dict)  # options for the default synthetic set
    init: Path | None = None  # start from this model's weights (a toolkit or the original author's checkpoint)
    tail: str | None = None  # the tail's BatchNorm statistics (`toolkit.net.model.TAIL_STATS`); None: the recipe's
    force: bool = False  # a new run in a folder that holds one: start over (see `train.loop.preflight`)

    def __post_init__(self) -> None:
        if self.resume is None:
            for k, v in DEFAULTS.items():
                if getattr(self, k) is None and not (k == "recipe" and self.init is not None):
                    setattr(self, k, v)

    def with_defaults(self) -> TrainConfig:
        """A copy with every unset field of `DEFAULTS` given its default."""
        return dataclasses.replace(self, **{k: v for k, v in DEFAULTS.items() if getattr(self, k) is None})

    def validate(self) -> TrainConfig:
        """Reject bad options with one line each, before any work is done."""
        def positive(name: str, value: Any) -> None:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise UserError(f"{name} must be a positive whole number, got {value!r}")

        positive("epochs", self.epochs)
        positive("batch size", self.batch_size)
        positive("image size", self.image_size)
        positive("log_every", self.log_every)
        if isinstance(self.preview_every, bool) or not isinstance(self.preview_every, int) or self.preview_every < 0:
            raise UserError(f"preview every must be 0 or more steps, got {self.preview_every!r}")
        if self.clip_grad is not None and not (0.0 <= float(self.clip_grad) < float("inf")):
            raise UserError(f"clip-grad must be a finite number >= 0, got {self.clip_grad}")
        if self.image_size is not None and self.image_size % 4:
            raise UserError(f"image size must be a multiple of 4 (the network pools twice), got {self.image_size}")
        positive("max steps", self.max_steps)
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise UserError(f"workers must be 0 or more, got {self.workers!r}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise UserError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.holdout is not None and not 0.0 < float(self.holdout) < 1.0:
            raise UserError(f"holdout must be between 0 and 1 (exclusive), got {self.holdout}")
        for name, value in (("lr", self.lr), ("momentum", self.momentum)):
            if value is not None and not (float(value) >= 0.0 and float(value) < float("inf")):
                raise UserError(f"{name} must be a finite number >= 0, got {value}")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if self.recipe is not None:
            get_recipe(self.recipe)
        if self.force and self.resume is not None:
            raise UserError("--force starts a new run and --resume continues one: give one or the other")
        if self.init is not None and self.resume is not None:
            raise UserError("--init starts a new run from a model's weights and --resume continues a run: give one or the other")
        if self.init is not None and not Path(self.init).is_file():
            raise UserError(f"--init {self.init}: {'is a folder, expected a checkpoint' if Path(self.init).is_dir() else 'no such checkpoint'}")
        if self.tail is not None and self.tail not in TAIL_STATS:
            raise UserError(f"--tail must be one of {', '.join(TAIL_STATS)}, got {self.tail!r}")
        return self

    @property
    def effective_tail(self) -> str:
        """How the run's network keeps its tail's BatchNorm statistics."""
        return self.tail if self.tail is not None else get_recipe(self.recipe or DEFAULTS["recipe"]).tail_stats

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out is not None else DEFAULT_OUT

    @property
    def effective_lr(self) -> float:
        return float(self.lr) if self.lr is not None else get_recipe(self.recipe or DEFAULTS["recipe"]).lr

    @property
    def effective_clip_grad(self) -> float:
        return float(self.clip_grad) if self.clip_grad is not None else get_recipe(self.recipe or DEFAULTS["recipe"]).grad_clip

    @property
    def effective_momentum(self) -> float:
        return float(self.momentum) if self.momentum is not None else get_recipe(self.recipe or DEFAULTS["recipe"]).momentum

    def to_dict(self) -> dict[str, Any]:
        """Plain data (paths as strings) so it survives `torch.load(weights_only=True)`."""
        d = dataclasses.asdict(self)
        for k in ("data", "out", "resume", "init"):
            d[k] = None if d[k] is None else str(d[k])
        d["synth"] = dict(self.synth)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("data", "out", "resume", "init"):
            if kw.get(k) is not None:
                kw[k] = Path(kw[k])
        return cls(**kw)
