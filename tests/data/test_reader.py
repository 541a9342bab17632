"""toolkit.data.reader: folders, zips, both mixed; pairing, skipping, unsafe members, pickling."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from toolkit.core.errors import UserError
from toolkit.data import scan
from toolkit.data.reader import FileRef, open_dataset
from toolkit.data.synth import synthesize

B, F, P, S = 3, 2, 2, 40
N = B * F * P


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reader")
    synthesize(root / "folder", backgrounds=B, foregrounds=F, placements=P, size=S, seed=3)
    synthesize(root / "zips", backgrounds=B, foregrounds=F, placements=P, size=S, seed=3, zip=True)
    return {"folder": root / "folder", "zips": root / "zips"}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_folder(sets):
    ds = open_dataset(sets["folder"])
    assert len(ds) == N and ds.backgrounds == [1, 2, 3]
    keys = [(s.bg, s.fg, s.it) for s in ds.samples]
    assert keys == sorted(keys)
    assert ds.skipped == {} and ds.odd == [] and ds.unsafe == []
    s = ds.samples[0]
    assert s.key == "combined_s1_p1_it0"
    assert set(s.refs) == {"bg", "fgbg", "mask", "depth"}
    assert s.refs["mask"].member is None
    assert s.refs["mask"].container.endswith("OverlayedMasks/0/combined_s1_p1_it0.jpg")
    d = ds.load(0)
    shapes = {k: v.shape for k, v in d.items()}
    assert shapes == {"bg": (3, S, S), "fgbg": (3, S, S), "mask": (1, S, S), "depth": (1, S, S)}
    for v in d.values():
        assert v.dtype == np.float32 and v.min() >= 0.0 and v.max() <= 1.0
    assert 0 < d["mask"].mean() < 0.5 and len(np.unique(d["mask"])) > 2  # soft, not binarised
    small = ds.load(3, size=(16, 24))
    assert small["bg"].shape == (3, 16, 24) and small["depth"].shape == (1, 16, 24)


def test_zip_files_give_the_same_samples_and_pixels(sets):
    a, b = open_dataset(sets["folder"]), open_dataset(sets["zips"])
    assert [s.key for s in a.samples] == [s.key for s in b.samples]
    ref = b.samples[4].refs["fgbg"]
    assert ref.in_zip and ref.container.endswith("OverlayedImages.zip")
    assert ref.member == "OverlayedImages/0/combined_s2_p1_it0.jpg"
    for i in (0, 5, N - 1):
        x, y = a.load(i), b.load(i)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    kinds = ("Background", "OverlayedImages", "OverlayedMasks", "DepthImage")
    single = open_dataset([sets["zips"] / f"{n}.zip" for n in kinds])
    assert len(single) == N


def test_mixed_folders_and_zips_and_alias_names(sets, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copytree(sets["folder"] / "Background", mixed / "bg")
    shutil.copytree(sets["folder"] / "OverlayedMasks", mixed / "masks")
    shutil.copy(sets["zips"] / "OverlayedImages.zip", mixed / "fg_bg_1.zip")
    shutil.copy(sets["zips"] / "DepthImage.zip", mixed / "DepthImage.zip")
    ds = open_dataset(mixed)
    assert len(ds) == N and ds.skipped == {}
    kinds = {k: ds.samples[0].refs[k].in_zip for k in ("bg", "fgbg", "mask", "depth")}
    assert kinds == {"bg": False, "fgbg": True, "mask": False, "depth": True}
    ds.load(N - 1)
    # a list of sources: part in one place, part in another
    other = tmp_path / "other"
    other.mkdir()
    shutil.move(str(mixed / "masks"), other / "OverlayedMasks")
    assert len(open_dataset([mixed, other])) == N


def test_unpaired_files_are_skipped_and_counted(sets, tmp_path):
    d = copy(sets["folder"], tmp_path / "d")
    (d / "OverlayedMasks/1/combined_s1_p2_it1.jpg").unlink()
    (d / "DepthImage/0/combined_s1_p1_it0.jpg").unlink()
    (d / "OverlayedMasks/0/combined_s1_p1_it0.jpg").unlink()
    (d / "Background/Shelves_2.jpg").unlink()
    (d / "notes.txt").write_text("readme")
    (d / "OverlayedImages/0/holiday.jpg").write_bytes(b"x")
    (d / "OverlayedImages/0/.DS_Store").write_bytes(b"x")  # OS litter: ignored, not odd
    ds = open_dataset(d)
    assert ds.skipped == {
        "fgbg+depth without mask": 1,
        "fgbg without mask and depth": 1,
        "no background for s2": F * P,
    }
    assert len(ds) == N - 2 - F * P
    assert 2 not in ds.backgrounds
    assert sorted(Path(o).name for o in ds.odd) == ["holiday.jpg", "notes.txt"]
    assert ds.found == {"bg": B - 1, "fgbg": N, "mask": N - 2, "depth": N - 1}


def test_duplicates_keep_the_first_and_are_counted(sets):
    ds = open_dataset([sets["folder"], sets["zips"]])
    assert len(ds) == N
    assert ds.skipped == {"duplicate bg name": B, "duplicate depth name": N,
                          "duplicate fgbg name": N, "duplicate mask name": N}


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def test_unsafe_members_are_listed_never_opened(sets, tmp_path):
    d = copy(sets["folder"], tmp_path / "d")
    good = (d / "OverlayedImages/0/combined_s1_p1_it0.jpg").read_bytes()
    evil = {
        "../evil.jpg": good,
        "/abs/combined_s1_p1_it0.jpg": good,
        "C:/OverlayedImages/0/combined_s1_p1_it0.jpg": good,
        "OverlayedImages/../../escape.jpg": good,
        "OverlayedImages\\..\\..\\win.jpg": good,
        "OverlayedImages/0/combined_s3_p1_it0.jpg": good,  # fine: a duplicate, counted
    }
    make_zip(d / "OverlayedImages_extra.zip", evil)
    ds = open_dataset(d)
    assert len(ds) == N
    assert len(ds.unsafe) == 5
    for name in list(evil)[:5]:
        assert any(f":{name} (" in u for u in ds.unsafe), name
    assert not any("evil" in str(r) or "escape" in str(r) for s in ds.samples for r in s.refs.values())
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path.parent / "escape.jpg").exists()
    with pytest.raises(UserError, match="refused"):
        ds.read_bytes(FileRef(str(d / "OverlayedImages_extra.zip"), "../evil.jpg"))
    assert ds.skipped == {"duplicate fgbg name": 1}


def test_zip_bomb_member_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "MAX_BOMB_BYTES", 1024 * 1024)  # keep the test small and fast (the scan and the read both judge)
    z = tmp_path / "OverlayedImages.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("OverlayedImages/0/combined_s1_p1_it0.jpg", b"\0" * (2 * 1024 * 1024))
    ds = open_dataset(z, allow_empty=True)
    assert len(ds.unsafe) == 1 and "compression ratio" in ds.unsafe[0]
    assert ds.found["fgbg"] == 0
    with pytest.raises(UserError, match="no image pairs found"):
        open_dataset(z)


def test_corrupt_zip_missing_source_and_nothing_found(sets, tmp_path):
    bad = tmp_path / "OverlayedImages.zip"
    bad.write_bytes(b"this is not a zip file at all")
    with pytest.raises(UserError, match="OverlayedImages.zip: not a readable zip file"):
        open_dataset(tmp_path)
    cut = tmp_path.parent / f"{tmp_path.name}-cut"
    cut.mkdir()
    data = (sets["zips"] / "DepthImage.zip").read_bytes()
    (cut / "DepthImage.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="DepthImage.zip"):
        open_dataset(cut / "DepthImage.zip")
    with pytest.raises(UserError, match="no such file or folder"):
        open_dataset(tmp_path / "missing")
    empty = tmp_path / "empty"
    (empty / "Background").mkdir(parents=True)
    (empty / "readme.md").write_text("hi")
    with pytest.raises(UserError) as e:
        open_dataset(empty)
    assert str(e.value) == f"{empty}: no image pairs found (0 fgbg, 0 mask, 0 depth, 0 backgrounds, 1 other files)"
    ds = open_dataset(tmp_path, strict=False, allow_empty=True)  # the checker's mode: listed
    assert [Path(n).name for n, _ in ds.unreadable] == ["OverlayedImages.zip"]


def test_a_member_that_vanished_or_a_broken_image_is_a_user_error(sets, tmp_path):
    d = copy(sets["folder"], tmp_path / "d")
    ds = open_dataset(d)
    (d / "OverlayedMasks/0/combined_s1_p1_it0.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="combined_s1_p1_it0.jpg: not a readable image"):
        ds.load(0)
    z = open_dataset(sets["zips"])
    with pytest.raises(UserError, match="no such member"):
        z.read_bytes(FileRef(str(sets["zips"] / "DepthImage.zip"), "DepthImage/9/nope.jpg"))


def test_pickle_round_trip_reopens_zip_handles(sets):
    ds = open_dataset(sets["zips"])
    first = ds.load(1)
    assert ds._zips  # handles are open in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._zips == {} and len(clone) == len(ds)
    again = clone.load(1)
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    clone.close()
    ds.close()


def _checksum(args):
    ds, i = args
    return i, float(sum(v.sum() for v in ds.load(i).values()))


_INHERITED = None


def _checksum_inherited(i):
    parent = _INHERITED.parent_handles  # kept alive here, so their descriptors stay open
    out = _checksum((_INHERITED, i))
    assert _INHERITED._pid == os.getpid()
    mine = list(_INHERITED._zips.values())
    assert mine and not any(zf is p for zf in mine for p in parent)  # its own handles...
    assert not {zf.fp.fileno() for zf in mine} & {p.fp.fileno() for p in parent}  # ...and files
    return out


def test_worker_processes_each_open_their_own_handle(sets):
    global _INHERITED
    ds = open_dataset(sets["zips"])
    expected = {i: float(sum(v.sum() for v in ds.load(i).values())) for i in range(N)}
    assert ds._zips  # the parent holds open handles while workers start
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(2) as pool:  # the dataset travels pickled, as a DataLoader sends it
        assert dict(pool.map(_checksum, [(ds, i) for i in range(N)])) == expected
    if "fork" in methods:  # ...or is inherited across a fork, handles and all
        _INHERITED = ds
        ds.parent_handles = list(ds._zips.values())
        try:
            with ctx.Pool(2) as pool:
                assert dict(pool.map(_checksum_inherited, range(N))) == expected
        finally:
            _INHERITED = None
    ds.load(0)  # the parent's own handles still work
