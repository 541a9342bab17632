"""The decode -> infer -> encode threads: order, batching, stopping, and errors."""

import os
import sys
import threading
import time

import pytest

from toolkit.deploy.pipeline import HELPER_NICE, run_pipeline


def _double(group):
    return [x * 2 for x in group]


@pytest.mark.parametrize("pipelined", [True, False])
def test_every_item_comes_out_once_in_order(pipelined):
    out = []
    n = run_pipeline(range(50), _double, lambda item, r: out.append((item, r)), batch=4, queue_size=3, pipelined=pipelined)
    assert n == 50 and out == [(i, 2 * i) for i in range(50)]


def test_batches_fill_up_when_frames_wait_and_never_exceed_batch():
    """Inference is held until the decoder has queued the frames behind it (as when the model
    is slower than decoding): every batch after the first is then full, whatever the load."""
    produced, sizes = [0], []
    more = threading.Condition()

    def items():
        for i in range(40):
            with more:
                produced[0] = i + 1
                more.notify_all()
            yield i

    def held_infer(group):
        sizes.append(len(group))
        with more:  # wait (bounded) until 5 more frames were decoded: 4 are in the queue for the next batch
            assert more.wait_for(lambda: produced[0] >= min(40, sum(sizes) + 5), timeout=60), "the decoder stalled"
        return _double(group)

    run_pipeline(items(), held_infer, lambda item, r: None, batch=4, queue_size=10)
    assert max(sizes) == 4 and sum(sizes) == 40
    assert sizes[1:-2] == [4] * (len(sizes) - 3)  # after the first, every batch is full but the last two at most


def test_stop_ends_decoding_and_drains_what_is_in_flight():
    stop = threading.Event()
    seen = []

    def items():
        for i in range(10_000):
            if i == 5:
                stop.set()  # as the SIGINT handler would, while frame 5 is being decoded
            yield i

    n = run_pipeline(items(), _double, lambda item, r: seen.append(item), batch=2, queue_size=4, stop=stop)
    assert n == len(seen) and seen == list(range(n))
    assert 5 <= n <= 12  # frame 5 and what was queued, not the rest of the stream


@pytest.mark.parametrize("stage", ["decode", "infer", "emit"])
def test_an_error_in_any_stage_is_raised_and_nothing_hangs(stage):
    def items():
        for i in range(1000):
            if stage == "decode" and i == 7:
                raise ValueError("bad frame 7")
            yield i

    def infer(group):
        if stage == "infer" and 7 in group:
            raise ValueError("bad frame 7")
        return _double(group)

    def emit(item, r):
        if stage == "emit" and item == 7:
            raise ValueError("bad frame 7")

    raised: list[BaseException] = []

    def run() -> None:
        try:
            run_pipeline(items(), infer, emit, batch=3, queue_size=2)
        except ValueError as e:
            raised.append(e)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(60)  # a hang detector, far beyond any load: the error ends the run at once
    assert not runner.is_alive(), "run_pipeline hung after an error in a stage"
    assert [str(e) for e in raised] == ["bad frame 7"]
    deadline = time.monotonic() + 5  # each stage has signalled it is done; let the threads themselves end
    while [t for t in threading.enumerate() if t.name.startswith("toolkit-")] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name.startswith("toolkit-")]


def test_batch_must_be_positive():
    with pytest.raises(ValueError):
        run_pipeline([1], _double, lambda i, r: None, batch=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have their own niceness on Linux only")
def test_the_decode_and_encode_threads_yield_the_cores_to_the_model():
    """The helpers run at a lower priority than the model's thread (so they never stall its
    parallel steps), and the calling thread's own priority is left as it was."""
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    caller, seen = niceness(), {}
    if caller >= 19:
        pytest.skip("the tests run at the lowest priority already: nothing to lower")

    def items():
        for i in range(3):
            seen["decode"] = niceness()
            yield i

    def infer(group):
        seen["infer"] = niceness()
        return _double(group)

    run_pipeline(items(), infer, lambda item, r: seen.__setitem__("encode", niceness()), batch=2)
    assert seen["infer"] == caller and niceness() == caller
    assert seen["decode"] == seen["encode"] == min(19, caller + HELPER_NICE) > caller
