"""A script's run of one function on the ``process`` engine is driven by the calling thread
itself (:mod:`dandelion.runtime.here`), with the same outputs, output capture, errors, time
limits, bound on invocations at once and cache as through a worker thread."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest

import dandelion as dd
from dandelion.cache import MemoryStore
from tests.cache.test_run_memo import Recording
from tests.runtime import handofffuncs as h
from tests.runtime import herefuncs as hf
from tests.runtime.threads import Threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the process engine is Linux-only")


def _expected(m: np.ndarray) -> np.ndarray:
    return (m * hf.SCALE) @ m.T + 1


@pytest.fixture
def matrix() -> np.ndarray:
    return np.random.default_rng(5).integers(-9, 10, size=(32, 32), dtype=np.int64)


def test_a_script_run_is_driven_from_the_calling_thread_with_its_output(
        matrix: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    threads = Threads()
    with caplog.at_level(logging.INFO, logger="dandelion.function"), \
            dd.Runtime(engine="process", workers=2, cache=False, observers=[threads]) as rt:
        for _ in range(3):  # a sandbox forked first, then one given the code ahead
            got = rt.run(hf.gram, matrix)
            assert (got == _expected(matrix)).all()
            got[0, 0] += 1  # the caller's own array
    assert threads.names == {threading.current_thread().name}  # no worker thread's
    assert [r.getMessage() for r in caplog.records] == \
        [f"[gram, instance 0] gram of 32x32, mean {np.mean(matrix):.1f}"] * 3


def test_a_raising_function_fails_its_own_run_naming_the_users_line() -> None:
    with dd.Runtime(engine="process", workers=2, cache=False) as rt:
        with pytest.raises(dd.FunctionError, match="negative: -1") as info:
            rt.run(hf.checked, -1)
        assert "checked" in str(info.value)
        assert isinstance(info.value.__cause__, ValueError)
        assert "herefuncs.py" in (info.value.traceback or "")
        assert rt.run(hf.checked, 4) == 8  # the engine it was lent is free again


def test_a_crash_and_an_exit_fail_their_own_runs_and_the_next_one_runs() -> None:
    with dd.Runtime(engine="process", workers=1, cache=False) as rt:
        with pytest.raises(dd.SandboxViolation, match="crashed with SIGSEGV"):
            rt.run(h.crash, 1)
        with pytest.raises(dd.SandboxViolation, match=r"exited \(status 3\)"):
            rt.run(h.exit_, 1)
        assert rt.run(h.tag, 1) == 1001


def test_a_function_past_its_time_limit_is_stopped_where_the_caller_waits() -> None:
    with dd.Runtime(engine="process", workers=1, cache=False,
                    timeouts={"sleepy": 0.3}) as rt:
        rt.run(hf.sleepy, 0.0)
        t0 = time.monotonic()
        with pytest.raises(dd.FunctionTimeout, match="ran past its timeout of 0.3 s"):
            rt.run(hf.sleepy, 30.0)
        assert time.monotonic() - t0 < 10
        assert rt.run(hf.sleepy, 0.01) == 0.01


def test_code_too_large_to_begin_runs_on_the_calling_thread_all_the_same() -> None:
    threads = Threads()
    with dd.Runtime(engine="process", workers=1, cache=False, observers=[threads]) as rt:
        assert rt.run(h.size, 1) == 1 + len(h.BIG)
    assert threads.names == {threading.current_thread().name}


def test_more_threads_than_engines_keep_the_pool_bound_and_their_own_results() -> None:
    threads = Threads()
    results: dict[int, Any] = {}
    with dd.Runtime(engine="process", workers=2, cache=False, observers=[threads]) as rt:
        rt.run(hf.checked, 0)

        def run(x: int) -> None:
            results[x] = rt.run(hf.checked, x)

        workers = [threading.Thread(target=run, args=(x,)) for x in range(12)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    assert results == {x: 2 * x for x in range(12)}
    assert threads.most <= 2  # never more invocations at once than engines


class Interrupted(Exception):
    pass


@pytest.fixture
def alarm() -> Iterator[None]:
    def interrupt(_signum: int, _frame: Any) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.usefixtures("alarm")
def test_an_interrupted_run_ends_its_sandbox_and_lands_its_flight() -> None:
    # what a KeyboardInterrupt does to a script waiting for its function: the run ends
    # at once, nothing is kept, the engine is free, and the same run later computes (it
    # does not wait for a flight that nobody leads any more)
    store = Recording(MemoryStore())
    with dd.Runtime(engine="process", workers=1, cache=store) as rt:
        rt.run(hf.sleepy, 0.0)
        store.clear_log()
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            rt.run(hf.sleepy, 3.0)
        assert time.monotonic() - t0 < 2.5  # not waited for to its end
        assert store.writes == []  # nothing kept
        done: list[float] = []
        again = threading.Thread(target=lambda: done.append(rt.run(hf.sleepy, 3.0)))
        again.start()
        again.join(timeout=60)
        assert done == [3.0] and len(store.writes) == 1  # computed again, and kept
        store.clear_log()
        assert rt.run(hf.sleepy, 3.0) == 3.0 and store.writes == []  # kept: a hit


def test_the_worker_path_gives_the_same_answers(matrix: np.ndarray) -> None:
    # the A/B of benchmarks/bench_here.py: a pool that cannot begin sends runs to a worker
    threads = Threads()
    with dd.Runtime(engine="process", workers=1, cache=False, observers=[threads]) as rt:
        rt.backend.pool.begins = False  # type: ignore[attr-defined]
        assert (rt.run(hf.gram, matrix) == _expected(matrix)).all()
        with pytest.raises(dd.FunctionError, match="negative: -2"):
            rt.run(hf.checked, -2)
    assert threads.names == {"dandelion-worker-0"}
