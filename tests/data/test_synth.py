"""toolkit.data.synth: layout, names, determinism, exact depth, and speed."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from toolkit.core.errors import UserError
from toolkit.data.figures import make_figure
from toolkit.data.names import parse_pair_name
from toolkit.data.scene import BACK_WALL, BOX, FLOOR
from toolkit.data.synth import (
    DEPTH_FAR_M,
    DEPTH_NEAR_M,
    SUPERSAMPLE,
    composite,
    gray_to_metres,
    make_scene,
    metres_reader,
    metres_to_gray,
    synthesize,
)
from toolkit.render.imageio import read_gray, read_rgb

B, F, P, S = 3, 2, 2, 48


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    synthesize(out, backgrounds=B, foregrounds=F, placements=P, size=S, seed=5)
    return out


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_names_and_counts(folder):
    files = files_under(folder)
    assert sorted(n for n in files if n.startswith("Background/")) == [
        f"Background/Shelves_{k}.jpg" for k in range(1, B + 1)]
    for kind in ("OverlayedImages", "OverlayedMasks", "DepthImage"):
        names = sorted(n for n in files if n.startswith(kind + "/"))
        expected = sorted(f"{kind}/{it}/combined_s{k}_p{m}_it{it}.jpg"
                          for k in range(1, B + 1) for m in range(1, F + 1) for it in range(P))
        assert names == expected
    assert len(files) == B + 3 * B * F * P + 1 and "dataset.json" in files  # + what the set says of itself
    assert not [n for n in files if n.endswith(".tmp") or "/." in n]
    name = "combined_s2_p1_it1.jpg"
    assert read_rgb(folder / "OverlayedImages/1" / name).shape == (S, S, 3)
    assert read_gray(folder / "OverlayedMasks/1" / name).shape == (S, S)
    assert read_gray(folder / "DepthImage/1" / name).shape == (S, S)


def test_report(tmp_path):
    r = synthesize(tmp_path / "o", backgrounds=2, foregrounds=1, placements=1, size=32, seed=1)
    assert r.files == 2 + 3 * 2 and r.pairs == 2 and not r.zipped
    assert [p.name for p in r.written] == ["Background", "OverlayedImages", "OverlayedMasks", "DepthImage"]
    assert "wrote 8 images" in r.summary()


def test_same_seed_same_bytes_different_seed_different(folder, tmp_path):
    again = tmp_path / "again"
    synthesize(again, backgrounds=B, foregrounds=F, placements=P, size=S, seed=5)
    assert files_under(again) == files_under(folder)
    other = tmp_path / "other"
    synthesize(other, backgrounds=B, foregrounds=F, placements=P, size=S, seed=6)
    a, b = files_under(folder), files_under(other)
    assert a.keys() == b.keys()
    assert all(a[n] != b[n] for n in a if "Background" in n or "OverlayedImages" in n)


def test_zip_layout_and_determinism(folder, tmp_path):
    z1, z2 = tmp_path / "z1", tmp_path / "z2"
    for z in (z1, z2):
        synthesize(z, backgrounds=B, foregrounds=F, placements=P, size=S, seed=5, zip=True)
    assert sorted(p.name for p in z1.iterdir()) == sorted(
        ["Background.zip", "OverlayedImages.zip", "OverlayedMasks.zip", "DepthImage.zip", "dataset.json"])
    plain = files_under(folder)
    assert (z1 / "dataset.json").read_bytes() == plain.pop("dataset.json")
    for p in sorted(z1.glob("*.zip")):
        assert p.read_bytes() == (z2 / p.name).read_bytes()
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
            assert all(n.startswith(p.stem + "/") for n in names)
            for n in names:  # same image bytes as the folder layout
                assert zf.read(n) == plain[n]
                assert zf.getinfo(n).date_time == (1980, 1, 1, 0, 0, 0)
    assert sum(len(zipfile.ZipFile(p).namelist()) for p in z1.glob("*.zip")) == len(plain)


def test_depth_mapping_is_log_and_near_bright():
    z = np.array([DEPTH_NEAR_M, 1.0, 2.0, 5.0, DEPTH_FAR_M])
    g = metres_to_gray(z)
    assert g[0] == 1.0 and g[-1] == 0.0 and np.all(np.diff(g) < 0)
    np.testing.assert_allclose(gray_to_metres(g), z, rtol=1e-12)
    np.testing.assert_allclose(g, np.log(DEPTH_FAR_M / z) / np.log(DEPTH_FAR_M / DEPTH_NEAR_M))
    assert metres_to_gray(100.0) == 0.0 and metres_to_gray(0.01) == 1.0


def test_rendered_depth_is_exact_geometry():
    scene = make_scene(seed=5, k=1, size=S)
    r = scene.render(ss=1)
    cam, depth, surf = scene.camera, r["depth"], r["surface"]
    v = np.mgrid[0:S, 0:S][0]
    floor = surf == FLOOR
    assert floor.sum() > 50
    expected = cam.height * cam.f / (v + 0.5 - cam.cy)  # pinhole: ray hits y = 0
    np.testing.assert_allclose(depth[floor], expected[floor], rtol=1e-9)
    assert np.all(depth[surf == BACK_WALL] == scene.back)
    for i, box in enumerate(scene.boxes):  # a bookcase's front face is one plane z = const
        front = (surf == BOX + i) & np.isclose(depth, box.lo[2])
        if box.face[0] == 2:
            assert front.sum() > 0
    # the nearest surface wins: every depth is at most the room's own wall/floor distance
    assert np.all(depth <= scene.back + 1e-9)


def test_written_depth_matches_geometry_where_the_floor_shows(folder):
    scene = make_scene(seed=5, k=2, size=S)
    r = scene.render(ss=1)
    name = "combined_s2_p1_it0.jpg"
    gray = read_gray(folder / "DepthImage/0" / name)
    mask = read_gray(folder / "OverlayedMasks/0" / name)
    floor = (r["surface"] == FLOOR) & (mask < 0.02)
    # away from edges (JPEG rings there): keep pixels whose 5 x 5 neighbourhood is all floor
    pad = np.pad(floor, 2)
    floor = np.all([pad[2 + dy:2 + dy + S, 2 + dx:2 + dx + S] for dy in range(-2, 3) for dx in range(-2, 3)], axis=0)
    assert floor.sum() > 30
    got = metres_reader("far-bright")(gray[floor])  # the default set's grey: bright = far
    want = r["depth"][floor]
    step = np.log(DEPTH_FAR_M / DEPTH_NEAR_M) / 255  # one grey level, as a relative depth error
    assert np.median(np.abs(np.log(got / want))) < 1.5 * step
    assert np.max(np.abs(np.log(got / want))) < 4 * step


def test_person_is_in_front_and_mask_is_its_coverage():
    scene = make_scene(seed=5, k=1, size=S)
    sub = scene.render(SUPERSAMPLE)
    mid = SUPERSAMPLE // 2
    bg = sub["rgb"].reshape(S, SUPERSAMPLE, S, SUPERSAMPLE, 3).mean(axis=(1, 3))
    fig = make_figure(5, 1)
    rng = np.random.default_rng(0)
    fgbg, mask, depth = composite(scene, sub, bg, fig, (0.3, 0.5), False, rng)
    room = sub["depth"][mid::SUPERSAMPLE, mid::SUPERSAMPLE]
    person = mask > 0.99
    assert person.sum() > 20 and mask.min() >= 0 and mask.max() <= 1
    assert np.all(depth[person] < room[person])  # nearest surface: the person
    np.testing.assert_array_equal(depth[mask == 0], room[mask == 0])
    np.testing.assert_array_equal(fgbg[mask == 0], bg[mask == 0])
    assert np.abs(fgbg[person] - bg[person]).mean() > 0.02


def test_mirrored_placement_flips_the_figure_about_its_axis():
    scene = make_scene(seed=5, k=1, size=96)
    sub = scene.render(SUPERSAMPLE)
    bg = sub["rgb"].reshape(96, SUPERSAMPLE, 96, SUPERSAMPLE, 3).mean(axis=(1, 3))
    # the most lopsided of a few figures (a raised arm, legs apart)
    figs = [make_figure(5, m) for m in range(1, 25)]
    fig = max(figs, key=lambda f: abs(sum(p.extent()[0] + p.extent()[1] for p in f.parts)))
    x, z = scene.place(fig, (0.2, 0.5))
    axis = scene.camera.cx + scene.camera.f * x / z  # the figure's axis, in pixel coordinates
    col = np.arange(96) + 0.5 - axis
    masks = [composite(scene, sub, bg, fig, (0.2, 0.5), m, np.random.default_rng(0))[1] for m in (False, True)]
    first = [float((m.sum(0) * col).sum() / m.sum()) for m in masks]
    assert abs(first[0]) > 0.3  # lopsided...
    assert first[1] == pytest.approx(-first[0], abs=0.15)  # ...the other way round when mirrored
    assert masks[1].sum() == pytest.approx(masks[0].sum(), rel=0.03)


def test_out_that_is_a_file_and_bad_arguments(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        synthesize(f, backgrounds=1, foregrounds=1, placements=1, size=32)
    for kw in ({"backgrounds": 0}, {"foregrounds": -1}, {"placements": 0}, {"size": 8}, {"seed": -1}):
        with pytest.raises(UserError):
            synthesize(tmp_path / "x", **kw)


def test_the_default_set_as_zips(tmp_path):
    r = synthesize(tmp_path / "d", zip=True)
    assert r.files == 8 + 3 * 8 * 6 * 2
    with zipfile.ZipFile(tmp_path / "d" / "OverlayedMasks.zip") as zf:
        keys = {parse_pair_name(n).key for n in zf.namelist()}
    assert len(keys) == 96


ZIPS = ["Background.zip", "DepthImage.zip", "OverlayedImages.zip", "OverlayedMasks.zip", "dataset.json"]
TINY = {"foregrounds": 1, "placements": 1, "size": 32}


def test_a_non_empty_out_is_refused_unless_force_which_replaces_it_whole(tmp_path):
    from toolkit.data.reader import open_dataset

    out = tmp_path / "set"
    synthesize(out, backgrounds=3, **TINY)
    before = files_under(out)
    with pytest.raises(UserError, match="not empty.*--force"):
        synthesize(out, backgrounds=2, **TINY)
    assert files_under(out) == before
    # --force: the old set goes whole, not mixed with the new one
    synthesize(out, backgrounds=2, force=True, **TINY)
    assert sorted(n for n in files_under(out) if n.startswith("Background/")) == [
        "Background/Shelves_1.jpg", "Background/Shelves_2.jpg"]
    assert len(open_dataset(out)) == 2
    synthesize(out, backgrounds=2, zip=True, force=True, **TINY)  # zips replace folders, no duplicates
    assert sorted(p.name for p in out.iterdir()) == ZIPS
    assert len(open_dataset(out)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no .partial or .old sibling left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synthesize(empty, backgrounds=1, **TINY).files == 4  # an empty folder is fine


def test_an_interrupted_synth_leaves_out_as_it_was(tmp_path, monkeypatch):
    import toolkit.data.synth as synth_module

    out = tmp_path / "set"
    synthesize(out, backgrounds=2, **TINY)
    before = files_under(out)
    real, calls = synth_module._jpeg, []

    def failing(arr):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(arr)

    monkeypatch.setattr(synth_module, "_jpeg", failing)
    with pytest.raises(OSError):
        synthesize(out, backgrounds=3, force=True, **TINY)
    assert files_under(out) == before
    calls.clear()
    with pytest.raises(OSError):
        synthesize(tmp_path / "new", backgrounds=3, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_a_stale_partial_folder_is_replaced(tmp_path):
    stale = tmp_path / ".set.partial"
    (stale / "Background").mkdir(parents=True)
    (stale / "Background" / "Shelves_9.jpg").write_bytes(b"old")
    synthesize(tmp_path / "set", backgrounds=1, **TINY)
    assert "Background/Shelves_9.jpg" not in files_under(tmp_path / "set")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_cli_synth_refuses_a_non_empty_out_with_one_line_and_force_replaces(tmp_path, capsys):
    cli = pytest.importorskip("toolkit.cli", exc_type=ImportError)
    out = tmp_path / "set"
    args = ["data", "synth", "--out", str(out), "--foregrounds", "1", "--placements", "1", "--size", "32"]
    with pytest.raises(SystemExit) as info:
        cli.main([*args, "--backgrounds", "3"])
    assert info.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main([*args, "--backgrounds", "2", "--zip"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "--force" in err[0] and str(out) in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["Background", "DepthImage", "OverlayedImages", "OverlayedMasks", "dataset.json"]
    with pytest.raises(SystemExit) as info:
        cli.main([*args, "--backgrounds", "2", "--zip", "--force"])
    assert info.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == ZIPS
