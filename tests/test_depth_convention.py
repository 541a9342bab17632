"""Which way depth grey runs: recorded by data sets, checkpoints and exports, followed by legends and val."""

import json

import numpy as np
import onnx
import pytest

from toolkit.core.errors import UserError
from toolkit.core.spec import IOSpec, nearness
from toolkit.data.info import INFO_NAME
from toolkit.data.reader import open_dataset
from toolkit.data.synth import synthesize
from toolkit.render.imageio import depth_legend
from toolkit.runtime import open_runner


def _person_and_room(folder):
    """Mean depth grey on the person's pixels and on the rest, over every pair of the set."""
    with open_dataset(folder) as ds:
        batch = ds.load_batch(range(len(ds)))
    person = batch["mask"] > 0.5
    return float(batch["depth"][person].mean()), float(batch["depth"][~person].mean()), ds.depth_convention


def test_a_synthetic_pair_is_far_bright_by_default_and_near_bright_on_request(tmp_path):
    """Done-when: the person (near) is darker than the room in the default convention."""
    synthesize(tmp_path / "far", backgrounds=1, foregrounds=2, placements=1, size=64, seed=3)
    synthesize(tmp_path / "near", backgrounds=1, foregrounds=2, placements=1, size=64, seed=3,
               depth_convention="near-bright")
    person, room, convention = _person_and_room(tmp_path / "far")
    assert convention == "far-bright" and person < room - 0.1
    person, room, convention = _person_and_room(tmp_path / "near")
    assert convention == "near-bright" and person > room + 0.1
    assert json.loads((tmp_path / "far" / INFO_NAME).read_text())["depth_convention"] == "far-bright"


def test_a_set_without_a_description_is_the_originals_and_a_bad_one_is_one_line(tmp_path):
    synthesize(tmp_path / "s", backgrounds=1, foregrounds=1, placements=1, size=32, seed=1, zip=True)
    (tmp_path / "s" / INFO_NAME).unlink()
    assert open_dataset(tmp_path / "s").depth_convention == "far-bright"
    (tmp_path / "s" / INFO_NAME).write_text('{"depth_convention": "up"}')
    with pytest.raises(UserError, match="dataset.json: depth convention must be one of"):
        open_dataset(tmp_path / "s")
    assert open_dataset(tmp_path / "s" / "DepthImage.zip", allow_empty=True).depth_convention == "far-bright"


def test_legends_say_far_at_the_bright_end_of_a_far_bright_model():
    far, near = depth_legend("far-bright"), depth_legend("near-bright")
    assert (far.low, far.high) == ("near", "far") and (near.low, near.high) == ("far", "near")
    assert np.array_equal(nearness(np.array([0.2], np.float32), "far-bright"), np.array([0.8], np.float32))


def test_exports_record_the_convention_and_older_ones_read_as_near_bright_with_a_note(exported_onnx, tmp_path):
    """The legacy import (the author's model) is far-bright in its export's metadata; a file
    written before the field existed reads as near-bright and says so."""
    runner = open_runner(exported_onnx)
    assert runner.spec.depth_convention == "far-bright" and not runner.notes
    assert runner.metadata["toolkit.depth_convention"] == "far-bright"
    proto = onnx.load(exported_onnx)
    for prop in proto.metadata_props:
        if prop.key == "toolkit.iospec":
            spec = json.loads(prop.value)
            del spec["depth_convention"]
            prop.value = json.dumps(spec)
    old = tmp_path / "old.onnx"
    onnx.save(proto, old)
    runner = open_runner(old)
    assert runner.spec.depth_convention == "near-bright"
    assert any("read as near-bright" in n for n in runner.notes)
    assert IOSpec.from_dict({**IOSpec().to_dict(), "depth_convention": "far-bright"}).depth_convention == "far-bright"


def test_val_scores_a_model_the_same_against_either_convention(trained_onnx, tmp_path):
    """The trained fixture predicts near-bright depth (its training set's); against the same
    scenes stored far-bright it is scored with one side flipped, to the same figures."""
    from toolkit.tasks.val import validate

    for convention in ("far-bright", "near-bright"):
        synthesize(tmp_path / convention, backgrounds=2, foregrounds=2, placements=1, size=64, seed=12,
                   depth_convention=convention)
    far, near = (validate([trained_onnx], tmp_path / c, holdout=0.5, batches=[1], warmup=0, iters=1,
                          depth_units="synthetic") for c in ("far-bright", "near-bright"))
    assert any("scored with one side flipped" in n for n in far.notes)
    assert not any("flipped" in n for n in near.notes)
    f, n = far.rows[0].figures, near.rows[0].figures
    assert f["mask_iou"] == n["mask_iou"]
    assert abs(f["depth_rmse"] - n["depth_rmse"]) < 0.01 and n["depth_rmse"] < 0.1
    assert abs(f["depth_delta1"] - n["depth_delta1"]) < 0.05
