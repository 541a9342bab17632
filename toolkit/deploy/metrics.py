"""`GET /metrics` in Prometheus' text exposition format (version 0.0.4), without a client library.

What a site's monitoring scrapes from `toolkit serve`: requests answered by status, their latency
and the batch sizes they ran in as histograms, inference failures, the queue depth, whether the
model passed its self-test at start, and which model is loaded. Counters only grow; histograms
are cumulative with a `+Inf` bucket equal to their count, as the format asks.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Mapping, Sequence

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """A thread-safe cumulative histogram: counts per upper bound, a sum and a count."""

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf only)
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.bounds, value)] += 1
            self.total += value

    def lines(self, name: str) -> list[str]:
        with self._lock:
            counts, total = list(self.counts), self.total
        out, running = [], 0
        for bound, n in zip([*self.bounds, math.inf], counts):
            running += n
            le = "+Inf" if bound == math.inf else _number(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        return [*out, f"{name}_sum {_number(total)}", f"{name}_count {running}"]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label(value: str) -> str:
    """A label value escaped as the format asks (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServeMetrics:
    """What `toolkit serve` counts; `render()` is the `/metrics` body."""

    def __init__(self, model: Mapping[str, str]):
        self.model = dict(model)  # model, backend, precision: the info metric's labels
        self.requests: dict[int, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.batches = Histogram(BATCH_BUCKETS)
        self.self_test: bool | None = None  # None: the model holds no golden pairs
        self.refused = 0  # requests without the key (toolkit.deploy.auth)
        self._lock = threading.Lock()

    def count_refused(self) -> None:
        with self._lock:
            self.refused += 1

    def request(self, status: int, seconds: float) -> None:
        """One `/v1/infer` answer."""
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1
        self.latency.observe(seconds)

    def render(self, failures: int, queued: int, extra: Callable[[], list[str]] | None = None) -> str:
        with self._lock:
            requests = dict(sorted(self.requests.items()))
        labels = ",".join(f'{k}="{_label(v)}"' for k, v in self.model.items())
        lines = [
            "# HELP toolkit_model_info The model this server runs.", "# TYPE toolkit_model_info gauge",
            f"toolkit_model_info{{{labels}}} 1",
            "# HELP toolkit_requests_total Inference requests answered, by HTTP status.",
            "# TYPE toolkit_requests_total counter",
            *(f'toolkit_requests_total{{code="{code}"}} {n}' for code, n in requests.items()),
            "# HELP toolkit_request_seconds Time from an inference request to its answer.",
            "# TYPE toolkit_request_seconds histogram", *self.latency.lines("toolkit_request_seconds"),
            "# HELP toolkit_batch_size Pairs per inference call of the dynamic batcher.",
            "# TYPE toolkit_batch_size histogram", *self.batches.lines("toolkit_batch_size"),
            "# HELP toolkit_inference_failures_total Inference calls that raised (each answered 500).",
            "# TYPE toolkit_inference_failures_total counter", f"toolkit_inference_failures_total {failures}",
            "# HELP toolkit_auth_refused_total Requests turned away without the key (answered 401).",
            "# TYPE toolkit_auth_refused_total counter", f"toolkit_auth_refused_total {self.refused}",
            "# HELP toolkit_queue_depth Requests waiting for the batcher.", "# TYPE toolkit_queue_depth gauge",
            f"toolkit_queue_depth {queued}",
            "# HELP toolkit_self_test_passed 1 when the model passed its self-test at start (absent without golden pairs).",
            "# TYPE toolkit_self_test_passed gauge",
            *([f"toolkit_self_test_passed {int(self.self_test)}"] if self.self_test is not None else []),
            *(extra() if extra else []),
        ]
        return "\n".join(lines) + "\n"
