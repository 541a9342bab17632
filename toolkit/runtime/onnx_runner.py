"""ONNX Runtime backend (edge install: no torch).

The graph holds the normalisation and decoding, so this runner only feeds arrays in and reads
arrays out. The model's I/O spec comes from its `metadata_props` (written at export).

`provider` picks the execution providers: "cpu" (default), "cuda" (CUDA EP, then CPU) or
"tensorrt" (TensorRT EP with an engine and timing cache in `<model>.ort-trt-cache/` and a batch
profile covering both inputs, then CUDA, then CPU). A provider this onnxruntime lacks (the GPU
ones need `onnxruntime-gpu`), or one that fails to load, is skipped with a one-line note in
`runner.notes`; `runner.providers` lists what the session really uses. Opening reads the model's
metadata with `onnx` (the TensorRT EP needs the input size up front); the session is created at
`activate()`.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import UserError, debug_enabled, first_line
from ..core.optional import import_optional
from ..core.spec import DEFAULT_BATCH_PROFILE, WHOLE, BatchProfile, Interface
from .base import Runner
from .gpu_libs import ort_gpu_missing, preload_gpu_libraries, provider_failure, shadowed_gpu_build
from .onnx_info import read_onnx_info

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

PROVIDER_CHAIN = ("tensorrt", "cuda", "cpu")
EP_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def trt_cache_dir(model: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.ort-trt-cache/` (engine and timing caches of the TensorRT EP)."""
    model = Path(model)
    return model.with_name(model.name + ".ort-trt-cache")


def trt_provider_options(
    cache: Path | None, height: int, width: int, batch: BatchProfile | tuple[int, int, int] = DEFAULT_BATCH_PROFILE,
    interface: Interface = WHOLE,
) -> dict[str, str]:
    """TensorRT EP options: caches (when `cache` is given) and a profile over every dynamic input
    of `interface` (the whole model's two images, or one half's inputs).

    fp16/int8 flags stay off: the EP then builds strongly typed, taking the precision from the
    model (an fp16 or Q/DQ ONNX), as the engine path does.
    """

    def shapes(n: int) -> str:
        return ",".join(f"{name}:{n}x{'x'.join(map(str, interface.shape(name, (height, width))))}" for name in interface.inputs)

    profile = BatchProfile.of(batch)
    options = {
        "trt_profile_min_shapes": shapes(profile.min),
        "trt_profile_opt_shapes": shapes(profile.opt),
        "trt_profile_max_shapes": shapes(profile.max),
    }
    if cache is not None:
        options |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
    return options


def plan_providers(requested: str, available: Sequence[str]) -> tuple[list[str], list[str]]:
    """The provider keys to try for `requested` (it and those after it in the chain, that this
    onnxruntime has; CPU always), and one note when any had to be skipped."""
    if requested not in PROVIDER_CHAIN:
        raise UserError(f"unknown ONNX Runtime provider {requested!r} (expected one of {', '.join(PROVIDER_CHAIN)})")
    wanted = list(PROVIDER_CHAIN[PROVIDER_CHAIN.index(requested):])
    chosen = [k for k in wanted if k == "cpu" or EP_NAMES[k] in available]
    skipped = [EP_NAMES[k] for k in wanted if k not in chosen]
    notes = []
    if skipped:
        notes.append(
            f"{' and '.join(skipped)} {'is' if len(skipped) == 1 else 'are'} not available in this onnxruntime "
            f"(it has {', '.join(available) or 'none'}): using {EP_NAMES[chosen[0]]}; {': '.join(ort_gpu_missing(available))}"
        )
    return chosen, notes


def prepare_cache_dir(cache: Path, stamp: dict[str, str]) -> Path:
    """Create the TensorRT EP cache folder; wipe it when the model/ORT/TensorRT/GPU stamp changed
    (cached engines are only valid for the exact combination that built them)."""
    stamp_file = cache / "toolkit-stamp.json"
    current: object = None
    if stamp_file.is_file():
        with contextlib.suppress(OSError, ValueError):
            current = json.loads(stamp_file.read_text(encoding="utf-8"))
    if cache.is_dir() and current != stamp:
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    if current != stamp:
        stamp_file.write_text(json.dumps(stamp, sort_keys=True) + "\n", encoding="utf-8")
    return cache


def _cache_stamp(model: Path, ort_version: str) -> dict[str, str]:
    from ..core.fsutil import sha256_file
    from ..core.optional import TENSORRT_DISTRIBUTIONS, TENSORRT_LIB_DISTRIBUTIONS, installed_distribution
    from .cuda_buffers import gpu_info

    gpu = "?"
    with contextlib.suppress(UserError):
        info = gpu_info()
        if info is not None:
            gpu = f"{info.name} ({info.compute_capability})"
    trt = installed_distribution(*TENSORRT_DISTRIBUTIONS, *TENSORRT_LIB_DISTRIBUTIONS)  # the libraries the EP loads
    return {"model_sha256": sha256_file(model), "onnxruntime": ort_version, "tensorrt": " ".join(trt) if trt else "?", "gpu": gpu}


class ProviderUnavailable(UserError):
    """A provider this onnxruntime lists that cannot run the model here: `reason` and `fix` apart,
    for `--provider auto`, which leaves it out and says why in a few words."""

    def __init__(self, path: str | Path, provider: str, reason: str, fix: str) -> None:
        self.reason, self.fix = reason, fix
        super().__init__(f"{path}: --provider {provider}: {reason}; {fix}")


def ort_reason(error: BaseException) -> str:
    """ONNX Runtime's reason, without its status prefix ("[ONNXRuntimeError] : 10 : ...") and
    the model path it repeats: the part that says what is wrong."""
    text = first_line(error, 2000)
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*(\w+)\s*:\s*", r"\1: ", text)
    text = re.sub(r"Load model from \S+ failed:\s*", "", text)
    # ORT's source location and C++ signature ("/onnxruntime_src/.../model.cc:256 onnxruntime::Model::
    # Model(...) Unsupported model IR version: 14, ..."): the message is what follows.
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+ .*?\)(?: const)? (?=[A-Z])", "", text)
    return text.strip()[:200]


def _ort() -> Any:
    return import_optional("onnxruntime", "onnxruntime", None)  # part of the base install


class OnnxRunner(Runner):
    """An `.onnx` model in ONNX Runtime. Opening reads the file with `onnx` (spec, metadata,
    interface checks) and plans the providers; the session is created by `activate()`."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        provider: str = "cpu",
        trt_batch: BatchProfile | tuple[int, int, int] = DEFAULT_BATCH_PROFILE,
        spinning: bool = True,
    ):
        """`spinning` False: the intra-op threads sleep between calls instead of spinning (what a
        benchmark timing several runtimes in one process needs; a server keeps the default)."""
        if provider not in PROVIDER_CHAIN:
            raise UserError(f"{path}: unknown ONNX Runtime provider {provider!r} (expected one of {', '.join(PROVIDER_CHAIN)}; "
                            "the other runtimes: openvino[:GPU|:NPU], auto)")
        try:
            self.trt_batch = BatchProfile.of(trt_batch, name="TensorRT EP batch profile")
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
        info = read_onnx_info(path)
        super().__init__(path, info.spec, info.metadata)
        self.threads = threads
        self.spinning = spinning
        self.provider = provider
        self.providers: list[str] = []  # what the session really uses (after activate)
        self.session: InferenceSession | None = None
        self._chosen, self._plan_notes = ["cpu"], []
        if provider != "cpu":
            available = _ort().get_available_providers()
            if provider in EP_NAMES and EP_NAMES[provider] not in available and shadowed_gpu_build(available):
                # the GPU build is installed but not the one imported: a GPU was meant, a CPU run would mislead
                raise ProviderUnavailable(path, provider, *ort_gpu_missing(available))
            self._chosen, self._plan_notes = plan_providers(provider, available)
        self.notes += self._plan_notes
        self._activation_notes: list[str] = []  # what the last activation fell back to

    def _note(self, text: str) -> None:
        """A note of this activation (replaced by the next one's; notes from opening stay)."""
        self._activation_notes.append(text)
        self.notes.append(text)

    def _session(self, providers: list[Any] | None = None) -> InferenceSession:
        """A session on `providers` (the CPU by default). Never ONNX Runtime's own fallback
        (`enable_fallback=0` holds for the session's life): a provider that raises while the
        session is made or at a run raises here (ORT would print the error and retry on the next
        provider, the CPU), so the reason is what the user reads."""
        ort = _ort()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        if not self.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), so, providers=providers or ["CPUExecutionProvider"], enable_fallback=0)
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise UserError(f"{self.path}: not a loadable ONNX model: ONNX Runtime refuses it ({ort_reason(e)})") from e

    def _provider_list(self) -> list[Any]:
        """The chosen providers, the TensorRT EP with its options (profile, caches)."""
        providers: list[Any] = []
        for key in self._chosen:
            if key != "tensorrt":
                providers.append(EP_NAMES[key])
                continue
            cache: Path | None = trt_cache_dir(self.path)
            try:
                prepare_cache_dir(cache, _cache_stamp(self.path, _ort().__version__))
            except OSError as e:
                self._note(f"{cache}: cannot use it as the TensorRT EP cache ({e.strerror or e}): engines are rebuilt every run")
                cache = None
            providers.append((EP_NAMES[key], trt_provider_options(cache, self.spec.height, self.spec.width, self.trt_batch, self.interface)))
        return providers

    def _accelerated_session(self) -> InferenceSession:
        """The session on the planned GPU provider chain. The provider asked for is listed by this
        onnxruntime (else `plan_providers` fell back to the CPU with a note): it must be in use at
        the end, or this is one line, not a silent CPU run that looks like a GPU pass; and it stays
        in use (`_session` turns ORT's own fallback off, which would also move the session to the
        CPU at the first failed run). A later provider of the chain that drops out is noted."""
        asked = EP_NAMES[self._chosen[0]]
        notes = preload_gpu_libraries(self._chosen)
        quiet = not debug_enabled()  # ORT logs every provider library that fails to load: the one line below says why
        try:
            if quiet:
                _ort().set_default_logger_severity(4)
            session = self._session(self._provider_list())
        except UserError as e:  # the provider raised (no fallback): a missing driver or library is the likelier cause than its words
            said = ort_reason(e.__cause__) if e.__cause__ is not None else str(e)
            raise ProviderUnavailable(self.path, self.provider, *provider_failure(asked, notes, said)) from None
        finally:
            if quiet:
                _ort().set_default_logger_severity(2)  # ORT's default (warnings), for the rest of the process
        used = list(session.get_providers())
        if asked not in used:  # listed, but no GPU or its libraries (CUDA, cuDNN, TensorRT) did not load: ORT only warns
            raise ProviderUnavailable(self.path, self.provider, *provider_failure(asked, notes))
        dropped = [EP_NAMES[k] for k in self._chosen[1:] if EP_NAMES[k] not in used and k != "cpu"]
        if dropped:
            self._note(f"{' and '.join(dropped)} failed to load: {asked} runs the model, its fallback is the CPU")
        return session

    def _activate(self) -> None:
        self.notes[:] = [n for n in self.notes if n not in self._activation_notes]  # noted afresh below
        self._activation_notes = []
        self.session = self._session() if self._chosen == ["cpu"] else self._accelerated_session()
        self.providers = list(self.session.get_providers())

    @property
    def uses_requested_provider(self) -> bool:
        """The session runs on the provider asked for (after activate): not a silent fallback."""
        return EP_NAMES[self._chosen[0]] in self.providers

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.session is not None  # Runner.infer refuses to run before activate()
        try:
            values = self.session.run(list(self.interface.outputs), {n: feed[n] for n in self.interface.inputs})
        except Exception as e:  # ORT's own exception types (Fail, InvalidArgument, RuntimeException)
            raise UserError(f"{self.path}: ONNX Runtime failed to run the model ({ort_reason(e)})") from e
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self.interface.outputs, values)}
