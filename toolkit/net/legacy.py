"""Read the original author's whole-module checkpoints without running anything from them.

The original `Models_pt/*.pt` files are legacy (pre-zip) `torch.save`s of the whole `Net`
object: loading them the ordinary way imports `__main__.Net` and executes pickle opcodes that
can call any global. Here a restricted unpickler resolves only the globals architecture.md
lists, to inert stand-ins that merely record state; tensors are rebuilt from the raw storage
bytes with numpy. Any other global stops the import and is named in the error.

Both the legacy stream layout (magic, protocol, sys-info, object, storage keys, raw storages)
and the zip layout (`<archive>/data.pkl` + `<archive>/data/<key>`) are read.
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..core.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# Storage classes -> numpy dtypes.
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_MODULE_CLASSES = {
    ("__main__", "Net"),
    ("__main__", "depthwise_separable_conv"),
    ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.batchnorm", "BatchNorm2d"),
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.conv", "Conv2d"),
    ("torch.nn.modules.pooling", "MaxPool2d"),
    ("torch.nn.modules.upsampling", "Upsample"),
}


class LegacyImportError(UserError):
    """The file is not a legacy checkpoint this importer accepts."""


class _Module:
    """Inert stand-in for an allowed nn.Module class: pickle's BUILD fills its __dict__."""

    qualname = "?"


@dataclass
class _StorageRef:
    key: str
    dtype: Any
    numel: int | None


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source
        self.stubs: dict[tuple[str, str], type] = {}
        self.storage_refs: list[_StorageRef] = []

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _MODULE_CLASSES:
            key = (module, name)
            if key not in self.stubs:
                self.stubs[key] = type(name, (_Module,), {"qualname": f"{module}.{name}"})
            return self.stubs[key]
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        raise LegacyImportError(f"{self.source}: refused: the file needs the global '{module}.{name}', which is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise LegacyImportError(f"{self.source}: unexpected persistent id in the pickle")
        kind = pid[0]
        if kind == "module":  # ('module', cls, source_file, source): the class only
            return pid[1]
        if kind == "storage":
            storage_type, key = pid[1], str(pid[2])
            numel = int(pid[4]) if len(pid) > 4 and isinstance(pid[4], int) else None
            if not isinstance(storage_type, _StorageType):
                raise LegacyImportError(f"{self.source}: unsupported storage type in the pickle")
            ref = _StorageRef(key, storage_type.dtype, numel)
            self.storage_refs.append(ref)
            return ref
        raise LegacyImportError(f"{self.source}: unexpected persistent id {kind!r} in the pickle")


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> Any:
        return _STORAGES[self.name]


class _NoGlobals(pickle.Unpickler):
    """For the plain-data pickles of the legacy header: no globals at all."""

    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        raise LegacyImportError(f"{self.source}: refused: unexpected global '{module}.{name}' in the file header")


@dataclass
class LegacyModel:
    """What was read: flat state dict (numpy arrays) and the class names seen."""

    state: dict[str, np.ndarray]
    root_class: str


def read_legacy(path: str | Path) -> LegacyModel:
    """Parse a legacy whole-module (or state-dict) checkpoint into numpy arrays."""
    path = Path(path)
    if path.is_dir():
        raise LegacyImportError(f"{path}: is a folder, expected a checkpoint file")
    if not path.is_file():
        raise LegacyImportError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    data = path.read_bytes()
    if not data:
        raise LegacyImportError(f"{path}: empty file")
    state: dict[str, np.ndarray] = {}
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            root, storages = _read_zip_layout(data, str(path))
        else:
            root, storages = _read_stream_layout(data, str(path))
        if isinstance(root, dict) and root.get("format") == "toolkit.checkpoint":
            raise LegacyImportError(f"{path}: already a toolkit checkpoint; no import needed")
        _flatten(root, "", state, storages, str(path))
    except LegacyImportError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, KeyError, IndexError,
            AttributeError, RecursionError, zipfile.BadZipFile, MemoryError) as e:
        from ..core.sniff import describe

        kind = describe(path)
        if kind in ("a Python pickle", "a PyTorch checkpoint archive"):
            why = "its pickled data is cut short or damaged"
        else:
            why = f"it is {kind}" + (" (an unfinished download or copy?)" if "cut short" in kind else ", not a PyTorch checkpoint")
        raise LegacyImportError(f"{path}: not a readable legacy checkpoint: {why}") from e
    if not state:
        raise LegacyImportError(f"{path}: the file holds no tensors")
    root_class = root.qualname if isinstance(root, _Module) else type(root).__name__
    return LegacyModel(state, root_class)


def _read_stream_layout(data: bytes, source: str) -> tuple[Any, dict[str, np.ndarray]]:
    f = io.BytesIO(data)
    magic = _NoGlobals(f, source).load()
    if magic != LEGACY_MAGIC:
        raise LegacyImportError(f"{source}: not a legacy torch checkpoint (bad magic number)")
    _NoGlobals(f, source).load()  # protocol version
    _NoGlobals(f, source).load()  # sys info
    unpickler = _RestrictedUnpickler(f, source)
    root = unpickler.load()
    refs = unpickler.storage_refs
    keys = _NoGlobals(f, source).load()
    by_key = {r.key: r for r in refs}
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        dtype = np.dtype(by_key[str(key)].dtype)
        raw = f.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise LegacyImportError(f"{source}: truncated file (storage {key} is incomplete)")
        storages[str(key)] = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    return root, storages


def _read_zip_layout(data: bytes, source: str) -> tuple[Any, dict[str, np.ndarray]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise LegacyImportError(f"{source}: zip file without data.pkl: not a torch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        unpickler = _RestrictedUnpickler(io.BytesIO(z.read(pkl)), source)
        root = unpickler.load()
        refs = unpickler.storage_refs
        storages = {}
        for r in refs:
            member = f"{prefix}data/{r.key}"
            storages[r.key] = np.frombuffer(z.read(member), dtype=np.dtype(r.dtype).newbyteorder("<")).astype(r.dtype)
    return root, storages


def _tensor(ref: _TensorRef, storages: dict[str, np.ndarray], name: str, source: str) -> np.ndarray:
    flat = storages.get(ref.storage.key)
    if flat is None:
        raise LegacyImportError(f"{source}: tensor {name} points at a missing storage")
    needed = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride)) + 1 if ref.size else ref.offset + 1
    if any(s == 0 for s in ref.size):
        return np.zeros(ref.size, dtype=flat.dtype)
    if needed > flat.size or ref.offset < 0 or any(st < 0 for st in ref.stride):
        raise LegacyImportError(f"{source}: tensor {name} does not fit its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.size, strides=[st * flat.itemsize for st in ref.stride]
    )
    return np.array(view, copy=True)


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray], storages: dict[str, np.ndarray], source: str) -> None:
    if isinstance(obj, _Module):
        d = obj.__dict__
        for group in ("_parameters", "_buffers", "_modules"):
            if not isinstance(d.get(group) or {}, dict):
                raise LegacyImportError(f"{source}: malformed module state ({prefix or 'root'}{group} is not a dict)")
        for group in ("_parameters", "_buffers"):
            for name, ref in (d.get(group) or {}).items():
                if ref is not None:
                    _flatten(ref, f"{prefix}{name}", out, storages, source)
        for name, child in (d.get("_modules") or {}).items():
            if child is not None:
                _flatten(child, f"{prefix}{name}.", out, storages, source)
    elif isinstance(obj, _TensorRef):
        out[prefix] = _tensor(obj, storages, prefix, source)
    elif isinstance(obj, dict):  # a plain state dict
        for name, value in obj.items():
            if isinstance(value, (_TensorRef, _Module, dict)):
                sep = "" if isinstance(value, _TensorRef) else "."
                _flatten(value, f"{prefix}{name}{sep}", out, storages, source)


@dataclass
class ImportReport:
    source: Path
    out: Path
    root_class: str
    epoch: int
    tensors: int
    parameters: int
    dropped: dict[str, int]  # unused module -> parameter count dropped
    recalibration: Any = None  # toolkit.net.recalibrate.Recalibration, unless the statistics were kept


def epoch_from_name(path: Path) -> int:
    """The original files are `Models_pt/<epoch>.pt`: the number ending the stem, else 0."""
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else 0


def legacy_checkpoint(source: str | Path, *, epoch: int | None = None) -> tuple[dict[str, Any], LegacyModel, dict[str, int]]:
    """An original checkpoint as a toolkit checkpoint dict, in memory (seed recipe decoding,
    128 px, BatchNorm statistics as shipped), the file as read, and the parameters dropped per
    unused module."""
    import torch  # lazy: the edge install never gets here

    from ..core.fsutil import sha256_file
    from ..core.spec import SEED_SPEC
    from .checkpoint import make_checkpoint, validate_checkpoint
    from .model import UNUSED_LEGACY_MODULES

    source = Path(source)
    legacy = read_legacy(source)
    dropped: dict[str, int] = {}
    state: dict[str, torch.Tensor] = {}
    for key, arr in legacy.state.items():
        module = key.split(".", 1)[0]
        if module in UNUSED_LEGACY_MODULES:
            if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                dropped[module] = dropped.get(module, 0) + int(arr.size)
            continue
        state[key] = torch.from_numpy(arr.copy(order="C"))
    ckpt = make_checkpoint(
        state,
        SEED_SPEC,
        epoch=epoch_from_name(source) if epoch is None else epoch,
        recipe="seed",
        source=f"import-legacy {source.name} sha256:{sha256_file(source)}",
    )
    validate_checkpoint(ckpt, source)
    return ckpt, legacy, dropped


def import_legacy(source: str | Path, out: str | Path, *, epoch: int | None = None, calibration: Any = "default",
                  say: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Convert an original checkpoint into the toolkit's format (seed recipe decoding, 128 px).

    `calibration` (a `toolkit.net.recalibrate.CalibrationOptions`; "default": its defaults, a
    synthetic set): re-estimate every BatchNorm's running statistics, the tail one set per head,
    and refuse (`CheckFailed`, nothing written) when the label-free agreement stays low. The
    original files' statistics are a blend of both heads' that eval mode cannot use
    (architecture.md). None writes the exact old import, statistics as shipped. `progress(done,
    total)`: its batches."""
    from ..core.fsutil import check_output_file
    from .checkpoint import build_net, save_checkpoint

    source, out = Path(source), Path(out)
    check_output_file(out)  # before the minutes of re-estimation, not after them
    ckpt, legacy, dropped = legacy_checkpoint(source, epoch=epoch)
    tensors = len(ckpt["model"])
    params = sum(p.numel() for p in build_net(ckpt).parameters())
    report = None
    if calibration is not None:
        from .recalibrate import CalibrationOptions, recalibrate_checked

        calibration = CalibrationOptions() if calibration == "default" else calibration
        ckpt, report = recalibrate_checked(ckpt, calibration, str(out), say, progress)
    save_checkpoint(out, ckpt)
    return ImportReport(source, out, legacy.root_class, int(ckpt["epoch"]), tensors, params, dropped, report)
