"""Golden folders: parity's pairs and PyTorch's outputs on disk, to judge models where PyTorch is not.

`toolkit parity --save-golden DIR` writes what a parity run compared on: `inputs.npz` (bg, fgbg
float32 `[N, 3, H, W]`), `reference.npz` (PyTorch's mask, depth `[N, 1, H, W]`) and
`manifest.json` (format, the reference checkpoint's name and SHA-256, the I/O spec, the pair
count and source, the thresholds per precision it was judged by, and each array file's SHA-256).
`toolkit parity --golden DIR --model M` (`toolkit.verify.parity.check_golden`) checks a model against them on a device with no PyTorch,
with the same comparison, the same thresholds (the manifest's, unless given again on the command
line) and the same exit codes as a parity run beside the checkpoint.

Unlike the self-test's two pairs inside each model (`toolkit.verify.selftest`: "is this box still
right?"), a golden folder holds as many pairs as parity used, from the user's data: "is this
export the model I validated?". Arrays are read with `allow_pickle=False` and their hashes
checked before use; the folder is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.fsutil import sha256_file
from ..core.spec import INPUT_NAMES, OUTPUT_NAMES, IOSpec

GOLDEN_DIR_FORMAT = "toolkit-golden-dir/1"
MANIFEST, INPUTS, OUTPUTS = "manifest.json", "inputs.npz", "reference.npz"


@dataclass
class GoldenSet:
    feeds: list[dict[str, np.ndarray]]
    refs: list[dict[str, np.ndarray]]
    manifest: dict[str, Any]

    @property
    def spec(self) -> IOSpec:
        return IOSpec.from_dict(self.manifest["iospec"])


def _concat(batches: list[dict[str, np.ndarray]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {n: np.concatenate([b[n] for b in batches]).astype(np.float32) for n in names}


def check_golden_target(folder: str | Path) -> Path:
    """A folder --save-golden may write: new, empty, or an earlier golden folder (replaced)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MANIFEST).is_file())):
        raise UserError(f"{folder}: exists and is not a golden folder; give a new or empty folder for --save-golden")
    return folder


def write_golden(folder: str | Path, *, reference: Any, feeds: list[dict[str, np.ndarray]], refs: list[dict[str, np.ndarray]],
                 thresholds: dict[str, Any], source: str) -> Path:
    """Write the golden folder (see the module docstring). `reference` is the runner whose outputs
    `refs` are; `thresholds` maps each precision to its `toolkit.verify.compare.Thresholds`. An existing
    golden folder is replaced; any other non-empty folder is refused."""
    folder = check_golden_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.savez(tmp / INPUTS, **_concat(feeds, INPUT_NAMES))
        np.savez(tmp / OUTPUTS, **_concat(refs, OUTPUT_NAMES))
        manifest = {
            "format": GOLDEN_DIR_FORMAT,
            "reference": Path(reference.path).name,
            "reference_sha256": sha256_file(reference.path),
            "iospec": reference.spec.to_dict(),
            "pairs": int(sum(f[INPUT_NAMES[0]].shape[0] for f in feeds)),
            "batch_size": int(feeds[0][INPUT_NAMES[0]].shape[0]),
            "source": source,
            "thresholds": {p: asdict(t) for p, t in thresholds.items()},
            "files": {name: sha256_file(tmp / name) for name in (INPUTS, OUTPUTS)},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        old = None
        if folder.exists():
            old = folder.with_name(tmp.name + ".old")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: np.asarray(z[n], dtype=np.float32) for n in names}
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: not a readable golden array file ({str(e).splitlines()[0][:120]})") from None
    shapes = {a.shape[0] for a in arrays.values()}
    if len(shapes) != 1 or any(a.ndim != 4 for a in arrays.values()):
        raise UserError(f"{path}: arrays of unexpected shapes {[list(a.shape) for a in arrays.values()]}")
    return arrays


def _check_manifest(manifest: dict[str, Any]) -> None:
    """The fields a check reads, of the right kinds (the manifest is not under the hashes)."""
    from .compare import Thresholds

    for key, kind in (("reference", str), ("reference_sha256", str), ("pairs", int), ("thresholds", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{key!r} missing or not a {kind.__name__}")
    for precision, values in manifest["thresholds"].items():
        if not isinstance(values, dict) or not all(v is None or isinstance(v, int | float) for v in values.values()):
            raise ValueError(f"thresholds of {precision!r} are not numbers")
        Thresholds(**values)


def read_golden_dir(folder: str | Path) -> GoldenSet:
    """The pairs and reference outputs of a golden folder, their hashes checked; one line when
    the folder is missing, of another format, or changed since it was written."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise UserError(f"{folder}: no {MANIFEST}: not a golden folder (write one with toolkit parity --save-golden DIR)")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != GOLDEN_DIR_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {GOLDEN_DIR_FORMAT}")
        files, batch = dict(manifest["files"]), int(manifest["batch_size"])
        IOSpec.from_dict(manifest["iospec"])
        _check_manifest(manifest)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{folder / MANIFEST}: not a valid golden manifest ({e})") from None
    for name in (INPUTS, OUTPUTS):
        if not (folder / name).is_file():
            raise UserError(f"{folder}: {name} is missing")
        if sha256_file(folder / name) != files.get(name):
            raise UserError(f"{folder / name}: its SHA-256 does not match the manifest (changed since it was written)")
    inputs, outputs = _arrays(folder / INPUTS, INPUT_NAMES), _arrays(folder / OUTPUTS, OUTPUT_NAMES)
    n = inputs[INPUT_NAMES[0]].shape[0]
    if outputs[OUTPUT_NAMES[0]].shape[0] != n or n != int(manifest.get("pairs", -1)):
        raise UserError(f"{folder}: {n} input pairs, {outputs[OUTPUT_NAMES[0]].shape[0]} reference outputs, "
                        f"the manifest says {manifest.get('pairs')}")
    cut = [(i, min(i + max(batch, 1), n)) for i in range(0, n, max(batch, 1))]
    return GoldenSet([{k: v[a:b] for k, v in inputs.items()} for a, b in cut],
                     [{k: v[a:b] for k, v in outputs.items()} for a, b in cut], manifest)

