"""The dynamic batcher: concurrent jobs share batches; a failing job fails alone."""

import time

import numpy as np
import pytest

from tests.deploy.poison import PoisonRunner
from toolkit.deploy.batcher import Batcher


def _pair(value: float, size=(128, 128)):
    rng = np.random.default_rng(int(value * 100))
    bg = rng.random((*size, 3), dtype=np.float32)
    return bg, np.full((*size, 3), value, np.float32)


@pytest.fixture
def runner(exported_onnx):
    with PoisonRunner(exported_onnx) as r:
        yield r


def queued_behind_a_busy_model(runner, batcher, pairs):
    """Start `batcher` with a first job the model holds, queue `pairs` while it is busy, then
    let it go: the jobs wait together, as concurrent requests behind a slow call do. Returns
    the queued jobs' futures (the first job's batch is `runner.batch_sizes[0]`, of 1)."""
    runner.hold_next_call()
    batcher.start()
    first = batcher.submit(*_pair(0.9))
    assert runner.entered.wait(60), "the first job never reached the model"
    futures = [batcher.submit(*p) for p in pairs]
    runner.release()
    assert first.result(timeout=60)
    return futures


def test_jobs_submitted_together_run_as_one_batch_with_the_single_results(runner):
    batcher = Batcher(runner, max_batch=8, max_wait_s=0.0)  # no waiting for more: only what is queued
    pairs = [_pair(0.1 * (i + 1)) for i in range(6)]
    futures = queued_behind_a_busy_model(runner, batcher, pairs)
    results = [f.result(timeout=60) for f in futures]
    batcher.close()
    assert runner.batch_sizes == [1, 6]
    assert batcher.stats()["batches"] == 2 and batcher.stats()["requests"] == 7 and batcher.stats()["largest_batch"] == 6
    alone = runner.inner.infer({"bg": pairs[3][0].transpose(2, 0, 1)[None], "fgbg": pairs[3][1].transpose(2, 0, 1)[None]})
    assert np.allclose(results[3][0], alone["mask"][0, 0], atol=1e-5) and np.allclose(results[3][1], alone["depth"][0, 0], atol=1e-5)


def test_max_batch_is_respected(runner):
    batcher = Batcher(runner, max_batch=3, max_wait_s=0.0)
    futures = queued_behind_a_busy_model(runner, batcher, [_pair(0.5)] * 7)
    [f.result(timeout=60) for f in futures]
    batcher.close()
    assert runner.batch_sizes == [1, 3, 3, 1]


def test_a_failing_job_fails_alone_and_the_batcher_goes_on(runner):
    batcher = Batcher(runner, max_batch=8, max_wait_s=0.0)
    futures = queued_behind_a_busy_model(runner, batcher, [_pair(v) for v in (0.3, 0.0, 0.6)])  # 0.0: all-black, the poison
    assert futures[0].result(timeout=60) and futures[2].result(timeout=60)
    with pytest.raises(RuntimeError, match="poisoned input"):
        futures[1].result(timeout=60)
    assert batcher.submit(*_pair(0.4)).result(timeout=60)  # still serving
    batcher.close()
    assert runner.batch_sizes == [1, 3, 1, 1, 1, 1]  # the batch of 3 failed, then each job alone, then the last
    assert batcher.stats()["failures"] == 1 and batcher.stats()["requests"] == 4


def test_close_finishes_the_queued_jobs(runner):
    batcher = Batcher(runner, max_batch=2, max_wait_s=0.0)
    batcher.start()
    futures = [batcher.submit(*_pair(0.5)) for _ in range(5)]
    batcher.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert not batcher.running


def test_drain_runs_a_job_waiting_for_batch_mates_now(runner):
    """A job waits in a window far longer than the test; drain() (what SIGTERM does) runs it."""
    batcher = Batcher(runner, max_batch=8, max_wait_s=300.0)
    batcher.start()
    future = batcher.submit(*_pair(0.5))
    deadline = time.monotonic() + 60
    while not (batcher.stats()["pending"] == 1 and batcher.stats()["queued"] == 0):  # the worker holds it, waiting for more
        assert time.monotonic() < deadline, "the worker never took the job"
        time.sleep(0.01)
    assert not future.done()
    batcher.drain()
    assert future.result(timeout=60)
    assert runner.batch_sizes == [1] and batcher.stats()["pending"] == 0
    later = batcher.submit(*_pair(0.6))  # after a drain, jobs run as they come
    assert later.result(timeout=60) and runner.batch_sizes == [1, 1]
    batcher.close()
