"""The dynamic batcher: concurrent jobs share batches; a failing job fails alone."""

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


def test_jobs_submitted_together_run_as_one_batch_with_the_single_results(runner):
    batcher = Batcher(runner, max_batch=8, max_wait_s=0.5)
    batcher.start()
    pairs = [_pair(0.1 * (i + 1)) for i in range(6)]
    futures = [batcher.submit(*p) for p in pairs]
    results = [f.result(timeout=60) for f in futures]
    batcher.close()
    assert runner.batch_sizes == [6]
    assert batcher.stats()["mean_batch"] == 6 and batcher.stats()["requests"] == 6
    alone = runner.inner.infer({"bg": pairs[3][0].transpose(2, 0, 1)[None], "fgbg": pairs[3][1].transpose(2, 0, 1)[None]})
    assert np.allclose(results[3][0], alone["mask"][0, 0], atol=1e-5) and np.allclose(results[3][1], alone["depth"][0, 0], atol=1e-5)


def test_max_batch_is_respected(runner):
    batcher = Batcher(runner, max_batch=3, max_wait_s=0.5)
    batcher.start()
    futures = [batcher.submit(*_pair(0.5)) for _ in range(7)]
    [f.result(timeout=60) for f in futures]
    batcher.close()
    assert sorted(runner.batch_sizes, reverse=True) == [3, 3, 1]


def test_a_failing_job_fails_alone_and_the_batcher_goes_on(runner):
    batcher = Batcher(runner, max_batch=8, max_wait_s=0.5)
    batcher.start()
    futures = [batcher.submit(*_pair(v)) for v in (0.3, 0.0, 0.6)]  # 0.0: an all-black fgbg, the poison
    assert futures[0].result(timeout=60) and futures[2].result(timeout=60)
    with pytest.raises(RuntimeError, match="poisoned input"):
        futures[1].result(timeout=60)
    assert batcher.submit(*_pair(0.4)).result(timeout=60)  # still serving
    batcher.close()
    assert runner.batch_sizes[:4] == [3, 1, 1, 1]  # the batch failed, then each job alone
    assert batcher.stats()["failures"] == 1 and batcher.stats()["requests"] == 3


def test_close_finishes_the_queued_jobs(runner):
    batcher = Batcher(runner, max_batch=2, max_wait_s=0.0)
    batcher.start()
    futures = [batcher.submit(*_pair(0.5)) for _ in range(5)]
    batcher.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert not batcher.running
