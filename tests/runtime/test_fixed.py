"""The fixed camera's runners: the halves run as one whole model, and the checks that tie them to it."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from toolkit.core.errors import UserError
from toolkit.deploy.footage import background, walking_frames
from toolkit.render import imageio
from toolkit.runtime import open_runner
from toolkit.runtime.fixed import HalvesRunner, half_paths, open_fixed_camera

SIZE = (128, 128)
TOLERANCE = 1e-5  # the cut is exact: only float summation order differs


def nchw(images: list[np.ndarray]) -> np.ndarray:
    """uint8 HxWx3 images as float32 [N, 3, 128, 128] in [0, 1] (what the runners take)."""
    return imageio.to_nchw([imageio.resize(i.astype(np.float32) / 255.0, SIZE) for i in images])


BG = nchw([background(96, 128)])  # [1, 3, H, W]: the camera's empty room
OTHER_BGS = nchw([background(96, 128, seed=s) for s in (1, 2, 3)])  # three other rooms
FRAMES = nchw(walking_frames(3, 96, 128))  # a figure walking over BG


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert set(a) == set(b) == {"mask", "depth"}
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def whole(exported_halves):
    """The whole model on ONNX Runtime: the independent reference."""
    with open_runner(exported_halves) as runner:
        yield runner


def repeated(bg: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(bg, n, axis=0))


def check_halves_match_whole(halves: HalvesRunner, whole, tolerance: float) -> None:
    for n in (1, 3, 1):  # a batch size seen before reuses its repeated features
        want = whole.infer({"bg": repeated(BG, n), "fgbg": FRAMES[:n]})
        halves.set_background(BG[0])  # [3, H, W]
        got = halves.infer_frames(FRAMES[:n])
        assert got["mask"].shape == got["depth"].shape == (n, 1, *SIZE)
        assert max_diff(got, want) <= tolerance
    # each pair's own background through `infer`: after a set_background, so a stale cache shows
    halves.set_background(BG)  # [1, 3, H, W]
    want = whole.infer({"bg": OTHER_BGS, "fgbg": FRAMES})
    assert max_diff(halves.infer({"bg": OTHER_BGS, "fgbg": FRAMES}), want) <= tolerance
    stale = whole.infer({"bg": repeated(BG, 3), "fgbg": FRAMES})
    assert max_diff(want, stale) > 100 * tolerance  # the backgrounds matter: a cached one would fail above
    # a new background replaces the old one
    halves.set_background(OTHER_BGS[1])
    want = whole.infer({"bg": repeated(OTHER_BGS[1:2], 3), "fgbg": FRAMES})
    assert max_diff(halves.infer_frames(FRAMES), want) <= tolerance


def test_the_halves_give_the_whole_models_answers(exported_halves, whole):
    halves = HalvesRunner(exported_halves)
    assert halves.interface.part == "whole" and halves.spec == whole.spec and halves.precision == "fp32"
    assert halves.label == str(exported_halves.with_name("model.bg+frame.onnx"))
    assert [h.path for h in halves.halves] == list(half_paths(exported_halves)) == [
        exported_halves.with_name("model.bg.onnx"), exported_halves.with_name("model.frame.onnx")]
    with halves:
        check_halves_match_whole(halves, whole, TOLERANCE)
        frames = halves.infer_frames(FRAMES)
    assert float(np.abs(frames["mask"][0] - frames["mask"][2]).max()) > 0.01  # the frames differ, so do their masks
    assert not any(h.active for h in halves.halves)  # deactivating the runner frees both halves


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed (its extra)")
def test_the_halves_on_openvino(exported_halves, whole):
    halves = HalvesRunner(exported_halves, provider="openvino")
    assert halves.backend == "openvino" and all(h.backend == "openvino" for h in halves.halves)
    with halves:
        check_halves_match_whole(halves, whole, 1e-4)  # another runtime than the reference's
        with open_runner(exported_halves, provider="openvino") as ov_whole:
            check_halves_match_whole(halves, ov_whole, TOLERANCE)


def test_the_default_infer_frames_repeats_the_background(exported_onnx, whole):
    runner = open_runner(exported_onnx)
    assert not half_paths(exported_onnx)[0].exists()  # no pair here: the whole network runs
    with runner:
        with pytest.raises(UserError, match=r"infer_frames\(\) before set_background\(\)"):
            runner.infer_frames(FRAMES)
        runner.set_background(BG[0])
        got = runner.infer_frames(FRAMES)
        want = whole.infer({"bg": repeated(BG, 3), "fgbg": FRAMES})
        assert max_diff(got, want) <= 1e-6
        runner.set_background(OTHER_BGS[2:3])
        got = runner.infer_frames(FRAMES[:2])
        assert max_diff(got, whole.infer({"bg": repeated(OTHER_BGS[2:3], 2), "fgbg": FRAMES[:2]})) <= 1e-6
        assert max_diff(got, {k: v[:2] for k, v in want.items()}) > 1e-3  # it is the new background that ran


@pytest.mark.parametrize(
    "shape, expect",
    [
        ((2, 3, 128, 128), "a fixed camera has one background"),
        ((128, 128), "a fixed camera has one background"),
        ((3, 64, 64), "is 64x64, the model takes 128x128"),
        ((1, 1, 128, 128), r"must be \[N, 3, H, W\]"),
    ],
)
def test_a_background_of_the_wrong_shape_is_refused(exported_halves, shape, expect):
    bg = np.full(shape, 0.5, np.float32)
    with open_runner(exported_halves) as runner:
        with pytest.raises(UserError, match=expect):
            runner.set_background(bg)
    with HalvesRunner(exported_halves) as halves:
        with pytest.raises(UserError, match=r"infer_frames\(\) before set_background\(\)"):
            halves.infer_frames(FRAMES)
        with pytest.raises(UserError, match=expect):
            halves.set_background(bg)
        with pytest.raises(UserError, match=r"infer_frames\(\) before set_background\(\)"):
            halves.infer_frames(FRAMES)  # a refused background sets nothing


def copy_model(src: Path, dst: Path, halves: tuple[str, ...] = ("bg", "frame")) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst / src.name)
    for part, path in zip(("bg", "frame"), half_paths(src)):
        if part in halves:
            shutil.copy(path, dst / path.name)
    return dst / src.name


def test_open_fixed_camera_picks_the_halves_when_they_are_beside(exported_halves, exported_onnx, tmp_path):
    halves = open_fixed_camera(exported_halves)
    assert isinstance(halves, HalvesRunner)
    assert halves.notes[0] == "fixed camera: model.bg.onnx once per background, model.frame.onnx per frame"

    off = open_fixed_camera(exported_halves, cache=False)
    assert not isinstance(off, HalvesRunner) and off.path == exported_halves and off.interface.part == "whole"
    assert off.notes[0].startswith("fixed camera:") and "--no-bg-cache" in off.notes[0]

    lone = open_fixed_camera(exported_onnx)
    assert not isinstance(lone, HalvesRunner) and lone.path == exported_onnx
    assert lone.notes[0].startswith("fixed camera: no halves beside it")
    assert "model.bg.onnx and model.frame.onnx missing" in lone.notes[0]

    half = open_fixed_camera(copy_model(exported_halves, tmp_path / "half", halves=("bg",)))
    assert not isinstance(half, HalvesRunner)
    assert "(model.frame.onnx missing;" in half.notes[0] and "model.bg.onnx" not in half.notes[0]
    with off:  # the whole network, set up for a fixed camera all the same
        off.set_background(BG)
        assert off.infer_frames(FRAMES[:1])["mask"].shape == (1, 1, *SIZE)


def edit_metadata(path: Path, key: str, value: str) -> None:
    import onnx

    proto = onnx.load(str(path))
    props = [p for p in proto.metadata_props if p.key == key]
    assert len(props) == 1, key
    assert props[0].value != value
    props[0].value = value
    onnx.save(proto, str(path))


@pytest.mark.parametrize(
    "case, reason",
    [
        ("other-export", "the two halves come from different exports (split_pair differs)"),
        ("other-checkpoint", "checkpoint sha256 differs"),
        ("swapped", "model.frame.onnx: holds the bg part, expected the frame half"),
        # the same checkpoint, precision, graph and size, but another file: e.g. a re-export with
        # other calibration, or the whole model replaced while an old pair stayed beside it
        ("other-whole", "they were written beside another model.onnx (its SHA-256 differs from what they record)"),
    ],
)
def test_halves_that_do_not_belong_together_are_refused_in_one_line(exported_halves, tmp_path, case, reason):
    model = copy_model(exported_halves, tmp_path / case)
    bg_half, frame_half = half_paths(model)
    if case == "other-export":
        edit_metadata(frame_half, "toolkit.split_pair", "0123456789abcdef")
    elif case == "other-checkpoint":
        edit_metadata(frame_half, "toolkit.checkpoint_sha256", "0" * 64)
    elif case == "other-whole":
        edit_metadata(model, "toolkit.version", "0.0.0-other")
    else:
        shutil.copy(bg_half, frame_half)
    for opening in (lambda: HalvesRunner(model), lambda: open_fixed_camera(model)):
        with pytest.raises(UserError) as e:
            opening()
        message = str(e.value)
        assert reason in message and "\n" not in message
    if case != "swapped":
        assert message.startswith("model.bg.onnx, model.frame.onnx: not the halves of model.onnx: ")
        assert message.endswith("remove them or export again (--no-bg-cache runs the whole model)")
    off = open_fixed_camera(model, cache=False)  # the way out the message names
    assert not isinstance(off, HalvesRunner)


@pytest.mark.parametrize("part", ["bg", "frame"])
def test_open_runner_refuses_a_half_and_names_the_whole_model(exported_halves, part):
    half = exported_halves.with_name(f"model.{part}.onnx")
    with pytest.raises(UserError) as e:
        open_runner(half)
    message = str(e.value)
    assert f"holds the {part} half of a fixed-camera model" in message and "(model.onnx)" in message
    assert "\n" not in message
    assert open_runner(half, part=part).interface.part == part  # asked for, the half opens


def test_the_repeated_features_are_one_array_for_the_largest_batch(exported_halves, whole):
    """serve --bg sees every batch size up to --max-batch: one copy, not one per size."""
    with HalvesRunner(exported_halves) as halves:
        halves.set_background(BG)
        for n in (3, 1, 2, 3):
            want = whole.infer({"bg": repeated(BG, n), "fgbg": FRAMES[:n]})
            assert max_diff(halves.infer_frames(FRAMES[:n]), want) <= TOLERANCE
            assert halves._repeated.shape[0] == 3  # grown once, to the largest batch; smaller ones take a prefix


def test_frames_of_another_size_than_the_background_are_one_line(exported_halves, whole):
    with HalvesRunner(exported_halves) as halves:
        halves.set_background(BG)
        with pytest.raises(UserError, match=r"frames are 64x64, the background set is 128x128"):
            halves.infer_frames(FRAMES[:, :, :64, :64])
    whole.set_background(BG)
    with pytest.raises(UserError, match=r"frames must be \[N, 3, H, W\], got \[\]"):
        whole.infer_frames(np.float32(3))


def test_a_background_set_before_activation_is_used(exported_halves, whole):
    halves = HalvesRunner(exported_halves)
    halves.set_background(BG)  # before activate(), as the base runner allows
    with halves:
        assert max_diff(halves.infer_frames(FRAMES), whole.infer({"bg": repeated(BG, 3), "fgbg": FRAMES})) <= TOLERANCE
