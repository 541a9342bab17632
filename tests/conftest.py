"""Shared fixtures: the original author's epoch-12 checkpoint, its import, and its ONNX export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LEGACY_FIXTURE = ROOT / "tests" / "fixtures" / "eva4-week15-epoch12.pt"
# A checkpoint `toolkit train` made on a synthetic set (64 px, 30 epochs; held-out mask IoU 0.76,
# depth RMSE 0.034): a model that segments the synthetic scenes, unlike the epoch-12 fixture.
TRAINED_FIXTURE = ROOT / "tests" / "fixtures" / "synthetic-64px-trained.pt"


def golden_inputs(h: int = 128, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """architecture.md's golden input pair, in [0, 1] (before normalisation), [1, 3, h, w]."""
    hh = np.arange(h, dtype=np.float64)[:, None]
    ww = np.arange(w, dtype=np.float64)[None, :]
    bg = np.stack([(np.sin(0.1 * hh + 0.2 * ww + c) + 1) / 2 for c in range(3)])[None]
    fg = np.stack([(np.cos(0.05 * hh * ww / 128 + c) + 1) / 2 for c in range(3)])[None]
    return bg.astype(np.float32), fg.astype(np.float32)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, block_torch: bool = False,
            path_first: Path | None = None, without_dac_override: bool = False):
    """Run `python -m toolkit ...` in a subprocess (optionally with torch made unimportable, or
    with the packages in `path_first` imported before this environment's own, or with file
    permissions applying to it even as root: `without_dac_override`)."""
    code = "import sys\n"
    if block_torch:
        code += "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
    code += "from toolkit.cli import main\nmain(sys.argv[1:])\n"
    return run_python(code, *args, env=env, cwd=cwd, path_first=path_first, without_dac_override=without_dac_override)


def run_python(code: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               path_first: Path | None = None, without_dac_override: bool = False, timeout: float = 600):
    """`python -c CODE ARGS` with this checkout importable. `without_dac_override`: when this
    runs as root (CI does), the child gives up root's permission override first (see
    `DROP_DAC_OVERRIDE`), so a read-only folder or an unreadable file stops it as it stops any user."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in (path_first, ROOT) if p), **(env or {}))
    full_env.pop("COLUMNS", None)  # output is piped here, as in CI logs: it must not be cut
    argv = [sys.executable, "-c", code, *args]
    if without_dac_override and os.geteuid() == 0:
        argv = [sys.executable, "-c", DROP_DAC_OVERRIDE, *argv[1:]]
    done = subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=cwd or ROOT, timeout=timeout)
    if done.returncode == CANNOT_DROP:  # a container that withholds CAP_SETPCAP: say so, loudly, instead of a false failure
        pytest.skip(done.stderr.strip().splitlines()[-1])
    return done


# Run as `python -c DROP_DAC_OVERRIDE -c CODE ARGS`: drop CAP_DAC_OVERRIDE (1) and
# CAP_DAC_READ_SEARCH (2) from the bounding set (prctl PR_CAPBSET_DROP, 24), then exec Python
# again: a root process keeps only the bounding set's capabilities across exec, so the new one
# is still uid 0 (it owns the test's files and reaches every folder it made) but the mode bits
# of a file now apply to it. No privilege is gained; no mount or user switch is needed.
CANNOT_DROP = 77
DROP_DAC_OVERRIDE = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2):
    if libc.prctl(24, cap, 0, 0, 0) != 0:
        print(f"root here cannot drop capability {{cap}} (prctl: {{os.strerror(ctypes.get_errno())}}): "
              "a permission case cannot run as root on this machine", file=sys.stderr)
        sys.exit({CANNOT_DROP})
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


@pytest.fixture(scope="session")
def legacy_fixture() -> Path:
    assert LEGACY_FIXTURE.is_file(), "the epoch-12 fixture is part of the repository"
    return LEGACY_FIXTURE


@pytest.fixture(scope="session")
def imported_ckpt(tmp_path_factory, legacy_fixture) -> Path:
    from toolkit.net.legacy import import_legacy

    out = tmp_path_factory.mktemp("imported") / "epoch12.pt"
    import_legacy(legacy_fixture, out, calibration=None)  # the exact import: architecture.md's golden figures
    return out


@pytest.fixture(scope="session")
def exported_onnx(tmp_path_factory, imported_ckpt) -> Path:
    from export.onnx import export_onnx

    out = tmp_path_factory.mktemp("export") / "model.onnx"
    export_onnx(imported_ckpt, out)
    return out


@pytest.fixture(scope="session")
def exported_halves(tmp_path_factory, imported_ckpt, exported_onnx) -> Path:
    """A copy of the fp32 export with its fixed-camera halves beside it (model.bg.onnx,
    model.frame.onnx); returns the whole model's path. Read-only for tests: copy to change it."""
    from export.fixed_camera import export_halves

    out = tmp_path_factory.mktemp("pair") / "model.onnx"
    out.write_bytes(exported_onnx.read_bytes())
    export_halves(imported_ckpt, out)
    return out


@pytest.fixture(scope="session")
def trained_onnx(tmp_path_factory) -> Path:
    """The trained fixture's fp32 export (64x64); its checkpoint sits beside it as model.pt."""
    from export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("trained")
    ckpt = folder / "model.pt"
    ckpt.write_bytes(TRAINED_FIXTURE.read_bytes())
    export_onnx(ckpt, folder / "model.onnx")
    return folder / "model.onnx"


@pytest.fixture(scope="session")
def val_data(tmp_path_factory) -> Path:
    """A small synthetic set at 64 px with a seed no training set used: 5 backgrounds x 3 people x 2 placements."""
    from toolkit.data.synth import synthesize

    out = tmp_path_factory.mktemp("valdata") / "set"
    synthesize(out, backgrounds=5, foregrounds=3, placements=2, size=64, seed=77)
    return out


@pytest.fixture
def image_pair(tmp_path) -> tuple[Path, Path]:
    """A 96x80 bg/fgbg JPEG pair (not the model's size, so resizing is exercised)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    bg = (rng.random((80, 96, 3)) * 255).astype(np.uint8)
    fg = bg.copy()
    fg[20:70, 30:60] = [200, 120, 90]
    Image.fromarray(bg).save(tmp_path / "bg.jpg")
    Image.fromarray(fg).save(tmp_path / "fgbg.jpg")
    return tmp_path / "bg.jpg", tmp_path / "fgbg.jpg"
