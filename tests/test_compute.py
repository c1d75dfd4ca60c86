"""The app's compute thread: every tensor call on one thread, streams stepped without waiting for readers."""
import contextvars
import threading
import time

import pytest

from draggan.compute import AHEAD, ComputeThread

VAR = contextvars.ContextVar("VAR", default="unset")


def test_calls_run_on_one_thread_in_the_callers_context_and_raise_there():
    compute = ComputeThread()
    seen = set()

    def where():
        seen.add(threading.get_ident())
        return VAR.get()

    def caller(i, out):
        VAR.set(f"request {i}")
        out[i] = compute.call(where)

    out = {}
    threads = [threading.Thread(target=caller, args=(i, out)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {i: f"request {i}" for i in range(4)}
    assert seen == {compute.thread.ident} and compute.thread.ident != threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        compute.call(lambda: 1 / 0)
    assert compute.call(lambda: compute.call(lambda: 7)) == 7  # a call from the compute thread runs inline


def test_a_stream_runs_a_few_items_ahead_of_a_slow_reader_on_the_compute_thread():
    compute = ComputeThread()
    produced = []

    def items():
        for i in range(20):
            produced.append((i, threading.get_ident()))
            yield i

    read = []
    for i in compute.iterate(items()):
        read.append(i)
        if i == 0:
            time.sleep(0.3)  # a slow reader: the producer does not wait for it, up to AHEAD items
            assert len(produced) == 1 + AHEAD
    assert read == list(range(20)) and {t for _, t in produced} == {compute.thread.ident}


def test_calls_run_between_two_items_of_a_long_stream():
    compute = ComputeThread()
    produced = []

    def drag():
        for i in range(100):
            time.sleep(0.01)
            produced.append(i)
            yield i

    it = compute.iterate(drag())
    next(it)
    at = compute.call(lambda: len(produced))  # another session's Generate, while the drag runs
    assert at < 50
    assert list(it)[-1] == 99


def test_closing_a_stream_closes_its_generator_on_the_compute_thread_and_errors_reach_the_reader():
    compute = ComputeThread()
    closed = []
    gate = threading.Event()

    def drag():
        try:
            for i in range(1000):
                gate.wait()
                yield i
        finally:
            closed.append(threading.get_ident())

    it = compute.iterate(drag())
    gate.set()
    assert next(it) == 0
    it.close()
    deadline = time.monotonic() + 10
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == [compute.thread.ident]
    assert compute.call(lambda: "still serving") == "still serving"

    def broken():
        yield 1
        raise ValueError("bad step")

    it = compute.iterate(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad step"):
        next(it)


def test_a_burst_of_calls_and_a_stream_take_turns():
    """Eight queued renders do not run all before the next drag step: calls and stream items alternate."""
    compute = ComputeThread()
    order, gate = [], threading.Event()
    compute.submit(gate.wait)                     # hold the thread until everything is queued

    def drag():
        for i in range(AHEAD):
            order.append("step")
            yield i

    it = compute.iterate(drag())
    futures = [compute.submit(order.append, "call") for _ in range(8)]
    gate.set()
    for f in futures:
        f.result(timeout=30)
    assert list(it) == list(range(AHEAD))
    assert order[:2 * AHEAD] == ["step", "call"] * AHEAD   # the stream had its turn after every call
    assert order.count("call") == 8
