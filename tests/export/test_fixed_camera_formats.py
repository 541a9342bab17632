"""Every ONNX export carries its fixed-camera halves: the fp32 pair beside model.onnx, the fp16
pair beside model.fp16.onnx; parity judges each pair; an exported .onnx source brings its own."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.formats import ExportOptions, exit_code, run_exports
from toolkit.deploy.footage import background, walking_frames
from toolkit.render import imageio

# Few check pairs (as test_formats.py does): three exports in this module, each costs seconds.
OPTIONS = ExportOptions(fp16=True, calib_pairs=8, gate_pairs=4)
TRIO = ["model.bg.onnx", "model.frame.onnx", "model.onnx"]
FP16_TRIO = ["model.fp16.bg.onnx", "model.fp16.frame.onnx", "model.fp16.onnx"]


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def rows(outcomes) -> dict[str, list[tuple[str, str, str, bool]]]:
    """row key -> [(file name, precision, part, written)] of its artifacts."""
    return {o.format.key: [(a.path.name, a.precision, a.part, a.written) for a in o.artifacts] for o in outcomes}


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def from_checkpoint(imported_ckpt, tmp_path_factory):
    """`toolkit export CKPT --fp16`: (the out folder, the outcomes)."""
    out = tmp_path_factory.mktemp("from-ckpt")
    outcomes = run_exports(imported_ckpt, out, options=OPTIONS)
    assert exit_code(outcomes) == 0, [o.error for o in outcomes]
    return out, outcomes


def test_an_export_writes_the_halves_beside_each_onnx_model(from_checkpoint, imported_ckpt):
    out, outcomes = from_checkpoint
    assert sorted(p.name for p in out.iterdir()) == sorted(TRIO + FP16_TRIO)
    assert rows(outcomes) == {
        "onnx": [("model.onnx", "fp32", "whole", True), ("model.bg.onnx", "fp32", "bg", True),
                 ("model.frame.onnx", "fp32", "frame", True)],
        "fp16": [("model.fp16.onnx", "fp16", "whole", True), ("model.fp16.bg.onnx", "fp16", "bg", True),
                 ("model.fp16.frame.onnx", "fp16", "frame", True)],
    }
    assert all(a.path.parent == out for o in outcomes for a in o.artifacts)
    meta = {name: props(out / name) for name in TRIO + FP16_TRIO}
    digest = hashlib.sha256(imported_ckpt.read_bytes()).hexdigest()
    assert {m["toolkit.checkpoint_sha256"] for m in meta.values()} == {digest}  # every file names the checkpoint
    for whole, precision in (("model.onnx", "fp32"), ("model.fp16.onnx", "fp16")):
        stem = whole.removesuffix(".onnx")
        bg, frame = meta[f"{stem}.bg.onnx"], meta[f"{stem}.frame.onnx"]
        assert "toolkit.split" not in meta[whole] and meta[whole]["toolkit.precision"] == precision
        assert (bg["toolkit.split"], frame["toolkit.split"]) == ("bg", "frame")
        assert bg["toolkit.precision"] == frame["toolkit.precision"] == precision
        assert bg["toolkit.whole_onnx_sha256"] == frame["toolkit.whole_onnx_sha256"] == hashlib.sha256((out / whole).read_bytes()).hexdigest()
        assert bg["toolkit.split_pair"] == frame["toolkit.split_pair"] and len(bg["toolkit.split_pair"]) == 16
        assert (bg["toolkit.inputs"], bg["toolkit.outputs"]) == ("bg", "bg_features")
        assert (frame["toolkit.inputs"], frame["toolkit.outputs"]) == ("bg_features,fgbg", "mask,depth")
        assert bg["toolkit.bg_features"] == frame["toolkit.bg_features"] == "192x64x64"
    assert meta["model.fp16.bg.onnx"]["toolkit.split_pair"] != meta["model.bg.onnx"]["toolkit.split_pair"]


def test_the_fp16_halves_compute_the_fp16_model(from_checkpoint):
    """Run with ONNX Runtime directly (not the toolkit's runners): features once, then frames."""
    import onnxruntime as ort

    out, _ = from_checkpoint

    def session(name: str):
        return ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])

    def nchw(images):
        return imageio.to_nchw([imageio.resize(i.astype(np.float32) / 255.0, (128, 128)) for i in images])

    bg, frames = nchw([background(96, 128)]), nchw(walking_frames(3, 96, 128))
    features = session("model.fp16.bg.onnx").run(None, {"bg": bg})[0]
    assert features.dtype == np.float32 and features.shape == (1, 192, 64, 64)  # fp32 I/O, fp16 inside
    got = session("model.fp16.frame.onnx").run(["mask", "depth"], {"bg_features": np.repeat(features, 3, 0), "fgbg": frames})
    feed = {"bg": np.repeat(bg, 3, 0), "fgbg": frames}
    fp16 = session("model.fp16.onnx").run(["mask", "depth"], feed)
    fp32 = session("model.onnx").run(["mask", "depth"], feed)
    for g, h, f in zip(got, fp16, fp32):
        assert g.shape == f.shape == (3, 1, 128, 128)
        assert float(np.abs(g - h).max()) <= 1e-2 and float(np.abs(g - f).max()) <= 1e-2
        assert float(np.abs(g - f).mean()) <= 2e-3
    assert float(np.abs(fp32[0][0] - fp32[0][2]).max()) > 0.05  # frames that differ: the bounds above can fail


def test_parity_judges_the_halves_as_a_model_of_its_own(from_checkpoint, imported_ckpt):
    from toolkit.verify.parity import run_parity

    out, _ = from_checkpoint
    report = run_parity([out / "model.onnx"], reference=imported_ckpt, limit=4)
    assert [r.model for r in report.results] == [str(out / "model.onnx"), str(out / "model.bg+frame.onnx")]
    pair = report.results[1]
    assert pair.model.endswith("model.bg+frame.onnx") and pair.precision == "fp32" and pair.backend == "onnxruntime"
    assert pair.pairs == 4 and bool(pair) and pair.failures == [] and max(pair.max_abs.values()) <= 1e-4
    assert report


def test_an_onnx_source_with_its_halves_gives_the_fp16_halves(from_checkpoint, tmp_path):
    out, _ = from_checkpoint
    before = snapshot(out)
    outcomes = run_exports(out / "model.onnx", tmp_path / "fp16", options=OPTIONS)
    assert exit_code(outcomes) == 0, [o.error for o in outcomes]
    assert rows(outcomes) == {
        "onnx": [("model.onnx", "fp32", "whole", False), ("model.bg.onnx", "fp32", "bg", False),
                 ("model.frame.onnx", "fp32", "frame", False)],
        "fp16": [("model.fp16.onnx", "fp16", "whole", True), ("model.fp16.bg.onnx", "fp16", "bg", True),
                 ("model.fp16.frame.onnx", "fp16", "frame", True)],
    }
    assert [a.path for a in outcomes[0].artifacts] == [out / name for name in ("model.onnx", "model.bg.onnx", "model.frame.onnx")]
    assert sorted(p.name for p in (tmp_path / "fp16").iterdir()) == FP16_TRIO  # the given pair is not copied
    assert snapshot(out) == before  # nor touched
    bg, frame = (props(tmp_path / "fp16" / name) for name in FP16_TRIO[:2])
    assert bg["toolkit.precision"] == frame["toolkit.precision"] == "fp16"
    assert bg["toolkit.split_pair"] == frame["toolkit.split_pair"] != props(out / "model.bg.onnx")["toolkit.split_pair"]
    assert not any("no fixed-camera halves" in n for n in outcomes[1].artifacts[0].notes)


def test_an_onnx_source_without_halves_gives_no_halves_and_says_so(from_checkpoint, tmp_path):
    out, _ = from_checkpoint
    lone = tmp_path / "lone" / "model.onnx"
    lone.parent.mkdir()
    shutil.copy(out / "model.onnx", lone)
    (tmp_path / "fp16").mkdir()
    for stale in ("model.fp16.bg.onnx", "model.fp16.frame.onnx"):  # an earlier run's pair, of another model.fp16.onnx
        shutil.copy(out / stale, tmp_path / "fp16" / stale)
    outcomes = run_exports(lone, tmp_path / "fp16", options=OPTIONS)
    assert exit_code(outcomes) == 0, [o.error for o in outcomes]
    assert rows(outcomes) == {"onnx": [("model.onnx", "fp32", "whole", False)],
                              "fp16": [("model.fp16.onnx", "fp16", "whole", True)]}
    notes = outcomes[1].artifacts[0].notes
    assert "no fixed-camera halves: model.onnx has none beside it (export from the checkpoint to get one)" in notes
    assert [n for n in notes if n.startswith("removed ")] == [
        f"removed {name}, left by an earlier export (it does not belong to this model.fp16.onnx)"
        for name in ("model.fp16.bg.onnx", "model.fp16.frame.onnx")]
    assert sorted(p.name for p in (tmp_path / "fp16").iterdir()) == ["model.fp16.onnx"]
    assert sorted(p.name for p in lone.parent.iterdir()) == ["model.onnx"]
