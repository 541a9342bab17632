"""Golden folders: `parity --save-golden DIR`, then `parity --golden DIR --model M` without PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.verify.test_compare import _edit_last_conv
from toolkit.core.errors import UserError
from toolkit.verify.golden import read_golden_dir
from toolkit.verify.parity import check_golden, run_parity


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory, exported_onnx, imported_ckpt):
    folder = tmp_path_factory.mktemp("golden") / "g"
    report = run_parity([exported_onnx], imported_ckpt, limit=4, batch_size=2, save_golden=folder)
    assert report and any("wrote" in n for n in report.notes)
    return folder, report


def test_the_folder_holds_the_pairs_outputs_hashes_and_thresholds(golden_dir, imported_ckpt):
    folder, _ = golden_dir
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["pairs"] == 4 and manifest["reference"] == imported_ckpt.name
    assert manifest["thresholds"]["int8"]["mask_iou"] == 0.97 and manifest["iospec"]["height"] == 128
    golden = read_golden_dir(folder)
    assert [f["bg"].shape for f in golden.feeds] == [(2, 3, 128, 128)] * 2
    assert [r["mask"].shape for r in golden.refs] == [(2, 1, 128, 128)] * 2


def test_golden_verdicts_are_parity_verdicts(golden_dir, exported_onnx, tmp_path):
    folder, by_parity = golden_dir
    again = check_golden(folder, [exported_onnx])
    assert again
    a, b = by_parity.results[0], again.results[0]
    assert a.max_abs == pytest.approx(b.max_abs, abs=1e-9) and a.mask_iou == b.mask_iou
    perturbed = _edit_last_conv(exported_onnx, tmp_path / "perturbed.onnx", lambda w: w * 1.05)
    failed = check_golden(folder, [perturbed])
    assert not failed and any("max abs diff" in f for f in failed.results[0].failures)


def test_golden_check_runs_without_torch_with_parity_exit_codes(golden_dir, exported_onnx, tmp_path):
    folder, _ = golden_dir
    ok = run_cli("parity", "--golden", str(folder), "--model", str(exported_onnx), block_torch=True)
    assert ok.returncode == 0, ok.stderr
    assert "PASS" in ok.stdout and "golden folder" in ok.stdout
    perturbed = _edit_last_conv(exported_onnx, tmp_path / "perturbed.onnx", lambda w: w * 1.05)
    bad = run_cli("parity", "--golden", str(folder), "--model", str(perturbed), block_torch=True)
    assert bad.returncode == 1 and "max abs diff" in bad.stderr and "Traceback" not in bad.stderr


def test_a_changed_array_or_manifest_is_one_line(golden_dir, exported_onnx, tmp_path):
    import shutil

    folder, _ = golden_dir
    copy = tmp_path / "g"
    shutil.copytree(folder, copy)
    with np.load(copy / "reference.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mask"][0, 0, 0, 0] += 0.5
    np.savez(copy / "reference.npz", **arrays)
    r = run_cli("parity", "--golden", str(copy), "--model", str(exported_onnx))
    assert r.returncode == 2 and "SHA-256 does not match" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not a valid golden manifest"):
        read_golden_dir(copy)
    with pytest.raises(UserError, match="not a golden folder"):
        read_golden_dir(tmp_path)


def test_save_golden_refuses_a_folder_of_other_files_and_golden_refuses_a_reference(tmp_path, exported_onnx, imported_ckpt):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not a golden folder"):
        run_parity([exported_onnx], imported_ckpt, limit=2, batch_size=2, save_golden=other)
    assert (other / "keep.txt").read_text() == "mine" and sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    r = run_cli("parity", "--golden", str(other), "--model", str(exported_onnx), "--reference", str(imported_ckpt))
    assert r.returncode == 2 and "do not go with it" in r.stderr
    r = run_cli("parity", "--golden", str(other), "--model", str(exported_onnx), "--limit", "4")
    assert r.returncode == 2 and "--limit and --batch-size do not go with it" in r.stderr


def test_save_golden_from_the_checkpoint_alone(tmp_path, imported_ckpt):
    r = run_cli("parity", "--reference", str(imported_ckpt), "--save-golden", str(tmp_path / "g"), "--limit", "2")
    assert r.returncode == 0, r.stderr
    assert read_golden_dir(tmp_path / "g").manifest["pairs"] == 2
