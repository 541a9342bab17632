"""The self-test a deployed model passes before it serves: golden pairs inside the model file.

Every ONNX export records two golden pairs in its metadata (`toolkit.golden`): the images as PNG
at a size other than the model's (so the deploy path's own decoding and resizing run, as for a
camera frame), and PyTorch's outputs for them at the model's size as 16-bit PNGs (exact to
1.5e-5, under the fp32 threshold). fp16/int8 models inherit them from the fp32 export, engines
through their sidecar's metadata, the halves through its whole model. `self_test(runner)`
decodes and resizes the pairs as `infer`/`stream`/`serve` do, runs them on the runner (the
backend and provider that will serve), and judges the outputs against PyTorch's at the
runner's precision thresholds (`toolkit.verify.compare`): a wrong provider, a broken engine, a changed
preprocessing or tampered weights fail it. `doctor --model`, `serve` (before `/readyz`) and
`stream` (at start) run it. The payload's SHA-256 is recorded beside it, so a damaged payload is
told apart from a failing model.

One rule, one verdict: every export runs the self-test on what it is about to write, beside its
own check (`with_self_test`), so a file the export wrote never fails it later. The self-test's
thresholds are its precision's whatever thresholds the export's own check was given: the rule a
deployed model is held to does not depend on how it was exported.

No torch here: the self-test runs on the edge install; `make_golden` (at export) takes the
reference outputs from a runner on the checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import UserError
from ..core.spec import INPUT_NAMES, METADATA_PREFIX, OUTPUT_NAMES
from ..render import imageio

if TYPE_CHECKING:
    from ..runtime.base import Runner
    from .compare import ParityResult

GOLDEN_KEY = f"{METADATA_PREFIX}golden"
GOLDEN_FORMAT = "toolkit-golden/1"
SOURCE_SCALE = 1.25  # the golden images are this much larger than the model's input: the resize runs


def _png(array: np.ndarray) -> str:
    """Base64 PNG: uint8 RGB images as they are, [0, 1] maps as 16-bit grey."""
    from PIL import Image

    if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0.0, 1.0) * 65535).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _unpng16(text: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        return np.asarray(im, dtype=np.float32) / 65535.0


def golden_images(size: tuple[int, int]) -> list[dict[str, np.ndarray]]:
    """Two (bg, fgbg) uint8 pairs a little larger than `size`: a room, a figure in it (synthetic footage)."""
    from ..deploy.footage import background, walking_frames

    h, w = (int(round(v * SOURCE_SCALE)) for v in size)
    pairs = []
    for seed, step in ((0, 1), (3, 4)):
        frames = walking_frames(6, h, w, seed=seed)
        pairs.append({"bg": background(h, w, seed=seed), "fgbg": frames[step]})
    return pairs


def prepare(pairs: list[dict[str, np.ndarray]], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """`infer`'s preprocessing (what `stream --match-infer` feeds the model too): decoded images,
    float-resized to the model's size, as NCHW batches."""
    return {k: imageio.to_nchw([imageio.resize(imageio.from_uint8(p[k]) if p[k].dtype == np.uint8 else p[k], size)
                                for p in pairs]) for k in INPUT_NAMES}


def make_golden(reference: Runner, size: tuple[int, int]) -> str:
    """The `toolkit.golden` metadata value: the golden pairs and `reference`'s outputs for them."""
    pairs = golden_images(size)
    with reference:
        outputs = reference.infer(prepare(pairs, size))
    payload = {
        "pairs": [{k: _png(p[k]) for k in INPUT_NAMES} for p in pairs],
        "outputs": {n: [_png(outputs[n][i, 0]) for i in range(len(pairs))] for n in OUTPUT_NAMES},
        "size": list(size),
        "reference": reference.path.name,
    }
    body = json.dumps(payload, sort_keys=True)
    return json.dumps({"format": GOLDEN_FORMAT, "sha256": hashlib.sha256(body.encode()).hexdigest(), "payload": payload},
                      sort_keys=True)


@dataclass(frozen=True)
class Golden:
    feed_images: list[dict[str, np.ndarray]]  # decoded RGB float images, the source size
    outputs: dict[str, np.ndarray]  # [N, 1, H, W] at the model's size
    size: tuple[int, int]


def read_golden(metadata: Mapping[str, str], model: str) -> Golden:
    """The golden pairs a model's metadata holds; one line when there are none or they are damaged."""
    text = metadata.get(GOLDEN_KEY)
    if not text:
        raise UserError(f"{model}: holds no golden pairs (exported by an older toolkit): export it again to get a self-test")
    try:
        doc: dict[str, Any] = json.loads(text)
        payload = doc["payload"]
        if doc.get("format") != GOLDEN_FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        if hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest() != doc.get("sha256"):
            raise ValueError("its SHA-256 does not match")
        images = [{k: imageio.read_rgb(base64.b64decode(p[k]), name=f"golden {k}") for k in INPUT_NAMES} for p in payload["pairs"]]
        outputs = {n: np.stack([_unpng16(t) for t in payload["outputs"][n]])[:, None] for n in OUTPUT_NAMES}
        size = (int(payload["size"][0]), int(payload["size"][1]))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"{model}: its golden pairs are damaged ({e}): export it again") from None
    return Golden(images, outputs, size)


def self_test(runner: Runner) -> ParityResult:
    """The activated `runner` on its model's golden pairs beside PyTorch's outputs, judged at its
    precision's thresholds (truthy when it passes). Raises UserError when there are none."""
    from .compare import judge_outputs, thresholds_for

    golden = read_golden(runner.metadata, runner.path.name)
    if golden.size != runner.spec.size:
        raise UserError(f"{runner.path.name}: its golden pairs are {golden.size[0]}x{golden.size[1]}, "
                        f"the model takes {runner.spec.height}x{runner.spec.width}: export it again")
    feed = prepare(golden.feed_images, golden.size)
    return judge_outputs(runner, runner.infer(feed), golden.outputs, feed, thresholds_for(runner.precision))


def check_self_test(runner: Runner) -> str:
    """Run the self-test; one line naming the figures that decided it when it passes, CheckFailed
    (exit 1) naming the model, the runtime and the figure that failed when it does not."""
    from ..core.errors import CheckFailed

    result = self_test(runner)
    if not result:
        forced = " (it was written with --force, missing its gate at export)" if "FAILED" in runner.metadata.get(f"{METADATA_PREFIX}int8_gate", "") else ""
        raise CheckFailed(f"{runner.path.name}: self-test failed on {runner.name}: {'; '.join(result.failures)} ({result.figures()}){forced}")
    return f"self-test passed on {runner.name}: {result.judged()} (golden)"


def with_self_test(check: ParityResult, runner: Runner) -> ParityResult:
    """An export's `check` of the model `runner` runs (not yet activated), with the model's own
    self-test added when the check passed: what serve, stream and doctor will run on the file,
    run before it is written. Its verdict line goes to `check.self_test`, its failures join the
    check's, named as the self-test's. A model without golden pairs (a given older export) adds
    nothing."""
    from .compare import SELF_TEST_FAILURE

    if not check or GOLDEN_KEY not in runner.metadata:
        return check
    with runner:
        result = self_test(runner)
    check.self_test = f"self-test {'passed' if result else 'FAILED'} on its golden pairs: {result.judged()}"
    if not result:
        check.failures.append(SELF_TEST_FAILURE + "; ".join(result.failures))
    return check


def startup_check(runner: Runner) -> str:
    """What `serve` and `stream` run before their first request or frame: the self-test's line,
    CheckFailed (exit 1) when it fails, a note when the model holds no golden pairs (an older
    export: it still runs)."""
    try:
        return check_self_test(runner)
    except UserError as e:
        if "holds no golden pairs" not in str(e):
            raise
        return f"note: {e}"


def self_test_model(model: str | Path, **options: Any) -> Iterator[str]:
    """`doctor --model`: the self-test of `model` on the runtime `options` pick, then of its
    fixed-camera halves when they sit beside it; a line per run, each given as it is decided.
    The whole model is tested first, so what is wrong with it is said even when halves beside it
    do not belong to it: that is a second finding, in the same CheckFailed (exit 1) when the
    whole model fails, its own UserError (exit 2) after the whole model's line when it passes.
    A checkpoint has no golden pairs (it is the reference): whether its BatchNorm statistics
    match its network is what can be wrong with it (`toolkit.net.recalibrate.check_statistics`)."""
    from ..core.errors import CheckFailed
    from ..runtime import open_runner
    from ..runtime.fixed import HalvesRunner, has_halves

    if Path(model).suffix.lower() == ".pt":
        from ..net.recalibrate import check_statistics

        open_runner(model, **options)  # the file is checked as every model is
        yield check_statistics(model).line()
        return
    whole = open_runner(model, **options)
    halves: HalvesRunner | None = None
    mismatch = ""
    if has_halves(model):
        try:
            halves = HalvesRunner(model, **options)
        except UserError as e:  # halves of another model: said after the whole model's verdict
            mismatch = str(e)
    with whole:
        try:
            line = f"{whole.path.name}: {check_self_test(whole)}"
        except (CheckFailed, UserError) as e:  # the halves' finding goes with the whole model's
            raise type(e)(f"{e}; also: {mismatch}" if mismatch else str(e)) from None
    yield line
    if mismatch:
        raise UserError(mismatch)
    if halves is not None:
        with halves:
            yield f"{halves.path.name}: {check_self_test(halves)}"
