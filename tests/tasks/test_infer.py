"""infer on .pt and .onnx; the .onnx path must work with torch unimportable."""

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from toolkit.core.install import install_hint
from toolkit.tasks.infer import infer_files


def _check_outputs(folder, size):
    for name in ("mask.png", "depth.png", "panel.png"):
        assert (folder / name).is_file(), name
    mask = Image.open(folder / "mask.png")
    depth = Image.open(folder / "depth.png")
    assert mask.size == size and mask.mode == "L"
    assert depth.size == size and depth.mode == "RGB"  # a colour map
    assert Image.open(folder / "panel.png").size[0] >= 4 * size[0]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left


def test_infer_pt_and_onnx_agree(imported_ckpt, exported_onnx, image_pair, tmp_path):
    bg, fgbg = image_pair
    infer_files(imported_ckpt, bg, fgbg, tmp_path / "pt")
    infer_files(exported_onnx, bg, fgbg, tmp_path / "onnx")
    _check_outputs(tmp_path / "pt", (96, 80))
    _check_outputs(tmp_path / "onnx", (96, 80))
    a = np.asarray(Image.open(tmp_path / "pt" / "mask.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "onnx" / "mask.png"), dtype=int)
    assert np.abs(a - b).max() <= 1


def test_infer_onnx_without_torch(exported_onnx, image_pair, tmp_path):
    bg, fgbg = image_pair
    r = run_cli("infer", str(bg), str(fgbg), "--model", str(exported_onnx), "--out", str(tmp_path / "o"),
                block_torch=True)
    assert r.returncode == 0, r.stderr
    _check_outputs(tmp_path / "o", (96, 80))


def test_pt_model_without_torch_names_the_extra(imported_ckpt, image_pair, tmp_path):
    bg, fgbg = image_pair
    r = run_cli("infer", str(bg), str(fgbg), "--model", str(imported_ckpt), "--out", str(tmp_path / "o"),
                block_torch=True)
    assert r.returncode == 2
    assert install_hint("train") in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_folders_pair_by_name(exported_onnx, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "bgs").mkdir()
    (tmp_path / "fgs").mkdir()
    for name in ("a", "b"):
        img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "bgs" / f"{name}.png")
        Image.fromarray(img).convert("P").save(tmp_path / "fgs" / f"{name}.png")  # palette input
    Image.fromarray(img).save(tmp_path / "fgs" / "lonely.png")
    report = infer_files(exported_onnx, tmp_path / "bgs", tmp_path / "fgs", tmp_path / "out", batch_size=2)
    assert report.pairs == 2
    assert any("skipped 1" in n for n in report.notes)
    for name in ("a", "b"):
        _check_outputs(tmp_path / "out" / name, (64, 64))


def test_different_sizes_are_reconciled_and_said(exported_onnx, tmp_path):
    Image.new("RGB", (50, 40), (10, 20, 30)).save(tmp_path / "bg.png")
    Image.new("RGBA", (64, 48), (10, 20, 30, 255)).save(tmp_path / "fg.png")
    report = infer_files(exported_onnx, tmp_path / "bg.png", tmp_path / "fg.png", tmp_path / "out")
    assert any("resized" in n for n in report.notes)
    _check_outputs(tmp_path / "out", (64, 48))


def _pair_folders(tmp_path, names, suffix: str = "png", bg_size=(64, 64), fg_size=(64, 64)):
    """bgs/ and fgs/ under `tmp_path`, a flat-coloured pair per name (red 100 + i for the i-th);
    returns the two folders."""
    bgs, fgs = tmp_path / "bgs", tmp_path / "fgs"
    bgs.mkdir()
    fgs.mkdir()
    for i, name in enumerate(names):
        Image.new("RGB", bg_size, (100 + i, 90, 80)).save(bgs / f"{name}.{suffix}")
        Image.new("RGB", fg_size, (100 + i, 90, 80)).save(fgs / f"{name}.{suffix}")
    return bgs, fgs


def test_folder_with_a_bad_image_writes_the_rest_and_fails(exported_onnx, tmp_path):
    from tests.conftest import run_cli

    _pair_folders(tmp_path, ("a", "b", "c"), "jpg")
    (tmp_path / "fgs" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "fgs" / "d.jpg").mkdir()  # a folder with an image's name is not a pair
    r = run_cli("infer", str(tmp_path / "bgs"), str(tmp_path / "fgs"), "--model", str(exported_onnx),
                "--out", str(tmp_path / "out"), "--batch-size", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "b.jpg" in r.stderr and "1 of 3 pair(s)" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c"]
    _check_outputs(tmp_path / "out" / "a", (64, 64))


def test_skip_existing_and_fail_fast(exported_onnx, tmp_path):
    _pair_folders(tmp_path, ("a", "b", "c"))
    first = infer_files(exported_onnx, tmp_path / "bgs", tmp_path / "fgs", tmp_path / "out", batch_size=2)
    assert first.pairs == 3 and first.skipped == 0
    (tmp_path / "out" / "b" / "panel.png").unlink()  # as if interrupted before b finished
    again = infer_files(exported_onnx, tmp_path / "bgs", tmp_path / "fgs", tmp_path / "out", skip_existing=True)
    assert again.pairs == 1 and again.skipped == 2
    assert (tmp_path / "out" / "b" / "panel.png").is_file()

    (tmp_path / "fgs" / "a.png").write_bytes(b"not an image")
    import pytest

    from toolkit.core.errors import UserError

    with pytest.raises(UserError, match="a.png"):
        infer_files(exported_onnx, tmp_path / "bgs", tmp_path / "fgs", tmp_path / "out2", fail_fast=True)
    assert not (tmp_path / "out2").exists()
    report = infer_files(exported_onnx, tmp_path / "bgs", tmp_path / "fgs", tmp_path / "out3")
    assert report.pairs == 2 and len(report.failures) == 1


def test_a_folder_run_keeps_nothing_per_pair(exported_onnx, tmp_path):
    """Streaming: files are counted, only the last panel is kept, and the per-pair "resized"
    notes stop at a few plus a count (a 10,000-pair folder must not grow the report)."""
    from toolkit.tasks.infer import SHOWN_SIZE_NOTES

    n = SHOWN_SIZE_NOTES + 2
    _pair_folders(tmp_path, [f"p{i}" for i in range(n)], bg_size=(40, 32), fg_size=(48, 36))
    report = infer_files(exported_onnx, tmp_path / "bgs", tmp_path / "fgs", tmp_path / "out", batch_size=2)
    assert report.pairs == n and report.files == 3 * n and report.resized == n
    assert report.panel == tmp_path / "out" / f"p{n - 1}" / "panel.png"
    assert sum("resized" in note for note in report.notes) == SHOWN_SIZE_NOTES + 1
    assert report.notes[-1].startswith("... and 2 more pair(s)")
    assert not hasattr(report, "written")


def test_no_bg_cache_only_applies_to_a_fixed_camera(exported_onnx, image_pair, tmp_path):
    from toolkit.core.errors import UserError
    from toolkit.tasks.infer import infer_files

    bg, fgbg = image_pair
    with pytest.raises(UserError, match="--no-bg-cache only applies to one background and a folder of frames"):
        infer_files(exported_onnx, bg, fgbg, tmp_path / "out", bg_cache=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
