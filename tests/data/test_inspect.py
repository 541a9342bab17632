"""toolkit.data.inspect and `toolkit data ...`: statistics, the decoding check, the CLI shell."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.core.errors import UserError
from toolkit.data.inspect import channel_stats, check_dataset
from toolkit.data.reader import open_dataset
from toolkit.data.synth import synthesize

B, F, P, S = 3, 2, 1, 32


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "good"
    synthesize(out, backgrounds=B, foregrounds=F, placements=P, size=S, seed=4)
    return out


def test_channel_stats_match_a_direct_computation(good):
    ds = open_dataset(good)
    stats = channel_stats(ds)
    assert set(stats) == {"bg", "fgbg", "mask", "depth"}
    assert len(stats["fgbg"]["mean"]) == 3 and len(stats["mask"]["std"]) == 1
    loads = [ds.load(i) for i in range(len(ds))]
    for kind in stats:
        stack = np.stack([d[kind] for d in loads]).astype(np.float64)  # N, C, H, W
        np.testing.assert_allclose(stats[kind]["mean"], stack.mean(axis=(0, 2, 3)), atol=1e-9)
        np.testing.assert_allclose(stats[kind]["std"], stack.std(axis=(0, 2, 3)), atol=1e-6)
    assert 0 < stats["mask"]["mean"][0] < 0.5 and 0 < stats["depth"]["mean"][0] < 1


def test_channel_stats_limit_and_size(good):
    ds = open_dataset(good)
    one = channel_stats(ds, limit=1)
    first = ds.load(0)
    np.testing.assert_allclose(one["bg"]["mean"], first["bg"].mean(axis=(1, 2)), atol=1e-6)
    resized = channel_stats(ds, size=(8, 8), limit=2)
    assert abs(resized["fgbg"]["mean"][0] - channel_stats(ds, limit=2)["fgbg"]["mean"][0]) < 0.02
    with pytest.raises(UserError):
        channel_stats(ds, limit=0)


def test_check_good_set(good):
    r = check_dataset(good)
    assert r.ok and r.problems() == []
    assert r.pairs == B * F * P and r.decoded == B + 3 * B * F * P
    assert r.backgrounds_found == r.backgrounds_used == B
    assert r.sizes == {k: {f"{S}x{S}": n} for k, n in
                       (("bg", B), ("fgbg", B * F * P), ("mask", B * F * P), ("depth", B * F * P))}
    assert all(v == "ok" for _, _, v in r.rows())
    json.dumps(r.to_dict())
    assert "ok" in r.render()


def test_check_finds_unreadable_unpaired_odd_and_unsafe(good, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(good, d)
    cut = d / "OverlayedImages/0/combined_s1_p1_it0.jpg"
    cut.write_bytes(cut.read_bytes()[:200])  # truncated
    (d / "Background/Shelves_2.jpg").write_bytes(b"")  # zero bytes
    (d / "DepthImage/0/combined_s3_p2_it0.jpg").unlink()  # unpaired
    (d / "OverlayedMasks/0/todo.txt").write_text("x")  # odd
    with zipfile.ZipFile(d / "DepthImage_more.zip", "w") as zf:
        zf.writestr("../../etc/passwd.jpg", b"x")  # unsafe
    r = check_dataset(d)
    assert not r.ok
    assert sorted(Path(n).name for n, _ in r.unreadable) == ["Shelves_2.jpg", "combined_s1_p1_it0.jpg"]
    assert all("not a readable image" in why for _, why in r.unreadable)
    assert r.skipped == {"fgbg+mask without depth": 1}
    assert sorted(Path(n).parent.parent.name for n in r.unpaired) == ["OverlayedImages", "OverlayedMasks"]
    assert all(Path(n).name == "combined_s3_p2_it0.jpg" for n in r.unpaired)
    lines = r.details(limit=1)
    at = lines.index("unpaired files (2):")  # the first N named, then a count
    assert lines[at + 1 : at + 3] == [f"  {r.unpaired[0]}", "  ... and 1 more"]
    assert [Path(o).name for o in r.odd] == ["todo.txt"]
    assert len(r.unsafe) == 1 and "passwd" in r.unsafe[0]
    assert r.problems() == ["2 unreadable files", "1 unsafe zip members"]
    text = r.render()
    assert "FAILED" in text and "todo.txt" in text and "Shelves_2.jpg" in text
    assert not (tmp_path.parent.parent / "etc").exists()


def test_check_without_pairs_or_with_a_corrupt_zip_reports_not_raises(tmp_path):
    (tmp_path / "e").mkdir()
    r = check_dataset(tmp_path / "e")
    assert not r.ok and r.pairs == 0 and r.problems() == ["no image pairs"]
    (tmp_path / "e" / "OverlayedImages.zip").write_bytes(b"garbage")
    r = check_dataset(tmp_path / "e")
    assert [Path(n).name for n, _ in r.unreadable] == ["OverlayedImages.zip"]
    with pytest.raises(UserError, match="no such file"):
        check_dataset(tmp_path / "missing")


# -- the CLI shell -----------------------------------------------------------------------------
def data_app():
    """`toolkit.cli.data_cmd.data_app`, even while sibling command modules are not written yet.

    Importing it runs toolkit/cli/__init__.py, which registers every command module; if one of
    those does not exist yet, data_cmd itself has still been imported and is taken from there.
    """
    try:
        return importlib.import_module("toolkit.cli.data_cmd").data_app
    except ModuleNotFoundError as e:
        mod = sys.modules.get("toolkit.cli.data_cmd")
        if mod is None or not (e.name or "").startswith("toolkit.cli."):
            raise
        return mod.data_app


runner = CliRunner()


def _main(argv: list[str], capsys) -> tuple[int, str]:
    """`toolkit ARGV` as the command line runs it: its exit code, and stdout + stderr."""
    from toolkit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out + err


def test_cli_synth_stats_check(tmp_path, capsys):
    app = data_app()
    out = tmp_path / "set"
    res = runner.invoke(app, ["synth", "--out", str(out), "--backgrounds", "2", "--foregrounds", "1",
                              "--placements", "2", "--size", "32", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "wrote 14 images" in res.output
    assert len(list((out / "OverlayedImages").rglob("*.jpg"))) == 4
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "z"), "--backgrounds", "1", "--foregrounds", "1",
                              "--placements", "1", "--size", "32", "--zip"])
    assert res.exit_code == 0 and (tmp_path / "z" / "DepthImage.zip").is_file()

    stats_json = tmp_path / "stats.json"
    res = runner.invoke(app, ["stats", str(out), "--size", "16", "--limit", "3", "--json", str(stats_json)])
    assert res.exit_code == 0, res.output
    assert "fgbg" in res.output and "depth" in res.output
    payload = json.loads(stats_json.read_text())
    assert payload["samples"] == 3 and len(payload["stats"]["bg"]["mean"]) == 3

    assert _main(["data", "check", str(tmp_path / "z" / "OverlayedImages.zip")], capsys)[0] == 1  # a lone zip: no pairs

    check_json = tmp_path / "check.json"
    res = runner.invoke(app, ["check", str(out), "--json", str(check_json)])
    assert res.exit_code == 0, res.output
    assert "data check passed" in res.output and json.loads(check_json.read_text())["ok"] is True

    (out / "OverlayedMasks/0/combined_s1_p1_it0.jpg").write_bytes(b"")
    code, shown = _main(["data", "check", str(out), "--json", str(check_json)], capsys)
    assert code == 1 and "combined_s1_p1_it0.jpg" in shown
    assert json.loads(check_json.read_text())["ok"] is False  # written before failing


def test_cli_bad_input_is_a_user_error(tmp_path):
    app = data_app()
    for args in (["stats", str(tmp_path / "nope")], ["check", str(tmp_path / "nope")],
                 ["synth", "--out", str(tmp_path), "--size", "4"], ["stats", str(tmp_path)]):
        res = runner.invoke(app, args)
        assert isinstance(res.exception, UserError), (args, res.output)
        assert "\n" not in str(res.exception)
