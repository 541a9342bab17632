"""`toolkit serve` as a real process on 127.0.0.1: endpoints, bad input, load, SIGTERM."""

import base64
import hashlib
import http.client
import io
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.deploy.conftest import cli_process, in_process_server, running_server
from toolkit.core.install import install_hint
from toolkit.deploy.client import encode_multipart
from toolkit.deploy.footage import background, walking_frames

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

UPLOAD_MB = 0.5


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


BG, FGBG = png(background(48, 64)), png(walking_frames(5, 48, 64)[2])


def pair_body(bg: bytes = BG, fgbg: bytes = FGBG):
    return encode_multipart({"bg": ("bg.png", bg, "image/png"), "fgbg": ("fgbg.png", fgbg, "image/png")})


@pytest.fixture(scope="module")
def server(exported_onnx):
    with running_server(exported_onnx, "--max-upload-mb", str(UPLOAD_MB), "--max-batch", "8") as s:
        yield s


def test_health_ready_and_model_metadata(server, exported_onnx, imported_ckpt):
    assert server.json("/healthz") == {"status": "ok"}
    assert server.json("/readyz") == {"status": "ready"}
    info = server.json("/v1/model")
    assert info["model"] == exported_onnx.name and info["backend"] == "onnxruntime" and info["precision"] == "fp32"
    assert info["input_size"] == [128, 128] and info["iospec"]["mask"]["kind"] == "affine_clip"
    assert info["source_checkpoint_sha256"] == hashlib.sha256(imported_ckpt.read_bytes()).hexdigest()
    assert info["max_batch"] == 8 and "batching" in info


def test_infer_answers_what_toolkit_infer_writes(server, exported_onnx, tmp_path):
    status, headers, body = server.request("/v1/infer", *pair_body())
    assert status == 200 and headers["content-type"] == "application/json", body
    doc = json.loads(body)
    assert (doc["width"], doc["height"], doc["warnings"]) == (64, 48, [])
    assert "X-Toolkit-Warning" not in headers and "x-toolkit-warning" not in headers
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(doc["mask_png"]))))
    depth = np.asarray(Image.open(io.BytesIO(base64.b64decode(doc["depth_png"]))))
    assert mask.shape == depth.shape == (48, 64)
    (tmp_path / "bg.png").write_bytes(BG)
    (tmp_path / "fgbg.png").write_bytes(FGBG)
    r = run_cli("infer", str(tmp_path / "bg.png"), str(tmp_path / "fgbg.png"), "--model", str(exported_onnx), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    reference = np.asarray(Image.open(tmp_path / "o" / "mask.png"))
    assert np.abs(mask.astype(int) - reference).max() <= 1  # same pixels as the CLI (batching may move a rounding)
    assert depth.std() > 0  # a real depth map, not a constant


def test_json_base64_body_gives_the_same_answer(server):
    _, _, multipart_body = server.request("/v1/infer", *pair_body())
    doc = {"bg": base64.b64encode(BG).decode(), "fgbg": "data:image/png;base64," + base64.b64encode(FGBG).decode()}
    status, _, body = server.request("/v1/infer", json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert status == 200, body
    assert json.loads(body)["mask_png"] == json.loads(multipart_body)["mask_png"]


def test_panel_format_is_one_png(server):
    status, headers, body = server.request("/v1/infer?format=panel", *pair_body())
    assert status == 200 and headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(body)) as im:
        assert im.width > 4 * 64 and im.height > 48  # bg | fgbg | mask | depth under their labels


def test_mismatched_sizes_are_resized_with_a_warning_header(server):
    status, headers, body = server.request("/v1/infer", *pair_body(bg=png(background(96, 128))))
    assert status == 200, body
    warning = {k.lower(): v for k, v in headers.items()}["x-toolkit-warning"]
    assert warning == "bg is 128x96 and fgbg 64x48: bg resized to the fgbg's size"
    assert json.loads(body)["warnings"] == [warning]


@pytest.mark.parametrize(
    "case,status,expect",
    [
        ("not-an-image", 400, "bg: not a readable image"),
        ("truncated-png", 400, "fgbg: not a readable image"),
        ("missing-field", 400, "missing the form field 'fgbg'"),
        ("bad-format", 400, "format must be 'json' or 'panel'"),
        ("bad-json", 400, "not valid JSON"),
        ("bad-base64", 400, "'bg' is not valid base64"),
        ("text-plain", 415, "send multipart/form-data"),
        ("too-large", 413, "over the server's 524288 byte limit"),
        ("too-many-pixels", 413, "fgbg: 5000x4000 pixels is over the server's 16000000 pixel limit"),
    ],
)
def test_bad_requests_get_a_json_error_and_the_server_goes_on(server, case, status, expect):
    path, (body, headers) = "/v1/infer", pair_body()
    if case == "not-an-image":
        body, headers = pair_body(bg=b"#!/bin/sh\necho hello\n")
    elif case == "truncated-png":
        body, headers = pair_body(fgbg=FGBG[: len(FGBG) // 2])
    elif case == "missing-field":
        body, headers = encode_multipart({"bg": ("bg.png", BG, "image/png")})
    elif case == "bad-format":
        path += "?format=gif"
    elif case == "bad-json":
        body, headers = b"{not json", {"Content-Type": "application/json"}
    elif case == "bad-base64":
        body, headers = json.dumps({"bg": "%%%", "fgbg": "AAAA"}).encode(), {"Content-Type": "application/json"}
    elif case == "text-plain":
        body, headers = b"hello", {"Content-Type": "text/plain"}
    elif case == "too-large":
        body, headers = pair_body(bg=np.random.default_rng(0).bytes(int(UPLOAD_MB * 1024 * 1024) + 10))
    elif case == "too-many-pixels":  # a small file that would decode to 240 MB of floats
        body, headers = pair_body(fgbg=png(np.zeros((4000, 5000, 3), np.uint8)))
    got, resp_headers, answer = server.request(path, body, headers)
    assert got == status and resp_headers["content-type"] == "application/json", answer
    assert expect in json.loads(answer)["error"]
    assert server.json("/healthz") == {"status": "ok"}


def test_chunked_upload_over_the_limit_is_413(server):
    body, headers = pair_body(bg=np.random.default_rng(1).bytes(int(UPLOAD_MB * 1024 * 1024) + 10))
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))  # no Content-Length: the limit is counted while reading
    conn.request("POST", "/v1/infer", body=chunks, headers=headers, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and "byte limit" in json.loads(response.read())["error"]
    conn.close()


# A batch window far longer than any test: a batch runs when it is full (or the server drains
# it on SIGTERM), never because time ran out; what the tests see does not depend on the load.
NEVER_MS = "300000"


def test_load_40_requests_from_4_clients_in_batches_of_4(exported_onnx):
    """4 clients, 10 requests each, one at a time: with --max-batch 4 every batch holds one
    request of each client (each waits for its answer before it sends the next)."""
    with running_server(exported_onnx, "--max-batch", "4", "--max-wait-ms", NEVER_MS) as server:
        def client(_):
            return [server.request("/v1/infer", *pair_body())[0] for _ in range(10)]

        with ThreadPoolExecutor(4) as pool:
            statuses = [s for batch in pool.map(client, range(4)) for s in batch]
        figures = server.json("/v1/model")["batching"]
    assert statuses == [200] * 40
    assert (figures["requests"], figures["batches"], figures["largest_batch"], figures["failures"]) == (40, 10, 4, 0)


def wait_for(condition, what: str, limit_s: float = 60.0) -> None:
    """Poll `condition()` until it holds (a bounded loop: AssertionError naming `what` after `limit_s`)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {limit_s:.0f} s"
        time.sleep(0.05)


def test_sigterm_answers_the_request_waiting_in_its_batch_window(exported_onnx):
    """The request waits for batch-mates that never come (a 5-minute window); SIGTERM makes the
    server run it at once and answer it before it stops (uvicorn's graceful limit is 30 s, so
    without the drain the request would be cut off, not answered)."""
    with running_server(exported_onnx, "--max-wait-ms", NEVER_MS) as server:
        answer = {}
        t = threading.Thread(target=lambda: answer.update(r=server.request("/v1/infer", *pair_body())))
        t.start()
        wait_for(lambda: server.json("/v1/model")["batching"]["pending"] == 1, "the request reaching the batcher")
        code, stdout, _ = server.stop()  # SIGTERM while the request waits for its batch
        t.join(timeout=60)
    assert answer["r"][0] == 200 and "mask_png" in json.loads(answer["r"][2])
    assert code == 0 and "stopped (SIGTERM): 1 request(s) in 1 batch(es)" in stdout


def test_port_in_use_is_one_line_and_exit_2(exported_onnx):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("serve", "--model", str(exported_onnx), "--port", str(port), block_torch=True)
    lines = r.stderr.strip().splitlines()  # the model's self-test line, then the one error line
    assert r.returncode == 2 and lines[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}"), r.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]


def test_missing_serve_extra_names_it(exported_onnx):
    proc = cli_process("serve", "--model", str(exported_onnx), block=("starlette",))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert stderr.strip() == f"error: Starlette, uvicorn and python-multipart (the HTTP server) are not installed: {install_hint('serve')}"


def test_a_crash_inside_inference_is_a_500_for_that_request_only(exported_onnx):

    from tests.deploy.poison import PoisonRunner
    from toolkit.deploy.server import ServeSettings, create_app

    runner = PoisonRunner(exported_onnx).activate()
    app = create_app(runner, ServeSettings(max_batch=4, max_wait_ms=float(NEVER_MS)))  # a batch runs when 4 are in
    try:
        with in_process_server(app) as client:
            _poisoned_requests(client, runner)
    finally:
        runner.deactivate()


def _poisoned_requests(client, runner) -> None:
    black = png(np.zeros((48, 64, 3), np.uint8))
    bodies = [pair_body(), pair_body(fgbg=black), pair_body(), pair_body()]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda b: client.request("/v1/infer", *b), bodies))
    assert [a[0] for a in answers] == [200, 500, 200, 200]
    assert json.loads(answers[1][2]) == {"error": "inference failed: poisoned input"}
    assert runner.batch_sizes == [4, 1, 1, 1, 1]  # the poison shared a batch with good requests, which still succeeded
    with ThreadPoolExecutor(4) as pool:  # and the server still serves
        assert [a[0] for a in pool.map(lambda b: client.request("/v1/infer", *b), [pair_body()] * 4)] == [200] * 4


def test_one_log_line_per_request_and_log_level_silences_them(exported_onnx):
    with running_server(exported_onnx) as s:
        assert s.request("/healthz")[0] == 200
        assert s.request("/v1/infer", *pair_body())[0] == 200
        assert s.request("/nope")[0] == 404
        code, _, err = s.stop()
    lines = [line for line in err.splitlines() if " ms" in line]
    assert code == 0 and len(lines) == 3, err
    assert re.search(r" GET /healthz 200 \d+\.\d ms$", lines[0]) and re.search(r" POST /v1/infer 200 \d+\.\d ms batch 1$", lines[1])
    assert " GET /nope 404 " in lines[2]
    with running_server(exported_onnx, "--log-level", "warning") as s:
        assert s.request("/healthz")[0] == 200
        _, _, err = s.stop()
    assert " ms" not in err
