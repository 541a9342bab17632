"""`GET /metrics`: Prometheus' text format, with figures that follow what the server did."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.deploy.conftest import running_server
from tests.deploy.test_server import pair_body
from toolkit.deploy.metrics import Histogram

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (-?[0-9.e+]+|\+Inf)$")


def parse(text: str) -> dict[str, float]:
    """Every sample line as {'name{labels}': value}; each metric has HELP and TYPE lines before it."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line and not line.startswith("# HELP "):
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            base = re.sub(r"_(bucket|sum|count|total)$", "", m.group(1))
            assert m.group(1) in typed or base in typed or base + "_total" in typed, line
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_a_histogram_is_cumulative_with_inf_equal_to_its_count():
    h = Histogram((1, 2, 4))
    for v in (0.5, 1, 3, 3, 9):
        h.observe(v)
    lines = h.lines("x")
    assert lines == ['x_bucket{le="1"} 2', 'x_bucket{le="2"} 2', 'x_bucket{le="4"} 4', 'x_bucket{le="+Inf"} 5', "x_sum 16.5", "x_count 5"]


def test_metrics_count_requests_latency_and_batches(exported_onnx):
    pytest.importorskip("starlette")
    with running_server(exported_onnx, "--max-batch", "4", "--max-wait-ms", "300000") as s:
        with ThreadPoolExecutor(4) as pool:  # four at once: one batch, run when the fourth is in (never by the window)
            codes = list(pool.map(lambda _: s.request("/v1/infer", *pair_body())[0], range(4)))
        assert codes == [200] * 4
        assert s.request("/v1/infer", b"not multipart", {"Content-Type": "text/plain"})[0] == 415
        status, headers, body = s.request("/metrics")
        s.stop()
    content_type = {k.lower(): v for k, v in headers.items()}["content-type"]
    assert status == 200 and content_type == "text/plain; version=0.0.4; charset=utf-8"
    m = parse(body.decode())
    assert m['toolkit_requests_total{code="200"}'] == 4 and m['toolkit_requests_total{code="415"}'] == 1
    assert m["toolkit_request_seconds_count"] == 5 and m['toolkit_request_seconds_bucket{le="+Inf"}'] == 5
    buckets = [v for k, v in m.items() if k.startswith("toolkit_request_seconds_bucket")]
    assert buckets == sorted(buckets)  # cumulative
    assert m["toolkit_batch_size_sum"] == 4 and m["toolkit_batch_size_count"] == 1  # the four shared one call
    assert m["toolkit_inference_failures_total"] == 0 and m["toolkit_queue_depth"] == 0
    assert m["toolkit_self_test_passed"] == 1
    assert m['toolkit_model_info{model="model.onnx",backend="onnxruntime",precision="fp32"}'] == 1
