"""One fixed camera through `stream`, `infer` and `serve --bg`: the halves (background
features once) gives the whole network's masks, and each says which of the two ran."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.deploy.conftest import Server, in_process_server, running_server
from toolkit.deploy.client import encode_multipart
from toolkit.deploy.footage import background, walking_frames
from toolkit.tasks.infer import infer_files

H, W = 48, 64
needs_serve = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn")), reason="the serve extra is not installed")

HALVES_NOTE = "fixed camera: model.bg.onnx once per background, model.frame.onnx per frame"
WHOLE_NOTE = "fixed camera: background cache off (--no-bg-cache): the whole network runs on every frame"


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def read_grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im, dtype=int)


def levels_apart(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.fixture(scope="module")
def camera(tmp_path_factory) -> Path:
    """bg.png (the empty room) and frames/ (6 PNGs of a figure walking across it), 64x48."""
    root = tmp_path_factory.mktemp("camera")
    Image.fromarray(background(H, W)).save(root / "bg.png")
    (root / "frames").mkdir()
    for i, f in enumerate(walking_frames(6, H, W)):
        Image.fromarray(f).save(root / "frames" / f"{i:03d}.png")
    return root


# -- stream -----------------------------------------------------------------------------------
def test_stream_uses_the_halves_and_writes_the_whole_networks_masks(exported_halves, camera, tmp_path):
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream

    reports, masks = {}, {}
    for mode, cache in (("pair", True), ("whole", False)):
        reports[mode] = stream(exported_halves, str(camera / "frames"), tmp_path / f"out-{mode}", StreamOptions(bg=camera / "bg.png",
                               masks_dir=tmp_path / f"masks-{mode}", batch=4, bg_cache=cache))
        masks[mode] = [read_grey(p) for p in sorted((tmp_path / f"masks-{mode}").iterdir())]
    assert reports["pair"].fixed_camera == "halves" and reports["whole"].fixed_camera == "whole network"
    assert reports["pair"].notes[0] == HALVES_NOTE and HALVES_NOTE not in reports["whole"].notes and WHOLE_NOTE in reports["whole"].notes
    for r in reports.values():
        assert r.frames == r.masks == 6 and len(list(r.out.iterdir())) == 6
    assert len(masks["pair"]) == len(masks["whole"]) == 6 and masks["pair"][0].shape == (H, W)
    for a, b in zip(masks["pair"], masks["whole"]):
        assert levels_apart(a, b) <= 1
    assert levels_apart(masks["whole"][0], masks["whole"][5]) > 20  # the figure moved: the masks are not a constant
    # the stream's mask of a frame is what `infer` writes for that (bg, frame) pair, the whole model alone
    infer_files(exported_halves, camera / "bg.png", camera / "frames" / "002.png", tmp_path / "one")
    assert levels_apart(masks["pair"][2], read_grey(tmp_path / "one" / "mask.png")) <= 1


# -- infer: one background and a folder of frames ---------------------------------------------
def test_infer_one_background_and_a_folder_of_frames(exported_halves, camera, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    names = ["000", "002", "005"]
    for name in names:
        shutil.copy(camera / "frames" / f"{name}.png", frames / f"{name}.png")
    runs = {"pair": infer_files(exported_halves, camera / "bg.png", frames, tmp_path / "pair", batch_size=2),
            "whole": infer_files(exported_halves, camera / "bg.png", frames, tmp_path / "whole", batch_size=2, bg_cache=False)}
    assert HALVES_NOTE in runs["pair"].notes and not any("cache off" in n for n in runs["pair"].notes)
    assert HALVES_NOTE not in runs["whole"].notes and WHOLE_NOTE in runs["whole"].notes
    # the reference: a folder of backgrounds paired by name, so every pair runs the whole network on its own
    bgs = tmp_path / "bgs"
    bgs.mkdir()
    for name in names:
        shutil.copy(camera / "bg.png", bgs / f"{name}.png")
    reference = infer_files(exported_halves, bgs, frames, tmp_path / "reference", batch_size=3)
    assert not any(n.startswith("fixed camera") for n in reference.notes)
    for mode, report in runs.items():
        assert report.pairs == 3 and report.files == 9 and report.failures == []
        assert sorted(p.name for p in (tmp_path / mode).iterdir()) == names
        for name in names:
            for file in ("mask.png", "depth.png", "panel.png"):
                assert (tmp_path / mode / name / file).is_file()
            got = read_grey(tmp_path / mode / name / "mask.png")
            assert levels_apart(got, read_grey(tmp_path / "reference" / name / "mask.png")) <= 1, (mode, name)
    a, b = (read_grey(tmp_path / "pair" / n / "mask.png") for n in ("000", "005"))
    assert levels_apart(a, b) > 20  # different frames, different masks: equality above means something


def test_the_whole_network_fallback_says_so_after_activation(exported_halves, exported_onnx, camera, tmp_path):
    from toolkit.deploy.options import StreamOptions
    from toolkit.deploy.stream import stream
    from toolkit.runtime.fixed import open_fixed_camera

    with open_fixed_camera(exported_halves, cache=False) as runner:  # what serve --bg --no-bg-cache prints
        assert runner.notes[:1] == [WHOLE_NOTE]
    report = infer_files(exported_halves, camera / "bg.png", camera / "frames", tmp_path / "infer", bg_cache=False)
    assert WHOLE_NOTE in report.notes
    report = stream(exported_onnx, str(camera / "frames"), tmp_path / "stream", StreamOptions(bg=camera / "bg.png", max_frames=2))
    assert report.fixed_camera == "whole network"
    assert report.notes[0].startswith("fixed camera: no halves beside it (model.bg.onnx and model.frame.onnx missing")


# -- serve --bg -------------------------------------------------------------------------------
def answer_mask(doc: dict) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(doc["mask_png"]))) as im:
        return np.asarray(im, dtype=int)


def infer_request(server: Server, fields: dict[str, bytes]):
    body, headers = encode_multipart({k: (f"{k}.png", v, "image/png") for k, v in fields.items()})
    status, resp_headers, answer = server.request("/v1/infer", body, headers)
    return status, {k.lower(): v for k, v in resp_headers.items()}, answer


@pytest.fixture(scope="module")
def reference_masks(exported_halves, camera, tmp_path_factory) -> dict[str, np.ndarray]:
    """`infer` of frame 002 against the camera's background and against another room (whole model)."""
    out = tmp_path_factory.mktemp("reference")
    Image.fromarray(background(H, W, seed=7)).save(out / "other.png")
    masks = {}
    for name, bg in (("camera", camera / "bg.png"), ("other", out / "other.png")):
        infer_files(exported_halves, bg, camera / "frames" / "002.png", out / name)
        masks[name] = read_grey(out / name / "mask.png")
    assert levels_apart(masks["camera"], masks["other"]) > 20  # the uploaded bg would show if it were used
    return masks


@needs_serve
def test_serve_with_a_background_takes_frames_only(exported_halves, camera, reference_masks):
    frame = (camera / "frames" / "002.png").read_bytes()
    other = png(background(H, W, seed=7))
    with running_server(exported_halves, "--bg", str(camera / "bg.png"), "--max-wait-ms", "1") as server:
        info = server.json("/v1/model")
        assert info["fixed_camera"] == {"background": "bg.png", "mode": "halves"}
        status, headers, body = infer_request(server, {"fgbg": frame})
        assert status == 200 and headers["content-type"] == "application/json", body
        doc = json.loads(body)
        assert (doc["width"], doc["height"], doc["warnings"]) == (W, H, []) and "x-toolkit-warning" not in headers
        assert levels_apart(answer_mask(doc), reference_masks["camera"]) <= 1

        status, headers, body = infer_request(server, {"bg": other, "fgbg": frame})  # a bg sent anyway
        assert status == 200, body
        doc = json.loads(body)
        warning = "this server has a fixed background (--bg): the uploaded bg is not used"
        assert headers["x-toolkit-warning"] == warning and doc["warnings"] == [warning]
        assert levels_apart(answer_mask(doc), reference_masks["camera"]) <= 1  # not the other room's mask

        js = json.dumps({"fgbg": base64.b64encode(frame).decode()}).encode()
        status, _, body = server.request("/v1/infer", js, {"Content-Type": "application/json"})
        assert status == 200 and levels_apart(answer_mask(json.loads(body)), reference_masks["camera"]) <= 1
        assert server.json("/v1/model")["batching"]["failures"] == 0
        code, _, _ = server.stop()
    assert code == 0


@needs_serve
def test_serve_without_the_cache_and_without_a_background(exported_halves, camera, reference_masks):
    from toolkit.deploy.server import ServeSettings, create_app
    from toolkit.render import imageio
    from toolkit.runtime import open_runner
    from toolkit.runtime.fixed import open_fixed_camera

    frame = (camera / "frames" / "002.png").read_bytes()
    settings = ServeSettings(max_batch=4, max_wait_ms=1)
    with open_fixed_camera(exported_halves, cache=False) as runner:  # serve --bg bg.png --no-bg-cache
        app = create_app(runner, settings, background=("bg.png", imageio.read_rgb(camera / "bg.png")))
        with in_process_server(app) as server:
            assert server.json("/v1/model")["fixed_camera"] == {"background": "bg.png", "mode": "whole network"}
            status, _, body = infer_request(server, {"fgbg": frame})
            assert status == 200, body
            assert levels_apart(answer_mask(json.loads(body)), reference_masks["camera"]) <= 1
    with open_runner(exported_halves) as runner:  # serve without --bg: every request sends its pair
        with in_process_server(create_app(runner, settings)) as server:
            assert server.json("/v1/model")["fixed_camera"] is None
            status, headers, body = infer_request(server, {"fgbg": frame})
            assert status == 400 and headers["content-type"] == "application/json"
            assert "missing the form field 'bg'" in json.loads(body)["error"]
            js = json.dumps({"fgbg": base64.b64encode(frame).decode()}).encode()
            status, _, body = server.request("/v1/infer", js, {"Content-Type": "application/json"})
            assert status == 400 and "'bg' and 'fgbg'" in json.loads(body)["error"]
            status, _, body = infer_request(server, {"bg": png(background(H, W, seed=7)), "fgbg": frame})
            assert status == 200 and levels_apart(answer_mask(json.loads(body)), reference_masks["other"]) <= 1


@needs_serve
def test_no_bg_cache_without_bg_is_one_line_and_exit_2(exported_halves):
    r = run_cli("serve", "--model", str(exported_halves), "--port", "0", "--no-bg-cache", block_torch=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "error: --no-bg-cache only applies with --bg IMAGE (a server for one fixed camera)"
    assert "serving" not in r.stdout
