"""The toolkit's checkpoint format: save atomically, load safely, validate before use.

A checkpoint is a `torch.save`d dict of plain data (tensors, numbers, strings, lists, dicts), so
`torch.load(path, weights_only=True)` reads it and no file can run code on load. It holds the
state dict of `EVA4Net`, the `IOSpec` (input size, normalisation, output decoding), the recipe
and epoch/step, and, for training checkpoints, optimiser/scheduler/RNG state for `--resume`.

Integrity (format version 2): `save_checkpoint` stores `payload_sha256`, the SHA-256 of a
canonical serialisation of every *other* entry of the dict (`payload_sha256()` defines it: the
nested dicts/lists walked in sorted key order, each tensor as dtype, shape and its raw
little-endian element bytes, each number/string/None as a typed token). It covers the weights,
the I/O spec, the metadata and the training state alike, and does not depend on torch.save's
zip layout or pickle protocol, so re-saving the same content gives the same hash.
`load_checkpoint` recomputes it and refuses a mismatch (a file changed or damaged after it was
written) in one line. Version 1 checkpoints (written before the hash existed) carry none and
still load, unverified; a version 2 file without one is refused (the hash was stripped). A
version newer than `FORMAT_VERSION` is refused with a request to upgrade.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..core.errors import UserError
from ..core.fsutil import atomic_path, regular_file_problem
from ..core.spec import ORIGINAL_DEPTH_CONVENTION, IOSpec
from .model import TAIL_STATS, EVA4Net, MaskDepthModel, tail_stats_of

FORMAT = "toolkit.checkpoint"
FORMAT_VERSION = 2  # 2 added payload_sha256; version 1 files still load (without the check)
HASH_KEY = "payload_sha256"
ARCH = {"name": "eva4-week15", "params": 493_408}  # + "tail_stats" (`toolkit.net.model.TAIL_STATS`)


def make_checkpoint(
    model_state: dict[str, torch.Tensor],
    spec: IOSpec,
    *,
    epoch: int = 0,
    step: int = 0,
    recipe: str = "seed",
    source: str = "",
    metrics: dict[str, float] | None = None,
    training: dict[str, Any] | None = None,
    tail_stats: str | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict (weights are copied to CPU so the file is device-neutral).
    `tail_stats`: how the network's tail kept its statistics (`toolkit.net.model.TAIL_STATS`); by
    default what the state dict holds ("per_head" or "shared")."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "toolkit_version": __version__,
        "arch": {**ARCH, "tail_stats": tail_stats or tail_stats_of(model_state)},
        "model": {k: v.detach().to("cpu").clone() for k, v in model_state.items()},
        "iospec": spec.to_dict(),
        "recipe": recipe,
        "epoch": int(epoch),
        "step": int(step),
        "source": source,
        "metrics": dict(metrics or {}),
        "training": training or {},
    }


def payload_sha256(ckpt: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical serialisation of every entry of `ckpt` but `HASH_KEY`."""
    h = hashlib.sha256(b"toolkit.checkpoint payload v1\0")
    _feed(h, {k: v for k, v in ckpt.items() if k != HASH_KEY})
    return h.hexdigest()


def _token(h: Any, tag: bytes, data: bytes = b"") -> None:
    h.update(tag + struct.pack("<Q", len(data)) + data)


def _sort_key(key: Any) -> tuple[str, str]:
    return (type(key).__name__, repr(key))  # keys may mix types (optimiser state uses ints)


def _feed(h: Any, obj: Any) -> None:
    """Typed, length-prefixed tokens: no two different payloads give the same byte stream."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous().reshape(-1)
        _token(h, b"T", f"{t.dtype}|{tuple(obj.shape)}".encode())
        h.update(struct.pack("<Q", t.numel() * t.element_size()))
        if t.numel():
            h.update(t.view(torch.uint8).numpy())  # little-endian on every platform torch ships for
    elif isinstance(obj, dict):
        _token(h, b"D", str(len(obj)).encode())
        for key in sorted(obj, key=_sort_key):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        _token(h, b"L" if isinstance(obj, list) else b"U", str(len(obj)).encode())
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, bool):
        _token(h, b"B", repr(obj).encode())
    elif isinstance(obj, int):
        _token(h, b"I", str(obj).encode())
    elif isinstance(obj, float):
        _token(h, b"F", (repr(obj) if not math.isfinite(obj) else obj.hex()).encode())
    elif isinstance(obj, str):
        _token(h, b"S", obj.encode("utf-8", "surrogatepass"))
    elif isinstance(obj, (bytes, bytearray)):
        _token(h, b"Y", bytes(obj))
    else:  # torch.dtype, torch.device, ... (what weights_only lets through): their repr is stable
        _token(h, b"O", f"{type(obj).__module__}.{type(obj).__qualname__}:{obj!r}".encode())


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> Path:
    """Write atomically with the payload's SHA-256: a crash mid-write leaves the previous file
    intact, and a file changed afterwards is refused on load."""
    with atomic_path(path) as tmp:
        torch.save({**ckpt, HASH_KEY: payload_sha256(ckpt)}, tmp)
    return Path(path)


def verify_payload(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> bool:
    """Check the stored payload hash; True when verified, False for a version 1 file (no hash)."""
    stored = ckpt.get(HASH_KEY)
    if stored is None:
        if ckpt.get("format_version") == 1:
            return False
        raise UserError(f"{path}: checkpoint carries no {HASH_KEY} (format version {ckpt.get('format_version')} always does)")
    actual = payload_sha256(ckpt)
    if stored != actual:
        shown = stored[:12] if isinstance(stored, str) else type(stored).__name__
        raise UserError(
            f"{path}: checkpoint content does not match its SHA-256 (stored {shown}..., content {actual[:12]}...): "
            f"the file was changed or damaged after it was written"
        )
    return True


def _torch_load(path: Path, *, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` with every problem as one UserError line. `mmap`: map the
    tensors' storages instead of reading them (for a look at the header)."""
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a checkpoint file")
    problem = regular_file_problem(path)
    if problem is not None:  # a FIFO or a device would block torch.load or never end
        raise UserError(f"{path}: not a readable checkpoint ({problem})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch.load raises many types on garbage (KeyError, RuntimeError, ...)
        if mmap and isinstance(e, RuntimeError) and "mmap" in str(e):
            return _torch_load(path)  # a pre-zip torch.save layout cannot be mapped: read it
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and ("Unsupported global" in text or "GLOBAL" in text):
            raise UserError(
                f"{path}: refused: the file needs code to load, which a toolkit checkpoint never does "
                f"(for the original author's files use `toolkit import-legacy`)"
            ) from e
        raise UserError(f"{path}: not a readable checkpoint: {_why_not_a_checkpoint(path)}") from e


def _why_not_a_checkpoint(path: Path) -> str:
    """What the file is instead (torch.load's own text is an internal fragment: "101")."""
    from ..core.sniff import describe

    kind = describe(path)
    if kind == "a PyTorch checkpoint archive":
        return "its PyTorch archive is damaged (a member is missing or corrupt)"
    if "cut short" in kind:
        return f"it is {kind} (an unfinished download or copy?)"
    if kind == "a Python pickle":
        return "it is a Python pickle, not a toolkit checkpoint (for the original author's files use `toolkit import-legacy`)"
    return f"it is {kind}, not a PyTorch checkpoint (a zip archive written by torch.save)"


def load_checkpoint(path: str | Path, *, check_finite: bool = True) -> dict[str, Any]:
    """Load and validate a toolkit checkpoint; any problem is a one-line `UserError`."""
    path = Path(path)
    ckpt = _torch_load(path)
    _check_header(ckpt, path)
    verify_payload(ckpt, path)
    validate_checkpoint(ckpt, path, check_finite=check_finite)
    return ckpt


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says about itself, read without loading its weights."""

    spec: IOSpec
    recipe: str


def read_checkpoint_header(path: str | Path) -> CheckpointHeader:
    """The header and I/O spec of a checkpoint, its tensors memory-mapped, not read: how a
    runner knows the model's size before `activate()` loads (and verifies) the weights."""
    path = Path(path)
    ckpt = _torch_load(path, mmap=True)
    _check_header(ckpt, path)
    try:
        spec = spec_of(ckpt)
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{path}: checkpoint has an invalid I/O spec ({e})") from e
    return CheckpointHeader(spec, str(ckpt.get("recipe", "")))


def _check_header(ckpt: Any, path: str | Path) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a toolkit checkpoint (no '{FORMAT}' header)")
    version = ckpt.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"{path}: checkpoint has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format version {version} is newer than this toolkit reads "
            f"({FORMAT_VERSION}); upgrade toolkit"
        )


def validate_checkpoint(ckpt: Any, path: str | Path = "checkpoint", *, check_finite: bool = True) -> None:
    """The content checks (header, I/O spec, every tensor's name, shape and finiteness); the
    payload hash is `load_checkpoint`'s business (an in-memory dict has none yet)."""
    _check_header(ckpt, path)
    try:
        spec_of(ckpt)
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{path}: checkpoint has an invalid I/O spec ({e})") from e
    state = ckpt.get("model")
    if not isinstance(state, dict):
        raise UserError(f"{path}: checkpoint holds no model state dict")
    tail_stats = tail_stats_from(ckpt, path)
    if (tail_stats == "per_head") != (tail_stats_of(state) == "per_head"):
        raise UserError(f"{path}: checkpoint says its tail keeps {tail_stats} BatchNorm statistics, "
                        f"its weights hold {tail_stats_of(state)} ones")
    expected = EVA4Net(tail_stats).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{path}: weights do not fit the EVA4 network ({detail})")
    for name, ref in expected.items():
        t = state[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(ref.shape):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise UserError(f"{path}: tensor {name} has shape {shape}, the network needs {tuple(ref.shape)}")
        if check_finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"{path}: tensor {name} holds NaN or inf values")


def tail_stats_from(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> str:
    """The architecture field that says how the tail keeps its BatchNorm statistics. Checkpoints
    written before the field existed load as they are: "joint" for the improved recipe (which
    always trained the tail jointly), "shared" for the rest (the seed's recipe, legacy imports)."""
    arch = ckpt.get("arch")
    value = arch.get("tail_stats") if isinstance(arch, dict) else None
    if value is None:
        value = "joint" if ckpt.get("recipe") == "improved" else "shared"
    if value not in TAIL_STATS:
        raise UserError(f"{path}: checkpoint has an unknown tail_stats {value!r} (known: {', '.join(TAIL_STATS)})")
    return str(value)


def spec_of(ckpt: dict[str, Any]) -> IOSpec:
    """The checkpoint's I/O spec. One written before the depth convention was recorded reads as
    `IOSpec.from_dict` says (near-bright: the toolkit's synthetic set then), except an import of
    the original author's files, whose depth is the original set's (far-bright)."""
    d = dict(ckpt["iospec"])
    if "depth_convention" not in d and str(ckpt.get("source", "")).startswith("import-legacy"):
        d["depth_convention"] = ORIGINAL_DEPTH_CONVENTION
    return IOSpec.from_dict(d)


def build_net(ckpt: dict[str, Any]) -> EVA4Net:
    """The network of a (validated) checkpoint, its architecture as recorded, its weights loaded."""
    net = EVA4Net(tail_stats_from(ckpt))
    net.load_state_dict(ckpt["model"])
    return net


def build_model(ckpt: dict[str, Any]) -> MaskDepthModel:
    """The wrapped model ([0, 1] in and out) in eval mode, on the CPU."""
    net = build_net(ckpt)
    return MaskDepthModel(net, spec_of(ckpt)).eval()


