"""The option rules of `stream` and `serve` live in the library (`StreamOptions`,
`ServeOptions`), and parity's in `run_parity`'s own checks: a Python caller gets the CLI's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from toolkit.core.errors import UserError
from toolkit.deploy.adapt import Adaptation
from toolkit.deploy.live import LiveOptions
from toolkit.deploy.options import ServeOptions, StreamOptions

STREAM = ["stream", "--model", "m.onnx", "--source", "frames", "--out", "out.mp4"]
SERVE = ["serve", "--model", "m.onnx"]


def cli_line(*args: str) -> str:
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    return r.stderr.strip().splitlines()[-1]


def test_stream_refuses_in_the_library_what_the_cli_refuses():
    with pytest.raises(UserError) as e:
        StreamOptions(bg=Path("bg.png"), bg_frames=5)
    assert cli_line(*STREAM, "--bg", "bg.png", "--bg-frames", "5") == f"error: {e.value}"
    with pytest.raises(UserError) as e:
        StreamOptions(layout="sideways")
    assert cli_line(*STREAM, "--layout", "sideways") == f"error: {e.value}"


def test_serve_refuses_in_the_library_what_the_cli_refuses():
    from toolkit.deploy.server import serve_model

    with pytest.raises(UserError) as e:
        serve_model("m.onnx", ServeOptions(bg_cache=False))
    assert cli_line(*SERVE, "--no-bg-cache") == f"error: {e.value}"


def test_run_parity_refuses_what_the_cli_refuses():
    from toolkit.verify.parity import run_parity

    with pytest.raises(UserError) as e:
        run_parity(["m.onnx"], limit=0)
    assert cli_line("parity", "--model", "m.onnx", "--limit", "0") == f"error: {e.value}"


@pytest.mark.parametrize("kwargs, says", [
    ({"batch": 0}, "--batch must be a positive number, got 0"),
    ({"bg_frames": 0}, "--bg-frames must be a positive number, got 0"),
    ({"max_frames": -1}, "--max-frames must be a positive number, got -1"),
    ({"fps": 0.0}, "--fps must be positive, got 0.0"),
    ({"smooth": 1.0}, "--smooth must be in [0, 1)"),
    ({"adapt": "yes"}, "stream: adapt must be a toolkit.deploy.adapt.Adaptation"),
    ({"out_size": (360, 0)}, "--out-size must be two whole numbers in 2..8192"),
    ({"video": False, "preset": "fast"}, "--preset sets the video's encoder, and --no-video writes none"),
])
def test_stream_options_are_checked_when_made(kwargs, says):
    with pytest.raises(UserError) as e:
        StreamOptions(**kwargs)
    assert str(e.value).startswith(says)


@pytest.mark.parametrize("make, says", [
    (lambda: LiveOptions(stride=0), "--stride must be a positive number, got 0"),
    (lambda: LiveOptions(stall_s=0), "--stall-s must be positive, got 0"),
    (lambda: LiveOptions(transport="sctp"), "--rtsp-transport must be tcp or udp, got 'sctp'"),
    (lambda: Adaptation(rate=2.0), "--bg-update must be in [0, 1]"),
    (lambda: ServeOptions(port=70000), "--port must be in 0..65535, got 70000"),
    (lambda: ServeOptions(max_batch=0), "--max-batch must be a positive number, got 0"),
    (lambda: ServeOptions(max_wait_ms=-1), "--max-upload-mb must be positive and --max-wait-ms not negative"),
    (lambda: ServeOptions(log_level="loud"), "--log-level must be one of debug, info, warning, error, got 'loud'"),
])
def test_the_parts_are_checked_when_made(make, says):
    with pytest.raises(UserError) as e:
        make()
    assert str(e.value).startswith(says)


def test_the_options_keep_what_they_were_given():
    o = StreamOptions(bg="bg.png", masks_dir="masks")
    assert o.bg == Path("bg.png") and o.masks_dir == Path("masks") and o.background_frames == 30
    assert StreamOptions(bg_frames=7).background_frames == 7
    s = ServeOptions(max_batch=4, max_wait_ms=2.5, max_upload_mb=1.5, bg="bg.png")
    assert (s.settings.max_batch, s.settings.max_wait_ms, s.settings.max_upload_bytes) == (4, 2.5, 1536 * 1024)


def test_a_live_source_runs_at_batch_1_unless_asked():
    assert StreamOptions().batch_for(live=True) == 1 and StreamOptions().batch_for(live=False) == 4
    assert StreamOptions(batch=3).batch_for(live=True) == 3


def test_out_size_takes_numpy_integers_and_says_its_order():
    import numpy as np

    assert StreamOptions(out_size=(np.int64(24), np.int64(32))).out_size == (24, 32)
    with pytest.raises(UserError, match=r"WIDTHxHEIGHT; out_size=\(height, width\) from Python"):
        StreamOptions(out_size=(24.5, 32))
