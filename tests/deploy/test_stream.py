"""`toolkit stream` end to end on the edge install (an ONNX model, torch unimportable)."""

import signal
import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.deploy.conftest import CLIP_FRAMES, CLIP_H, CLIP_W, cli_process
from toolkit.core.install import install_hint
from toolkit.deploy.footage import background, walking_frames, write_video
from toolkit.deploy.options import StreamOptions
from toolkit.deploy.stream import compose_panel

pytest.importorskip("av", reason="the video extra (PyAV) is not installed")


def panel_size(h: int, w: int) -> tuple[int, int]:
    """(width, height) of the frame | overlay | depth panel, rounded up to even (H.264)."""
    p, _ = compose_panel(np.zeros((h, w, 3), np.uint8), np.zeros((8, 8)), np.zeros((8, 8)))
    return p.shape[1] + p.shape[1] % 2, p.shape[0] + p.shape[0] % 2


def test_stream_video_to_mp4_with_masks(tmp_path, clip, exported_onnx):
    from toolkit.deploy.video import probe_video

    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    r = run_cli("stream", "--model", str(exported_onnx), "--source", str(clip), "--out", str(out), "--bg-frames", "6",
                "--masks-dir", str(masks), "--batch", "3", block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "background: per-pixel median of the first 6 frame(s)" in r.stderr
    assert "frames are 64 wide x 48 high and the model takes 128 x 128: each frame is squashed by 33%" in r.stderr
    assert "--image-size 128x172` (H x W)" in r.stderr  # 4:3 at the model's height, a multiple of 4
    assert f"{CLIP_FRAMES} frame(s)" in r.stdout and "fps" in r.stdout
    n, w, h, fps = probe_video(out)
    assert (n, (w, h), fps) == (CLIP_FRAMES, panel_size(CLIP_H, CLIP_W), 10.0)
    files = sorted(masks.iterdir())
    assert len(files) == CLIP_FRAMES and files[0].name == "mask_000000.png"
    with Image.open(files[0]) as m:
        assert m.mode == "L" and m.size == (CLIP_W, CLIP_H)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    import av

    with av.open(str(out)) as container:
        last = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][-1]
    strip = compose_panel(np.zeros((CLIP_H, CLIP_W, 3), np.uint8), np.zeros((4, 4)), np.zeros((4, 4)))[0].shape[0] - CLIP_H
    tile = last[strip : strip + CLIP_H, :CLIP_W].astype(int)
    errors = [np.abs(tile - f).mean() for f in walking_frames(CLIP_FRAMES, CLIP_H, CLIP_W)]
    assert int(np.argmin(errors)) == CLIP_FRAMES - 1  # the first tile of the last output is the last frame (H.264 twice: ~12 off)


def test_stream_folder_to_png_frames_with_a_background_image(tmp_path, exported_onnx):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, f in enumerate(walking_frames(4, 32, 40)):
        Image.fromarray(f).save(frames_dir / f"{i:03d}.png")
    Image.fromarray(background(64, 80)).save(tmp_path / "bg.png")  # twice the frames' size
    r = run_cli("stream", "-m", str(exported_onnx), "-s", str(frames_dir), "-o", str(tmp_path / "out"), "--bg", str(tmp_path / "bg.png"),
                block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "resized to the frames' 40x32" in r.stderr
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [f"frame_{i:06d}.png" for i in range(4)]
    panel, _ = compose_panel(np.zeros((32, 40, 3), np.uint8), np.zeros((4, 4)), np.zeros((4, 4)))
    with Image.open(written[2]) as im:
        assert im.size == (panel.shape[1], panel.shape[0])  # PNG frames are not padded
        tile = np.asarray(im.convert("RGB"))[-32:, :40]
    assert np.array_equal(tile, walking_frames(4, 32, 40)[2])  # the first tile is the frame itself, losslessly


def test_stream_runs_a_pytorch_checkpoint_too(tmp_path, clip, imported_ckpt):
    from toolkit.deploy.stream import stream

    report = stream(imported_ckpt, str(clip), tmp_path / "out.mkv", StreamOptions(bg_frames=4, max_frames=5, batch=2))
    assert report.frames == 5 and (tmp_path / "out.mkv").is_file() and report.codec == "libx264"


@pytest.mark.parametrize(
    "case,expect",
    [
        ("unreadable", "not a readable video"),
        ("empty-folder", "no frames"),
        ("size-change", "frame 2 is 40x36 but the stream started at 40x32"),
        ("both-bg", "give --bg IMAGE or --bg-frames N, not both"),
        ("suffix", "unknown video suffix '.gif'"),
        ("missing-source", "no such video file, folder or camera index"),
    ],
)
def test_stream_bad_input_is_one_line_and_exit_2_with_no_output(tmp_path, exported_onnx, case, expect):
    source, extra, out = tmp_path / "src", [], tmp_path / "out.mp4"
    source.mkdir()
    if case == "unreadable":
        source = tmp_path / "broken.mp4"
        source.write_bytes(b"this is not a video" * 50)
    elif case == "size-change":
        for i, (h, w) in enumerate([(32, 40), (32, 40), (36, 40)]):
            Image.fromarray(walking_frames(1, h, w)[0]).save(source / f"{i}.png")
    elif case == "both-bg":
        extra = ["--bg", str(tmp_path / "bg.png"), "--bg-frames", "3"]
    elif case == "suffix":
        out = tmp_path / "out.gif"
    elif case == "missing-source":
        source = tmp_path / "nope.mp4"
    r = run_cli("stream", "-m", str(exported_onnx), "-s", str(source), "-o", str(out), "--bg-frames", "1", *extra, block_torch=True)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expect in lines[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sigint_finishes_the_frame_and_leaves_a_playable_partial_video(tmp_path, exported_onnx):
    from toolkit.deploy.video import probe_video

    total = 400
    long_clip = write_video(tmp_path / "long.mp4", walking_frames(total, 32, 40), fps=25)
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    proc = cli_process("stream", "-m", str(exported_onnx), "-s", str(long_clip), "-o", str(out), "--masks-dir", str(masks), "--bg-frames", "2")
    try:
        deadline = time.monotonic() + 120
        while (not masks.is_dir() or len(list(masks.iterdir())) < 3) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout
    n, w, h, _ = probe_video(out)  # decodes to the end: the container was closed properly
    assert 3 <= n < total and (w, h) == panel_size(32, 40)
    assert len(list(masks.iterdir())) == n  # every frame in the video was finished, masks and all
    assert f"{n} frame(s)" in stdout


def test_missing_video_extra_names_it(tmp_path, clip, exported_onnx):
    proc = cli_process("stream", "-m", str(exported_onnx), "-s", str(clip), "-o", str(tmp_path / "o.mp4"), block=("av",))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert stderr.strip() == f"error: PyAV (video files and cameras) is not installed: {install_hint('video')}"


def test_deploy_modules_import_without_torch_pyav_or_starlette():
    import subprocess
    import sys

    from tests.conftest import ROOT

    modules = ["toolkit.deploy.background", "toolkit.deploy.video", "toolkit.deploy.pipeline", "toolkit.deploy.stream",
               "toolkit.deploy.batcher", "toolkit.deploy.server", "toolkit.cli.deploy_cmd"]
    code = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in ("torch", "av", "starlette", "uvicorn")) + "".join(
        f"import {m}\n" for m in modules) + "print('ok')\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = run_cli("--help", block_torch=True)
    assert r.returncode == 0 and "stream" in r.stdout and "serve" in r.stdout


def test_aspect_note_only_past_five_percent():
    from toolkit.deploy.stream import aspect_note

    assert aspect_note((128, 130), (128, 128)) is None and aspect_note((720, 1280), (128, 224)) is None
    assert "--image-size 128x228" in aspect_note((720, 1280), (128, 128))
    assert "squashed by 50%" in aspect_note((128, 64), (128, 128))


def _masks(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.iterdir())]


def test_layouts_sizes_and_masks_that_do_not_depend_on_the_layout(tmp_path, clip, exported_onnx):
    """The overlay at the camera's size or --out-size, the panel as before; the raw masks are
    the same bytes whatever is drawn (or nothing: --no-video)."""
    from toolkit.deploy.stream import stream
    from toolkit.deploy.video import probe_video

    runs = {"panel": (tmp_path / "panel.mp4", dict(layout="panel")),
            "overlay": (tmp_path / "overlay.mp4", dict(layout="overlay")),
            "small": (tmp_path / "small.mp4", dict(layout="overlay", out_size=(24, 32))),
            "none": (None, dict(video=False))}
    reports = {}
    for name, (out, extra) in runs.items():
        options = StreamOptions(bg_frames=6, batch=1, masks_dir=tmp_path / f"masks-{name}", **extra)
        reports[name] = stream(exported_onnx, str(clip), out, options)
    assert probe_video(tmp_path / "panel.mp4")[1:3] == panel_size(CLIP_H, CLIP_W)
    assert probe_video(tmp_path / "overlay.mp4")[:3] == (CLIP_FRAMES, CLIP_W, CLIP_H)
    assert probe_video(tmp_path / "small.mp4")[:3] == (CLIP_FRAMES, 32, 24)
    masks = {name: _masks(tmp_path / f"masks-{name}") for name in runs}
    assert all(len(m) == CLIP_FRAMES and m[0].shape == (CLIP_H, CLIP_W) for m in masks.values())
    assert all(np.array_equal(a, b) for name in ("overlay", "small", "none") for a, b in zip(masks["panel"], masks[name]))
    assert reports["panel"].layout == "panel" and reports["overlay"].layout == "overlay" and reports["none"].layout == ""
    assert reports["panel"].encoder.startswith("libx264 (preset veryfast, crf 20, frame threads; a file: quality)")


def test_a_live_source_is_encoded_for_latency_and_the_preset_can_be_chosen(tmp_path, clip, exported_onnx):
    from tests.deploy.test_events import Released
    from toolkit.deploy.stream import stream

    camera = Released(4)
    camera.allowed.release(4)
    live = stream(exported_onnx, camera, tmp_path / "live.mp4", StreamOptions(bg_frames=2, layout="overlay"))
    assert live.encoder == "libx264 (preset ultrafast, tune zerolatency, slice threads; live: low latency)"
    assert live.latency_ms_p50 is not None and live.latency_ms_p50 <= live.latency_ms_p99
    chosen = stream(exported_onnx, str(clip), tmp_path / "fast.mp4", StreamOptions(bg_frames=2, preset="ultrafast"))
    assert chosen.encoder == "libx264 (preset ultrafast, crf 20, frame threads; --preset)"  # not "large pictures"


def test_a_preset_the_encoder_cannot_use_is_a_note(tmp_path, clip, exported_onnx):
    from toolkit.deploy.stream import stream

    report = stream(exported_onnx, str(clip), tmp_path / "out.avi", StreamOptions(bg_frames=2, preset="ultrafast"))
    assert report.codec == "mpeg4" and report.encoder == "mpeg4 (.avi's encoder)"
    assert "--preset ultrafast sets H.264's encoder (libx264); out.avi is written with mpeg4: ignored" in report.notes


@pytest.mark.parametrize("layout, out, tag", [("overlay", "v.mp4", 1), ("panel", "v.mp4", 1), ("overlay", "v.avi", 2)])
def test_the_video_drawn_on_the_decoders_planes_shows_the_pictures_the_png_frames_do(tmp_path, exported_onnx, layout, out, tag):
    """From a BT.709 camera, an H.264 video is drawn on the decoded planes and says BT.709 (tag
    1); .avi's encoder drops tags, so it is drawn in RGB and is BT.601, untagged (2), as PNG
    frames are RGB. Decoded, each video shows the PNGs' pictures within H.264's loss."""
    import av

    from tests.deploy.test_decoded import tagged_clip
    from toolkit.deploy.stream import stream

    clip = tagged_clip(tmp_path / "bt709.mp4", 1, 1, n=CLIP_FRAMES, h=CLIP_H, w=CLIP_W)
    for target in (tmp_path / out, tmp_path / "png"):
        stream(exported_onnx, str(clip), target, StreamOptions(bg_frames=6, batch=1, layout=layout))
    with av.open(str(tmp_path / out)) as container:
        decoded = list(container.decode(video=0))
    pngs = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "png").iterdir())]
    assert len(decoded) == len(pngs) == CLIP_FRAMES and {int(f.colorspace) for f in decoded} == {tag}
    h, w = pngs[0].shape[:2]
    compared = decoded if out.endswith(".mp4") else decoded[:1]  # mpeg4 at FFmpeg's default bit rate blurs what follows
    diffs = [np.abs(f.to_ndarray(format="rgb24")[:h, :w].astype(int) - p).mean() for f, p in zip(compared, pngs)]
    assert max(diffs) < 4, diffs


def test_match_infer_gives_the_masks_infer_gives_on_the_same_frames(tmp_path, clip, exported_onnx):
    """--match-infer: each frame (and the background) resized for the model as `infer` resizes
    an image, so the masks are byte for byte what the model gives on infer's inputs."""
    from toolkit.deploy.background import median_background
    from toolkit.deploy.compose import mask_at
    from toolkit.deploy.video import open_source
    from toolkit.render import imageio
    from toolkit.runtime.fixed import open_fixed_camera

    r = run_cli("stream", "-m", str(exported_onnx), "-s", str(clip), "--no-video", "--masks-dir", str(tmp_path / "masks"),
                "--bg-frames", "6", "--batch", "1", "--match-infer", block_torch=True)
    assert r.returncode == 0, r.stderr
    with open_source(str(clip)) as src:
        frames = list(src)
    background, _ = median_background(frames[:6], 6)
    as_infer = lambda picture, size: imageio.to_nchw([imageio.resize(picture.astype(np.float32) / 255, size)])  # noqa: E731
    with open_fixed_camera(exported_onnx) as runner:
        runner.set_background(as_infer(background, runner.spec.size))
        want = [imageio.to_uint8(mask_at(runner.infer_frames(as_infer(f, runner.spec.size))["mask"][0, 0], f.shape[:2])) for f in frames]
    got = _masks(tmp_path / "masks")
    assert len(got) == len(want) == CLIP_FRAMES
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
