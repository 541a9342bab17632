"""The bad-input corpus: every command that reads files, fed broken, hostile and odd inputs.

Each case runs the real command line (`toolkit.cli.main`, in-process for speed: ~1-2 s per
subprocess would make this a minutes-long suite) and asserts the contract for bad input:
exit code 2 (1 where a *check* ran and failed: `data check`), exactly one line on stderr that
names the file (or option) and the problem, no traceback, no warning, and nothing left behind:
the case's folder (inputs, `--out` targets, the working directory) holds exactly the paths it
held before. Output captured at the file-descriptor level, so a native library writing to
stderr (ONNX Runtime) counts too; Python warnings are counted as the lines they would print.

Hostile pickles create a marker file if any of their code runs; the case checks it is absent.
The files are made at test time by `tests.badinputs.corpus` (no checked-in binaries).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.badinputs import corpus as c
from tests.conftest import run_cli
from toolkit.cli import main


@dataclass
class Assets:
    """Good inputs shared by every case (made once; cases never write here)."""

    root: Path
    ckpt: Path  # the imported epoch-12 checkpoint (a hash-carrying toolkit checkpoint)
    onnx: Path  # its ONNX export
    legacy: Path  # the original author's file
    bg: Path
    fgbg: Path
    data: Path  # a tiny good data set folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory, imported_ckpt, exported_onnx, legacy_fixture) -> Assets:
    root = tmp_path_factory.mktemp("assets")
    return Assets(root=root, ckpt=imported_ckpt, onnx=exported_onnx, legacy=legacy_fixture,
                  bg=c.good_image(root / "bg.png"), fgbg=c.good_image(root / "fgbg.png", seed=1),
                  data=c.good_dataset(root / "data"))


@dataclass(frozen=True)
class Case:
    command: str  # the command under test (for the counts)
    id: str
    make: Callable[[Path, Assets], list[str]]  # builds the bad input in a fresh folder, returns argv
    expect: str  # regex the error line must match: the problem
    names: str  # what the line must name: the file (or the option)
    code: int = 2
    skip: Callable[[], str | None] = lambda: None  # a reason to skip here, or None
    unprivileged: bool = False  # a permission case: run (as root too) in a child without root's override

    @property
    def param(self):
        return pytest.param(self, id=f"{self.command}:{self.id}")


def _key(t: Path, text: str, mode: int = 0o600) -> Path:
    """A key file holding `text` (surrogates stand for bytes that are not ASCII)."""
    path = t / "serve.key"
    path.write_bytes(text.encode("utf-8", "surrogateescape") + b"\n")
    path.chmod(mode)
    return path


def _serve_key(a, key: Path) -> list[str]:
    return ["serve", "--model", str(a.onnx), "--key-file", str(key)]


def _has_tensorrt() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def _cuda() -> str | None:
    import torch

    return "CUDA is available here: --device cuda is not bad input" if torch.cuda.is_available() else None


def _unreadable(path: Path) -> Path:
    path.chmod(0)
    return path


def _infer(bg, fgbg, model, t, *extra) -> list[str]:
    return ["infer", str(bg), str(fgbg), "--model", str(model), "--out", str(t / "out"), *extra]


def _model(t: Path, a: Assets, path: Path) -> list[str]:
    return _infer(a.bg, a.fgbg, path, t)


JPEG, PNG = c.image_bytes("JPEG"), c.image_bytes("PNG")
ABS_MEMBER = "/tmp/toolkit-badinputs-absolute-member.jpg"  # must never be created


def _unsafe_zip(t: Path) -> Path:
    """Every member either climbs out (`../`) or is absolute: nothing may be written or opened."""
    files = c.sample_files()
    members = {f"../../{k}": v for k, v in files.items()}
    members[ABS_MEMBER] = files["OverlayedImages/combined_s1_p1_it1.jpg"]
    members["..\\..\\evil.jpg"] = JPEG
    return c.zip_of(t / "set.zip", members)


def _almost(t: Path) -> Path:
    """Names one character away from pairing: `it1` vs `it1 `, `p1` vs `pl`, `Shelves-1`."""
    f = c.sample_files()
    return c.dataset_folder(t / "set", {
        "Background/Shelves-1.jpg": f["Background/Shelves_1.jpg"],
        "OverlayedImages/combined_s1_p1_it1.jpg": f["OverlayedImages/combined_s1_p1_it1.jpg"],
        "OverlayedMasks/combined_s1_p1_it1 .jpg": f["OverlayedMasks/combined_s1_p1_it1.jpg"],
        "DepthImage/combined_s1_pl_it1.jpg": f["DepthImage/combined_s1_p1_it1.jpg"],
    })


def _unpaired(t: Path) -> Path:
    f = c.sample_files(s=1, p=1)
    f.update({k.replace("s1_p1", "s1_p2"): v for k, v in c.sample_files(s=1, p=2).items() if "Depth" in k})
    del f["DepthImage/combined_s1_p1_it1.jpg"]
    return c.dataset_folder(t / "set", f)


def _broken_member(t: Path) -> Path:
    """A well-formed zip holding one complete sample whose composite has a flipped byte."""
    files = {k: c.image_bytes("PNG", 32, 32, seed=i) for i, k in enumerate(c.sample_files())}
    return c.zip_with_bad_crc(t / "set.zip", files, "OverlayedImages/combined_s1_p1_it1.jpg")


def _mixed_with_bad_zip(t: Path) -> Path:
    root = c.good_dataset(t / "set", samples=2)
    c.corrupt_zip(root / "DepthImage2.zip")
    return root


def _truncated_member_set(t: Path) -> Path:
    f = c.sample_files()
    f["OverlayedImages/combined_s1_p1_it1.jpg"] = c.truncated(f["OverlayedImages/combined_s1_p1_it1.jpg"], 0.3)
    return c.dataset_folder(t / "set", f)


def _patched_set(t: Path, **patch) -> Path:
    """A zip holding one complete sample, its composite's headers patched (see corpus)."""
    victim = "OverlayedImages/combined_s1_p1_it1.jpg"
    z = c.zip_of(t / "set.zip", c.sample_files())
    return c.patch_zip_member(z, victim, **patch)


def _fifo_in_set(t: Path) -> Path:
    f = c.sample_files()
    key = "OverlayedMasks/combined_s1_p1_it1.jpg"
    del f[key]
    root = c.dataset_folder(t / "set", f)
    c.fifo(root / key)
    return root


def _sidecar_case(**overrides):
    return lambda t, a: _model(t, a, c.engine_with_sidecar(t / "model.engine", a.onnx, **overrides))


def _evil(kind: str):
    return lambda t: c.evil_toolkit_checkpoint(t / f"evil-{kind.split('.')[1].lower()}.pt", kind, t / "PWNED")


def _variant(name: str, change):
    return lambda t, a: c.checkpoint_variant(a.ckpt, t / name, change)


def _set(key, value):
    def change(ckpt):
        ckpt[key] = value
    return change


def _nan(ckpt):
    ckpt["model"]["convblock6.0.pointwise.weight"][0, 0] = float("nan")


def _inf(ckpt):
    ckpt["model"]["convblock4.0.depthwise.weight"].view(-1)[3] = float("inf")


def _wrong_shape(ckpt):
    import torch

    ckpt["model"]["convblock1.0.weight"] = torch.zeros(16, 3, 3, 3)


def _missing_key(ckpt):
    del ckpt["model"]["convblock1.0.weight"]


def _bad_iospec(ckpt):
    ckpt["iospec"] = dict(ckpt["iospec"], height=30)


def _stream(t: Path, a: Assets, *extra: str, model: Path | None = None, source: Path | None = None) -> list[str]:
    """`stream` over a folder of one good frame, unless another source is given."""
    if source is None:
        source = c.good_image(t / "frames" / "0001.png").parent
    return ["stream", "--model", str(model or a.onnx), "--source", str(source), "--out", str(t / "out"), *extra]


def _parity(t, a, *extra) -> list[str]:
    return ["parity", "--model", str(a.onnx), "--reference", str(a.ckpt), "--limit", "2", *extra]


def _train(*extra) -> Callable[[Path, Assets], list[str]]:
    """`train` with the given options (callables get (t, a)); small, fast defaults for the rest."""
    defaults = {"--out": lambda t: t / "run", "--epochs": "1", "--image-size": "32", "--batch-size": "2",
                "--workers": "0", "--device": "cpu"}

    def make(t, a):
        args = [str(x(t, a)) if callable(x) else x for x in extra]
        for option, value in defaults.items():
            if option not in args:
                args += [option, str(value(t)) if callable(value) else value]
        return ["train", *args]
    return make


def _garbage_sidecar(engine: Path, onnx_path: Path) -> Path:
    c.engine_with_sidecar(engine, onnx_path)
    (engine.parent / (engine.name + ".json")).write_text("{oops")
    return engine


BOMB = "zip bomb|ratio"
UNREADABLE_IMAGE = "not a readable image"
NO_PAIRS = "no image pairs found"
NEEDS_CODE = "refused: the file needs code to load"

CASES: list[Case] = [
    # --- images, through `infer BG FGBG` ---------------------------------------------------------
    Case("infer", "zero-byte", lambda t, a: _infer(c.write(t / "bg.png", b""), a.fgbg, a.onnx, t), "empty file", "bg.png"),
    Case("infer", "truncated-jpeg", lambda t, a: _infer(a.bg, c.write(t / "fgbg.jpg", c.truncated(JPEG)), a.onnx, t),
         "truncated or corrupt", "fgbg.jpg"),
    Case("infer", "truncated-png", lambda t, a: _infer(c.write(t / "bg.png", c.truncated(PNG, 0.6)), a.fgbg, a.onnx, t),
         "truncated or corrupt", "bg.png"),
    Case("infer", "wrong-extension-text", lambda t, a: _infer(c.write(t / "bg.jpg", b"hello, not an image\n"), a.fgbg, a.onnx, t),
         "unknown or corrupt format", "bg.jpg"),
    Case("infer", "random-bytes", lambda t, a: _infer(a.bg, c.write(t / "fgbg.png", os.urandom(4096)), a.onnx, t),
         UNREADABLE_IMAGE, "fgbg.png"),
    Case("infer", "decompression-bomb-header", lambda t, a: _infer(c.write(t / "bg.png", c.png_with_header(20_000, 20_000)), a.fgbg, a.onnx, t),
         "decompression bomb", "bg.png"),
    Case("infer", "decompression-bomb-real", lambda t, a: _infer(a.bg, c.write(t / "fgbg.png", c.bomb_png(9_000)), a.onnx, t),
         "decompression bomb", "fgbg.png"),
    Case("infer", "100000x1-header", lambda t, a: _infer(c.write(t / "bg.png", c.png_with_header(100_000, 1, rows=0)), a.fgbg, a.onnx, t),
         "truncated or corrupt", "bg.png"),
    Case("infer", "1x100000-header", lambda t, a: _infer(a.bg, c.write(t / "fgbg.png", c.png_with_header(1, 100_000, rows=3)), a.onnx, t),
         "truncated or corrupt", "fgbg.png"),
    Case("infer", "truncated-gif", lambda t, a: _infer(a.bg, c.write(t / "fgbg.gif", c.truncated(c.animated_gif(), 0.2)), a.onnx, t),
         "truncated or corrupt", "fgbg.gif"),
    Case("infer", "folder-for-file", lambda t, a: _infer((t / "bg.png").mkdir() or t / "bg.png", a.fgbg, a.onnx, t),
         "two image files, two folders, or one background and a folder of frames", "bg.png"),
    Case("infer", "missing-image", lambda t, a: _infer(t / "nope.png", a.fgbg, a.onnx, t), "no such file", "nope.png"),
    Case("infer", "fifo-for-image", lambda t, a: _infer(c.fifo(t / "bg.png"), a.fgbg, a.onnx, t), "not a regular file", "bg.png"),
    Case("infer", "unreadable-permissions", lambda t, a: _infer(_unreadable(c.write(t / "bg.png", PNG)), a.fgbg, a.onnx, t),
         "permission denied|is not readable", "bg.png", unprivileged=True),
    Case("infer", "empty-folders", lambda t, a: _infer((t / "bgs").mkdir() or t / "bgs", (t / "fgs").mkdir() or t / "fgs", a.onnx, t),
         NO_PAIRS, "fgs"),
    Case("infer", "unpaired-folders", lambda t, a: _infer(c.good_image(t / "bgs" / "room.png").parent,
                                                          c.good_image(t / "fgs" / "person.png").parent, a.onnx, t), NO_PAIRS, "fgs"),
    # --- models ------------------------------------------------------------------------------------
    Case("infer", "truncated-onnx", lambda t, a: _model(t, a, c.write(t / "m.onnx", c.truncated(a.onnx.read_bytes(), 0.5))),
         "not a loadable ONNX model", "m.onnx"),
    Case("infer", "json-named-onnx", lambda t, a: _model(t, a, c.write(t / "m.onnx", b'{"model": "not really"}\n')),
         "not a loadable ONNX model: it is a JSON text file", "m.onnx"),
    Case("infer", "onnx-other-input-names", lambda t, a: _model(t, a, c.onnx_with_inputs(t / "m.onnx", ("image", "fgbg"))),
         r"model has inputs \['fgbg', 'image'\]", "m.onnx"),
    Case("infer", "onnx-wrong-input-size", lambda t, a: _model(t, a, c.onnx_with_metadata(
        a.onnx, t / "m.onnx", **{"toolkit.iospec": json.dumps(dict(json.loads(_meta(a.onnx)["toolkit.iospec"]), height=64, width=64))})),
         "metadata says 64x64 but the graph takes 128x128", "m.onnx"),
    Case("infer", "onnx-int64-inputs", lambda t, a: _model(t, a, c.onnx_with_inputs(t / "m.onnx", ("bg", "fgbg"), dtype=7)),
         r"tensor\(int64\)", "m.onnx"),
    Case("infer", "onnx-other-output-shape", lambda t, a: _model(t, a, c.onnx_with_inputs(t / "m.onnx", ("bg", "fgbg"))),
         r"output mask has shape \[.N., 3, 128, 128\], expected \[N, 1, H, W\]", "m.onnx"),
    Case("infer", "model-fifo", lambda t, a: _model(t, a, c.fifo(t / "m.onnx")), "not a regular file", "m.onnx"),
    Case("infer", "model-unknown-suffix", lambda t, a: _model(t, a, c.write(t / "m.h5", b"x")), "unknown model type", "m.h5"),
    Case("infer", "model-is-folder", lambda t, a: _model(t, a, (t / "m.onnx").mkdir() or t / "m.onnx"), "is a folder", "m.onnx"),
    Case("infer", "engine-missing-sidecar", lambda t, a: _model(t, a, c.write(t / "m.engine", b"plan")),
         r"sidecar .*m\.engine\.json is missing", "m.engine"),
    Case("infer", "engine-other-tensorrt", _sidecar_case(tensorrt_version="8.6.1"),
         r"built with TensorRT 8\.6\.1", "model.engine"),
    Case("infer", "engine-without-tensorrt", _sidecar_case(), r"TensorRT \(needed to run model\.engine.*\) is not installed",
         "model.engine", skip=lambda: "TensorRT is installed here" if _has_tensorrt() else None),
    Case("infer", "engine-other-gpu", _sidecar_case(gpu_name="Other GPU 9000"), r"built for GPU 'Other GPU 9000'", "model.engine",
         skip=lambda: None if _has_tensorrt() else ("needs TensorRT to reach the GPU check (the rule itself: "
                                                    "tests/runtime/test_tensorrt_runner.py::test_check_sidecar_versions_and_gpu)")),
    Case("infer", "engine-sidecar-garbage", lambda t, a: _model(t, a, _garbage_sidecar(t / "m.engine", a.onnx)),
         "unreadable engine sidecar", "m.engine.json"),
    # --- options ----------------------------------------------------------------------------------
    Case("infer", "batch-zero", lambda t, a: _infer(a.bg, a.fgbg, a.onnx, t, "--batch-size", "0"), "positive", "--batch-size"),
    Case("infer", "batch-negative", lambda t, a: _infer(a.bg, a.fgbg, a.onnx, t, "--batch-size", "-4"), "positive", "--batch-size"),
    Case("infer", "out-is-a-file", lambda t, a: ["infer", str(a.bg), str(a.fgbg), "--model", str(a.onnx), "--out",
                                                 str(c.write(t / "out.txt", b"keep me"))], "exists and is not a folder", "out.txt"),
    Case("infer", "out-under-a-file", lambda t, a: _infer(a.bg, a.fgbg, a.onnx, t) + ["--out", str(c.write(t / "f", b"x") / "sub")],
         "exists and is not a folder", "f"),
    Case("infer", "provider-cuda-without-cuda", lambda t, a: _infer(a.bg, a.fgbg, a.ckpt, t, "--provider", "cuda"),
         "no CUDA device", "--provider cuda", skip=_cuda),
    Case("infer", "provider-unknown", lambda t, a: _infer(a.bg, a.fgbg, a.onnx, t, "--provider", "gpu"),
         "unknown ONNX Runtime provider", "'gpu'"),
    # --- checkpoints, through infer/export/summary/parity/bench/train -------------------------
    Case("infer", "ckpt-os-system", lambda t, a: _model(t, a, _evil("os.system")(t)), NEEDS_CODE, "evil-system.pt"),
    Case("infer", "ckpt-inf-weights", lambda t, a: _model(t, a, _variant("inf.pt", _inf)(t, a)),
         "convblock4.0.depthwise.weight holds NaN or inf", "inf.pt"),
    Case("export", "truncated-ckpt", lambda t, a: ["export", str(c.write(t / "cut.pt", c.truncated(a.ckpt.read_bytes(), 0.7))),
                                                   "--out", str(t / "exp")], "not a readable checkpoint", "cut.pt"),
    Case("export", "ckpt-os-system", lambda t, a: ["export", str(_evil("os.system")(t)), "--out", str(t / "exp")],
         NEEDS_CODE, "evil-system.pt"),
    Case("export", "ckpt-subprocess-popen", lambda t, a: ["export", str(_evil("subprocess.Popen")(t)), "--out", str(t / "exp")],
         NEEDS_CODE, "evil-popen.pt"),
    Case("export", "nan-weights", lambda t, a: ["export", str(_variant("nan.pt", _nan)(t, a)), "--out", str(t / "exp")],
         "convblock6.0.pointwise.weight holds NaN", "nan.pt"),
    Case("export", "wrong-shape", lambda t, a: ["export", str(_variant("shape.pt", _wrong_shape)(t, a)), "--out", str(t / "exp")],
         r"convblock1.0.weight has shape \(16, 3, 3, 3\)", "shape.pt"),
    Case("export", "hash-mismatch", lambda t, a: ["export", str(c.tampered_checkpoint(a.ckpt, t / "edited.pt")), "--out", str(t / "exp")],
         "SHA-256", "edited.pt"),
    Case("export", "bad-iospec", lambda t, a: ["export", str(_variant("spec.pt", _bad_iospec)(t, a)), "--out", str(t / "exp")],
         "invalid I/O spec", "spec.pt"),
    Case("export", "ckpt-fifo", lambda t, a: ["export", str(c.fifo(t / "c.pt")), "--out", str(t / "exp")], "not a regular file", "c.pt"),
    Case("export", "ckpt-is-folder", lambda t, a: ["export", str((t / "c.pt").mkdir() or t / "c.pt"), "--out", str(t / "exp")],
         "is a folder", "c.pt"),
    Case("export", "out-is-a-file", lambda t, a: ["export", str(a.ckpt), "--out", str(c.write(t / "exp", b"x"))],
         "exists and is not a folder", "exp"),
    Case("export", "calib-empty-folder", lambda t, a: ["export", str(a.ckpt), "--int8", "--calib", str((t / "cal").mkdir() or t / "cal"),
                                                       "--out", str(t / "exp")], NO_PAIRS, "cal"),
    Case("export", "calib-corrupt-zip", lambda t, a: ["export", str(a.ckpt), "--int8", "--calib", str(c.corrupt_zip(t / "cal.zip")),
                                                      "--out", str(t / "exp")], "not a readable zip file", "cal.zip"),
    Case("summary", "not-a-checkpoint", lambda t, a: ["summary", str(c.write(t / "junk.pt", os.urandom(2048)))],
         "not a readable checkpoint", "junk.pt"),
    Case("summary", "plain-torch-dict", lambda t, a: ["summary", str(_torch_save(t / "plain.pt", {"weights": [1, 2]}))],
         "not a toolkit checkpoint", "plain.pt"),
    Case("summary", "ckpt-builtins-eval", lambda t, a: ["summary", str(_evil("builtins.eval")(t))], NEEDS_CODE, "evil-eval.pt"),
    Case("summary", "missing-tensor", lambda t, a: ["summary", str(_variant("arch.pt", _missing_key)(t, a))],
         "do not fit the EVA4 network", "arch.pt"),
    Case("summary", "newer-format", lambda t, a: ["summary", str(_variant("new.pt", _set("format_version", 99))(t, a))],
         "format version 99 is newer", "new.pt"),
    Case("summary", "empty-file", lambda t, a: ["summary", str(c.write(t / "empty.pt", b""))], "not a readable checkpoint", "empty.pt"),
    Case("summary", "csv-named-pt", lambda t, a: ["summary", str(c.write(t / "metrics.pt", b"epoch,loss\n1,0.5\n2,0.4\n"))],
         "not a readable checkpoint: it is a CSV text file", "metrics.pt"),
    Case("summary", "short-text", lambda t, a: ["summary", str(c.write(t / "fake.pt", b"fake\n"))],
         "not a readable checkpoint: it is a text file", "fake.pt"),
    Case("summary", "onnx-named-pt", lambda t, a: ["summary", str(c.write(t / "m.pt", a.onnx.read_bytes()))], "it is an ONNX model", "m.pt"),
    Case("infer", "empty-onnx", lambda t, a: _model(t, a, c.write(t / "e.onnx", b"")), "not a loadable ONNX model: it is an empty file", "e.onnx"),
    Case("summary", "png-named-pt", lambda t, a: ["summary", str(c.write(t / "img.pt", PNG))], "it is a PNG image", "img.pt"),
    Case("summary", "random-bytes", lambda t, a: ["summary", str(c.write(t / "rnd.pt", bytes(range(7, 256)) * 4))],
         "not a readable checkpoint: it is binary data", "rnd.pt"),
    Case("parity", "csv-as-reference", lambda t, a: ["parity", "--model", str(a.onnx), "--reference",
                                                     str(c.write(t / "metrics.pt", b"epoch,loss\n1,0.5\n2,0.4\n")), "--limit", "2"],
         "it is a CSV text file", "metrics.pt"),
    Case("import-legacy", "csv-named-pt", lambda t, a: ["import-legacy", str(c.write(t / "m.pt", b"epoch,loss\n1,0.5\n2,0.4\n")),
                                                        "--out", str(t / "new.pt")], "not a readable legacy checkpoint: it is a CSV text file", "m.pt"),
    Case("summary", "image-size-not-div-4", lambda t, a: ["summary", "--image-size", "30"], "multiple of 4", "--image-size"),
    Case("summary", "image-size-zero", lambda t, a: ["summary", "--image-size", "0"], "multiple of 4", "--image-size"),
    # --- import-legacy -------------------------------------------------------------------------
    Case("import-legacy", "truncated", lambda t, a: ["import-legacy", str(c.write(t / "12.pt", c.truncated(a.legacy.read_bytes(), 0.5))),
                                                     "--out", str(t / "new.pt")], "truncated|not a readable legacy checkpoint", "12.pt"),
    Case("import-legacy", "not-a-checkpoint", lambda t, a: ["import-legacy", str(c.write(t / "notes.pt", b"just text\n" * 20)),
                                                            "--out", str(t / "new.pt")], "not a readable legacy checkpoint", "notes.pt"),
    Case("import-legacy", "empty-file", lambda t, a: ["import-legacy", str(c.write(t / "e.pt", b"")), "--out", str(t / "new.pt")],
         "empty file", "e.pt"),
    Case("import-legacy", "already-toolkit", lambda t, a: ["import-legacy", str(a.ckpt), "--out", str(t / "new.pt")],
         "already a toolkit checkpoint", "epoch12.pt"),
    Case("import-legacy", "os-system", lambda t, a: ["import-legacy", str(c.evil_legacy_stream(t / "1.pt", "os.system", t / "PWNED")),
                                                     "--out", str(t / "new.pt")], r"global '(posix|os)\.system'", "1.pt"),
    Case("import-legacy", "builtins-eval", lambda t, a: ["import-legacy", str(c.evil_legacy_stream(t / "2.pt", "builtins.eval", t / "PWNED")),
                                                         "--out", str(t / "new.pt")], r"global '(builtins|__builtin__)\.eval'", "2.pt"),
    Case("import-legacy", "subprocess-popen-zip", lambda t, a: ["import-legacy", str(c.evil_legacy_zip(t / "3.pt", "subprocess.Popen", t / "PWNED")),
                                                                "--out", str(t / "new.pt")], r"global '(subprocess|commands)\.Popen'", "3.pt"),
    Case("import-legacy", "out-is-a-folder", lambda t, a: ["import-legacy", str(a.legacy), "--out", str((t / "o.pt").mkdir() or t / "o.pt")],
         "is a folder", "o.pt"),
    Case("import-legacy", "missing", lambda t, a: ["import-legacy", str(t / "gone.pt"), "--out", str(t / "new.pt")], "no such file", "gone.pt"),
    # --- parity ---------------------------------------------------------------------------------------
    Case("parity", "truncated-onnx", lambda t, a: ["parity", "--model", str(c.write(t / "m.onnx", c.truncated(a.onnx.read_bytes(), 0.3))),
                                                   "--reference", str(a.ckpt)], "not a loadable ONNX model", "m.onnx"),
    Case("parity", "reference-popen", lambda t, a: ["parity", "--model", str(a.onnx), "--reference", str(_evil("subprocess.Popen")(t))],
         NEEDS_CODE, "evil-popen.pt"),
    Case("parity", "data-empty-folder", lambda t, a: _parity(t, a, "--data", str((t / "set").mkdir() or t / "set")), NO_PAIRS, "set"),
    Case("parity", "data-corrupt-zip", lambda t, a: _parity(t, a, "--data", str(c.corrupt_zip(t / "set.zip"))),
         "not a readable zip file", "set.zip"),
    Case("parity", "data-zip-traversal", lambda t, a: _parity(t, a, "--data", str(_unsafe_zip(t))), "6 unsafe zip members", "set.zip"),
    Case("parity", "data-zip-bomb", lambda t, a: _parity(t, a, "--data", str(c.zip_bomb(t / "set.zip"))), "1 unsafe zip member", "set.zip"),
    Case("parity", "data-almost-matching-names", lambda t, a: _parity(t, a, "--data", str(_almost(t))), NO_PAIRS, "set"),
    Case("parity", "data-broken-member", lambda t, a: _parity(t, a, "--data", str(_broken_member(t))),
         "Bad CRC|cannot read zip member", "combined_s1_p1_it1.jpg"),
    Case("parity", "limit-zero", lambda t, a: _parity(t, a, "--limit", "0"), "must be positive", "--limit"),
    Case("parity", "json-is-a-folder", lambda t, a: _parity(t, a, "--json", str((t / "r.json").mkdir() or t / "r.json")),
         "is a folder", "r.json"),
    Case("parity", "png-dir-is-a-file", lambda t, a: _parity(t, a, "--png-dir", str(c.write(t / "pngs", b"x"))),
         "exists and is not a folder", "pngs"),
    # --- bench ------------------------------------------------------------------------------------------
    Case("bench", "truncated-onnx", lambda t, a: ["bench", "--model", str(c.write(t / "m.onnx", c.truncated(a.onnx.read_bytes(), 0.8))),
                                                  "--baseline", str(a.onnx), "--iters", "1"], "not a loadable ONNX model", "m.onnx"),
    Case("bench", "onnx-other-input-names", lambda t, a: ["bench", "--model", str(c.onnx_with_inputs(t / "m.onnx", ("bg", "image"))),
                                                          "--baseline", str(a.onnx), "--iters", "1"], "model has inputs", "m.onnx"),
    Case("bench", "ckpt-builtins-eval", lambda t, a: ["bench", "--model", str(_evil("builtins.eval")(t)), "--iters", "1"],
         NEEDS_CODE, "evil-eval.pt"),
    Case("bench", "engine-missing-sidecar", lambda t, a: ["bench", "--model", str(c.write(t / "m.engine", b"plan")), "--iters", "1"],
         "is missing", "m.engine"),
    Case("bench", "batch-zero", lambda t, a: ["bench", "--model", str(a.onnx), "--baseline", str(a.onnx), "--batch", "0"], "batch", "--batch"),
    Case("bench", "batch-negative", lambda t, a: ["bench", "--model", str(a.onnx), "--baseline", str(a.onnx), "--batch", "1,-2"],
         "batch", "--batch"),
    Case("bench", "batch-not-a-number", lambda t, a: ["bench", "--model", str(a.onnx), "--batch", "eight"], "comma-separated", "--batch"),
    Case("bench", "iters-zero", lambda t, a: ["bench", "--model", str(a.onnx), "--baseline", str(a.onnx), "--iters", "0"], "iters", "--iters"),
    Case("bench", "json-is-a-folder", lambda t, a: ["bench", "--model", str(a.onnx), "--baseline", str(a.onnx), "--iters", "1",
                                                    "--json", str((t / "b.json").mkdir() or t / "b.json")], "is a folder", "b.json"),
    # --- train ---------------------------------------------------------------------------------------------
    Case("train", "data-empty-folder", _train("--data", lambda t, a: (t / "set").mkdir() or t / "set"), NO_PAIRS, "set"),
    Case("train", "data-unpaired", _train("--data", lambda t, a: _unpaired(t)), NO_PAIRS, "set"),
    Case("train", "data-almost-matching-names", _train("--data", lambda t, a: _almost(t)), NO_PAIRS, "set"),
    Case("train", "data-corrupt-zip", _train("--data", lambda t, a: c.corrupt_zip(t / "set.zip")), "not a readable zip file", "set.zip"),
    Case("train", "data-zip-traversal", _train("--data", lambda t, a: _unsafe_zip(t)), "unsafe zip members", "set.zip"),
    Case("train", "data-zip-bomb", _train("--data", lambda t, a: c.zip_bomb(t / "set.zip")), "unsafe zip member", "set.zip"),
    Case("train", "data-mixed-with-corrupt-zip", _train("--data", lambda t, a: _mixed_with_bad_zip(t)), "not a readable zip file",
         "DepthImage2.zip"),
    Case("train", "data-missing", _train("--data", lambda t, a: t / "gone"), "no such data folder", "gone"),
    Case("train", "batch-zero", _train("--data", lambda t, a: a.data, "--batch-size", "0"), "positive", "batch size"),
    Case("train", "batch-negative", _train("--data", lambda t, a: a.data, "--batch-size", "-1"), "positive", "batch size"),
    Case("train", "image-size-not-div-4", _train("--data", lambda t, a: a.data, "--image-size", "30"), "multiple of 4", "image size"),
    Case("train", "epochs-zero", _train("--data", lambda t, a: a.data, "--epochs", "0"), "positive", "epochs"),
    Case("train", "device-cuda-without-cuda", _train("--data", lambda t, a: a.data, "--device", "cuda", "--out", lambda t, a: t / "run"),
         "CUDA is not available", "--device cuda", skip=_cuda),
    Case("train", "out-is-a-file", _train("--data", lambda t, a: a.data, "--out", lambda t, a: c.write(t / "run", b"x")),
         "exists and is not a folder", "run"),
    Case("train", "resume-garbage", _train("--resume", lambda t, a: c.write(t / "last.pt", os.urandom(512))),
         "not a readable checkpoint", "last.pt"),
    Case("train", "resume-os-system", _train("--resume", lambda t, a: _evil("os.system")(t)), NEEDS_CODE, "evil-system.pt"),
    # --- stream / serve (they read a model, a video or frames, a background image) --------------------------
    Case("stream", "truncated-onnx", lambda t, a: _stream(t, a, model=c.write(t / "m.onnx", c.truncated(a.onnx.read_bytes(), 0.5))),
         "not a loadable ONNX model", "m.onnx"),
    Case("stream", "missing-source", lambda t, a: _stream(t, a, source=t / "clip.mp4"), "no such video", "clip.mp4"),
    Case("stream", "corrupt-video", lambda t, a: _stream(t, a, source=c.write(t / "clip.mp4", os.urandom(5000))),
         "not a readable video", "clip.mp4"),
    Case("stream", "empty-frames-folder", lambda t, a: _stream(t, a, source=(t / "frames").mkdir() or t / "frames"), "no frames", "frames"),
    Case("stream", "truncated-bg", lambda t, a: _stream(t, a, "--bg", str(c.write(t / "bg.png", c.truncated(PNG, 0.5)))),
         "truncated or corrupt", "bg.png"),
    Case("stream", "batch-zero", lambda t, a: _stream(t, a, "--batch", "0"), "positive", "--batch"),
    Case("serve", "truncated-onnx", lambda t, a: ["serve", "--model", str(c.write(t / "m.onnx", c.truncated(a.onnx.read_bytes(), 0.5)))],
         "not a loadable ONNX model", "m.onnx"),
    Case("serve", "ckpt-os-system", lambda t, a: ["serve", "--model", str(_evil("os.system")(t))], NEEDS_CODE, "evil-system.pt"),
    Case("serve", "missing-model", lambda t, a: ["serve", "--model", str(t / "gone.onnx")], "no such model file", "gone.onnx"),
    Case("serve", "max-batch-zero", lambda t, a: ["serve", "--model", str(a.onnx), "--max-batch", "0"], "positive", "--max-batch"),
    Case("serve", "key-file-others-can-read", lambda t, a: _serve_key(a, _key(t, "k" * 32, 0o644)), "can be read by other users", "serve.key"),
    Case("serve", "key-file-short", lambda t, a: _serve_key(a, _key(t, "abc")), "the key is too short", "serve.key"),
    Case("serve", "key-file-two-lines", lambda t, a: _serve_key(a, _key(t, "k" * 32 + "\n" + "j" * 32)), "holds one line", "serve.key"),
    Case("serve", "key-file-binary", lambda t, a: _serve_key(a, _key(t, "\udcff" * 20)), "not a key file", "serve.key"),
    Case("serve", "key-file-is-a-folder", lambda t, a: _serve_key(a, (t / "serve.key").mkdir() or t / "serve.key"), "is a folder", "serve.key"),
    Case("serve", "key-file-with-no-auth", lambda t, a: _serve_key(a, _key(t, "k" * 32)) + ["--no-auth"], "do not go together", "--no-auth"),
    Case("serve", "key-file-in-unwritable-place", lambda t, a: _serve_key(a, c.write(t / "f", b"x") / "serve.key"),
         "cannot write the key file", "serve.key"),
    Case("serve", "tls-cert-alone", lambda t, a: ["serve", "--model", str(a.onnx), "--tls-cert", str(c.write(t / "c.pem", b"x"))],
         "go together", "--tls-key"),
    Case("serve", "tls-cert-not-a-cert", lambda t, a: ["serve", "--model", str(a.onnx), "--tls-cert", str(c.write(t / "c.pem", b"x")),
                                                       "--tls-key", str(c.write(t / "k.pem", b"y"))], "cannot load the TLS", "c.pem"),
    # --- data stats / data check / data synth -----------------------------------------------------------
    Case("data stats", "empty-folder", lambda t, a: ["data", "stats", str((t / "set").mkdir() or t / "set")], NO_PAIRS, "set"),
    Case("data stats", "corrupt-zip", lambda t, a: ["data", "stats", str(c.corrupt_zip(t / "set.zip"))], "not a readable zip file", "set.zip"),
    Case("data stats", "zip-traversal", lambda t, a: ["data", "stats", str(_unsafe_zip(t))], "6 unsafe zip members", "set.zip"),
    Case("data stats", "zip-bomb", lambda t, a: ["data", "stats", str(c.zip_bomb(t / "set.zip"))], "unsafe zip member", "set.zip"),
    Case("data stats", "truncated-image", lambda t, a: ["data", "stats", str(_truncated_member_set(t))], "truncated or corrupt",
         "combined_s1_p1_it1.jpg"),
    Case("data stats", "broken-zip-member", lambda t, a: ["data", "stats", str(_broken_member(t))], "Bad CRC|cannot read zip member",
         "combined_s1_p1_it1.jpg"),
    Case("data stats", "encrypted-zip-member", lambda t, a: ["data", "stats", str(_patched_set(t, encrypted=True))],
         "encrypted", "combined_s1_p1_it1.jpg"),
    Case("data stats", "zip-member-lies-about-its-size", lambda t, a: ["data", "stats", str(_patched_set(t, file_size=100))],
         "Bad CRC|cannot read zip member", "combined_s1_p1_it1.jpg"),
    Case("data stats", "fifo-named-like-an-image", lambda t, a: ["data", "stats", str(_fifo_in_set(t))], "not a regular file",
         "combined_s1_p1_it1.jpg"),
    Case("data stats", "almost-matching-names", lambda t, a: ["data", "stats", str(_almost(t))], NO_PAIRS, "set"),
    Case("data stats", "size-zero", lambda t, a: ["data", "stats", str(a.data), "--size", "0"], "positive", "--size"),
    Case("data stats", "limit-zero", lambda t, a: ["data", "stats", str(a.data), "--limit", "0"], "positive", "--limit"),
    Case("data stats", "missing", lambda t, a: ["data", "stats", str(t / "gone")], "no such", "gone"),
    Case("data stats", "json-is-a-folder", lambda t, a: ["data", "stats", str(a.data), "--json", str((t / "s.json").mkdir() or t / "s.json")],
         "is a folder", "s.json"),
    Case("data check", "missing", lambda t, a: ["data", "check", str(t / "gone")], "no such", "gone"),
    Case("data check", "empty-folder", lambda t, a: ["data", "check", str((t / "set").mkdir() or t / "set")], "data check failed", "set", code=1),
    Case("data check", "zip-traversal", lambda t, a: ["data", "check", str(_unsafe_zip(t))], "unsafe", "set.zip", code=1),
    Case("data check", "corrupt-zip", lambda t, a: ["data", "check", str(c.corrupt_zip(t / "set.zip"))], "data check failed", "set.zip", code=1),
    Case("data check", "json-is-a-folder", lambda t, a: ["data", "check", str(a.data), "--json", str((t / "c.json").mkdir() or t / "c.json")],
         "is a folder", "c.json"),
    Case("data synth", "out-is-a-file", lambda t, a: ["data", "synth", "--out", str(c.write(t / "set", b"x"))], "not a folder", "set"),
    Case("data synth", "size-zero", lambda t, a: ["data", "synth", "--out", str(t / "set"), "--size", "0"], "size", "size"),
    Case("data synth", "backgrounds-zero", lambda t, a: ["data", "synth", "--out", str(t / "set"), "--backgrounds", "0"],
         "backgrounds", "backgrounds"),
]


# What libraries say when handed the wrong kind of file: internal text a user cannot act on
# (torch.load, pickle, protobuf, zipfile, json). A message may explain, never quote them.
OPAQUE = re.compile(
    r"\(\d+\)$|pop from empty list|invalid load key|Weights only load failed|PytorchStreamReader|miniz|"
    r"Error parsing message|unpickling stack|could not find MARK|persistent id instruction|Expecting (value|property)|"
    r"\(char \d+\)|unpack requires|UnpicklingError|DecodeError|BadZipFile|\[Errno -?\d+\]|ONNXRuntimeError"
)


def _meta(onnx_path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}


def _torch_save(path: Path, obj) -> Path:
    import torch

    torch.save(obj, path)
    return path


# Warnings Python shows by default (the others are hidden unless asked for).
_SHOWN = (UserWarning, RuntimeWarning, FutureWarning, SyntaxWarning, UnicodeWarning, BytesWarning)


class Hung(Exception):
    """Raised by the alarm: a bad input made the command block (a FIFO read, a bomb)."""


def _alarm(signum, frame):
    raise Hung("the command did not finish within the time limit: a hang is not a clear error")


def run_main(argv: list[str], capfd, limit: int = 60) -> tuple[int, str, str, list[str]]:
    """`toolkit ARGV` in this process: exit code, stdout, stderr (fd level) and shown warnings.
    A command still running after `limit` seconds fails the case (SIGALRM) instead of hanging."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(SystemExit) as e:
                main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capfd.readouterr()
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, _SHOWN)]
    return int(e.value.code or 0), out, err, shown


def run_unprivileged(argv: list[str], cwd: Path) -> tuple[int, str, str, list[str]]:
    """`toolkit ARGV` in a child process where file permissions apply even to root (CI runs as
    root): exit code, stdout, stderr; Python prints a shown warning to stderr itself."""
    r = run_cli(*argv, cwd=cwd, without_dac_override=True)
    return r.returncode, r.stdout, r.stderr, []


def _tree(*roots: Path) -> set[Path]:
    return {p for r in roots for p in r.rglob("*")}


@pytest.mark.parametrize("case", [k.param for k in CASES])
def test_bad_input(case: Case, assets: Assets, tmp_path: Path, capfd, monkeypatch):
    reason = case.skip()
    if reason:
        pytest.skip(reason)
    t = tmp_path / "case"
    t.mkdir()
    monkeypatch.chdir(t)  # default output folders land here, and are seen by the snapshot
    argv = case.make(t, assets)
    before = _tree(t, assets.root)
    capfd.readouterr()
    try:
        code, out, err, shown = run_unprivileged(argv, t) if case.unprivileged else run_main(argv, capfd)
    finally:
        for p in t.rglob("*"):  # give chmod'ed files back to the tmp_path cleanup
            if not p.is_symlink():
                p.chmod(0o755)
    lines = [line for line in err.splitlines() if line.strip()] + shown
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    line = lines[0]
    assert code == case.code, (code, line, out)
    assert line.startswith("error: "), line
    assert re.search(case.expect, line), f"{line!r} does not say {case.expect!r}"
    assert not OPAQUE.search(line), f"{line!r} ends in a fragment of a library's own error text"
    assert case.names in line, f"{line!r} does not name {case.names!r}"
    assert _tree(t, assets.root) == before, "the command left files behind"
    assert not (t / "PWNED").exists(), "code from the file ran"
    assert not Path(ABS_MEMBER).exists() and not (tmp_path / "evil.jpg").exists()


def test_corpus_covers_every_command_that_reads_files():
    counts = Counter(k.command for k in CASES)
    assert len(CASES) >= 60 and len({k.id for k in CASES if k.command == "infer"}) == counts["infer"]
    for command in ("infer", "parity", "bench", "export", "summary", "import-legacy", "train", "stream", "serve", "data stats",
                    "data check"):
        assert counts[command] >= 3, (command, counts[command])


# --- awkward but valid inputs: they work (and say so where something was adjusted) -------------------

VALID_IMAGES = {
    "cmyk.jpg": lambda: c.image_bytes("JPEG", mode="CMYK"),
    "grey16.png": lambda: c.image_bytes("PNG", mode="I;16"),
    "palette.png": lambda: c.image_bytes("PNG", mode="P"),
    "rgba.png": lambda: c.image_bytes("PNG", mode="RGBA"),
    "grey-alpha.png": lambda: c.image_bytes("PNG", mode="LA"),
    "bilevel.png": lambda: c.image_bytes("PNG", mode="1"),
    "animated.gif": lambda: c.animated_gif(),
    "png-named.jpg": lambda: c.image_bytes("PNG"),
    "one-pixel.png": lambda: c.image_bytes("PNG", h=1, w=1),
    "wide-100000x1.png": lambda: c.image_bytes("PNG", h=1, w=100_000),
}


@pytest.mark.parametrize("name", sorted(VALID_IMAGES))
def test_awkward_but_valid_images_work(name, assets, tmp_path, capfd):
    from PIL import Image

    img = c.write(tmp_path / name, VALID_IMAGES[name]())
    w, h = Image.open(img).size
    code, out, err, shown = run_main(_infer(img, img, assets.onnx, tmp_path), capfd)
    assert code == 0, err
    assert not err.strip() and not shown
    for out_name in ("mask.png", "depth.png", "panel.png"):
        assert (tmp_path / "out" / out_name).is_file()
    assert Image.open(tmp_path / "out" / "mask.png").size == (w, h)


def test_bg_and_fgbg_of_different_sizes_are_both_resized_with_a_note(assets, tmp_path, capfd):
    from PIL import Image

    bg = c.good_image(tmp_path / "bg.png", h=40, w=48)
    fgbg = c.good_image(tmp_path / "fgbg.jpg", h=60, w=90)
    code, out, err, _ = run_main(_infer(bg, fgbg, assets.onnx, tmp_path), capfd)
    assert code == 0, err
    assert re.search(r"note: fgbg\.jpg: bg is 48x40 and fgbg 90x60; both resized", err), err
    assert Image.open(tmp_path / "out" / "mask.png").size == (90, 60)


def test_mixed_folders_and_zips_read_as_one_set(tmp_path, capfd):
    """The original shipped each kind as zips; users unzip some: both kinds of container mix."""
    files = c.sample_files(s=1, p=1) | c.sample_files(s=2, p=1)
    root = c.dataset_folder(tmp_path / "set", {k: v for k, v in files.items() if not k.startswith("DepthImage")})
    c.zip_of(root / "DepthImage.zip", {k: v for k, v in files.items() if k.startswith("DepthImage")})
    code, out, err, _ = run_main(["data", "stats", str(root)], capfd)
    assert code == 0, err
    assert "2 samples" in out


def test_zip_members_are_never_written_or_followed(tmp_path, capfd, monkeypatch):
    """`../` and absolute members next to good ones: the good pair is read, the others listed as
    unsafe, and nothing appears outside (or inside) the folder holding the zip."""
    monkeypatch.chdir(tmp_path)
    files = c.sample_files()
    members = dict(files) | {f"../../{k}": v for k, v in files.items()} | {ABS_MEMBER: JPEG}
    z = c.zip_of(tmp_path / "deep" / "er" / "set.zip", members)
    before = _tree(tmp_path)
    code, out, err, _ = run_main(["data", "check", str(z)], capfd)
    assert code == 1 and "unsafe" in err  # a check that ran and found unsafe members: exit 1
    assert _tree(tmp_path) == before and not Path(ABS_MEMBER).exists()
    shutil.rmtree(tmp_path / "deep")


def test_a_broken_image_found_during_training_ends_it_cleanly(assets, tmp_path, capfd, monkeypatch):
    """Training decodes images as it goes (checking them all first is `data check`'s job), so the
    progress lines come first; the run must still end with one error line naming the file,
    exit 2, no traceback, and no run folder left behind (no checkpoint was written)."""
    monkeypatch.chdir(tmp_path)
    argv = _train("--data", lambda t, a: _truncated_member_set(t))(tmp_path, assets)
    code, out, err, shown = run_main(argv, capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and not shown
    assert [x for x in lines if x.startswith("error: ")] == lines[-1:]
    assert re.search(r"combined_s1_p1_it1\.jpg: not a readable image \(truncated or corrupt", lines[-1])
    assert not (tmp_path / "run").exists()
