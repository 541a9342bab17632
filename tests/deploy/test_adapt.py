"""A background that follows the scene: running update on background pixels, relearnt when stale."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from toolkit.core.errors import UserError
from toolkit.deploy.adapt import Adaptation, BackgroundTracker
from toolkit.deploy.footage import background, walking_scene


def test_the_running_update_touches_background_pixels_only_and_is_pushed_every_k_frames():
    bg = np.full((4, 4, 3), 0.5, np.float32)
    tracker = BackgroundTracker(bg.copy(), Adaptation(rate=0.5, relearn=False, push_every=2))
    frame = np.full((4, 4, 3), 0.7, np.float32)
    mask = np.zeros((4, 4), np.float32)
    mask[:2] = 1.0  # the person: never taken into the background
    assert tracker.observe(frame, mask) is None  # one update, not yet handed over
    pushed = tracker.observe(frame, mask)
    assert pushed is not None
    assert np.allclose(pushed[:2], 0.5) and np.allclose(pushed[2:], 0.65)  # 0.5 -> 0.6 -> 0.65
    assert tracker.events == []


def test_a_stale_background_is_relearnt_from_the_median_of_the_next_frames():
    bg = np.full((4, 4, 3), 0.5, np.float32)
    settings = Adaptation(stale_frames=3, relearn_frames=3)
    tracker = BackgroundTracker(bg.copy(), settings)
    mask = np.zeros((4, 4), np.float32)
    lit = [np.full((4, 4, 3), v, np.float32) for v in (0.9, 0.9, 0.9, 0.85, 0.95, 0.9)]
    out = [tracker.observe(f, mask) for f in lit]
    assert out[:5] == [None] * 5 and out[5] is not None
    assert np.allclose(out[5], 0.9)  # the median of 0.85, 0.95, 0.9
    assert tracker.events[0].startswith("frame 3: background stale (mean difference 0.400")
    assert tracker.events[1] == "frame 6: background relearnt (median of frames 4-6)"
    assert tracker.observe(lit[0], mask) is None and len(tracker.events) == 2  # fresh again: no more events


def test_a_person_standing_through_the_relearn_is_not_learnt_into_the_background():
    room = np.full((4, 4, 3), 0.8, np.float32)
    tracker = BackgroundTracker(np.full((4, 4, 3), 0.2, np.float32), Adaptation(stale_frames=1, relearn_frames=5))
    frames, masks = [], []
    for i in range(6):
        f, m = room.copy(), np.zeros((4, 4), np.float32)
        if i < 4:  # the person stands on the top row for the first four relearn frames (a median would keep them)
            f[0], m[0] = 0.1, 1.0
        frames.append(f)
        masks.append(m)
    out = [tracker.observe(f, m) for f, m in zip(frames, masks)]
    assert out[-1] is not None and np.allclose(out[-1], 0.8)  # each pixel from the frames that saw it empty


def test_masked_median_falls_back_to_the_plain_median_where_a_pixel_was_never_background():
    from toolkit.deploy.adapt import masked_median

    frames = [np.full((2, 2, 3), v, np.float32) for v in (0.1, 0.5, 0.9)]
    seen = [np.array([[True, False], [False, False]]), np.array([[True, False], [True, False]]), np.zeros((2, 2), bool)]
    out = masked_median(frames, seen)
    assert np.allclose(out[0, 0], 0.3) and np.allclose(out[1, 0], 0.5) and np.allclose(out[0, 1], 0.5)


def test_room_footage_is_the_synthetic_sets_scene_with_true_masks():
    from toolkit.deploy.footage import room_background, room_scene, scripted_scene

    frames, masks = room_scene(5, 48, seed=3)
    bg = room_background(48, seed=3)
    assert frames[0].shape == (48, 48, 3) and frames[0].dtype == np.uint8 and all(m.sum() > 10 for m in masks)
    centres = [np.nonzero(m)[1].mean() for m in masks]
    assert centres == sorted(centres) and centres[-1] - centres[0] > 15  # walking left to right
    differs = np.abs(frames[2].astype(int) - bg.astype(int)).sum(axis=-1) > 30
    assert differs[masks[2]].mean() > 0.5 and differs[~masks[2]].mean() < 0.02  # the person, and only the person
    with pytest.raises(ValueError, match="square"):
        scripted_scene(3, 48, 64, room=True)


def test_the_settings_are_checked():
    with pytest.raises(UserError, match="--bg-update must be in"):
        Adaptation(rate=1.5)
    r = run_cli("stream", "--model", "x.onnx", "--source", ".", "--out", "o", "--bg-update", "2")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --bg-update must be in")


def test_a_stream_relearns_after_the_light_changes_and_then_runs_as_if_given_the_new_background(exported_onnx, tmp_path):
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    h, w = 96, 128
    room = background(h, w)
    frames, _ = walking_scene(6, h, w)
    dim = lambda a: (a.astype(np.float32) * 0.6).astype(np.uint8)  # noqa: E731 - the light switched off
    sequence = frames[:3] + [dim(room)] * 12 + [dim(f) for f in frames[3:]]  # the empty room, darker, then the figure again
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(sequence):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    Image.fromarray(room).save(tmp_path / "room.png")
    Image.fromarray(dim(room)).save(tmp_path / "dim-room.png")
    adapt = Adaptation(stale_frames=3, relearn_frames=5)
    report = stream(exported_onnx, str(folder), tmp_path / "out", StreamOptions(bg=tmp_path / "room.png", masks_dir=tmp_path / "masks",
                    batch=1, pipelined=False, adapt=adapt, self_test=False))
    assert any("background stale" in e for e in report.background_events)
    relearnt = [e for e in report.background_events if "relearnt" in e]
    assert len(relearnt) == 1
    # the last frames: as a stream given the darker room from the start
    tail = tmp_path / "tail"
    tail.mkdir()
    for i, f in enumerate(sequence[-3:]):
        Image.fromarray(f).save(tail / f"{i:03d}.png")
    reference = stream(exported_onnx, str(tail), tmp_path / "ref", StreamOptions(bg=tmp_path / "dim-room.png", masks_dir=tmp_path / "ref-masks",
                       batch=1, pipelined=False, self_test=False))
    got = [np.asarray(Image.open(p), np.int16) for p in sorted((tmp_path / "masks").iterdir())[-3:]]
    want = [np.asarray(Image.open(p), np.int16) for p in sorted((tmp_path / "ref-masks").iterdir())]
    assert reference.frames == 3 and all(np.abs(a - b).max() <= 2 for a, b in zip(got, want))
    fixed = stream(exported_onnx, str(folder), tmp_path / "fixed", StreamOptions(bg=tmp_path / "room.png", masks_dir=tmp_path / "fixed-masks",
                   batch=1, pipelined=False, self_test=False))
    stale = [np.asarray(Image.open(p), np.int16) for p in sorted((tmp_path / "fixed-masks").iterdir())[-3:]]
    assert fixed.background_events == [] and max(np.abs(a - b).max() for a, b in zip(stale, want)) > 20  # without it: wrong


def test_the_scripted_footage_changes_the_light_and_moves_the_camera_with_the_truth():
    from toolkit.deploy.footage import scripted_scene

    plain, plain_masks = walking_scene(6, 48, 64)
    lit, lit_masks = scripted_scene(6, 48, 64, light_at=3, light=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(plain[:3], lit[:3]))
    assert np.allclose(lit[4], (plain[4] * 0.5).astype(np.uint8), atol=1)
    assert all(np.array_equal(a, b) for a, b in zip(plain_masks, lit_masks))  # light does not move the person
    moved, moved_masks = scripted_scene(6, 48, 64, shift_at=2, shift=(2, 3))
    assert np.array_equal(moved[4][2:, 3:], plain[4][:-2, :-3]) and np.array_equal(moved_masks[4][2:, 3:], plain_masks[4][:-2, :-3])
    assert not moved_masks[4][:2].any()  # the truth moved with the camera
