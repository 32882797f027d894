"""Dispatcher behaviour beyond the semantics: progress, timeouts, cancellation, no loss."""

from __future__ import annotations

import sys
import threading
import time

import pytest

import dandelion as dd
from dandelion.program import as_program
from tests.conformance import funcs as f

calls: list[int] = []


@dd.compute
def record(x: int) -> int:
    calls.append(x)
    if x == 0:
        raise RuntimeError("zero")
    time.sleep(0.01)
    return x


@dd.composition
def recorded(xs: list[int]) -> list[int]:
    return record(dd.each(xs))


def test_progress_reports_every_application_and_instance():
    seen = []
    with dd.Runtime(engine="inline", workers=2, progress=seen.append) as rt:
        rt.run(f.fan_in, [1, 2, 3])
    last = seen[-1]
    assert (last.applications_done, last.applications) == (2, 2)
    assert (last.instances_done, last.instances) == (4, 4)


def test_first_failure_cancels_the_remaining_instances():
    calls.clear()
    with dd.Runtime(engine="inline", workers=1) as rt:
        with pytest.raises(dd.FunctionError, match="zero"):
            rt.run(recorded, [0] + list(range(1, 200)))
    time.sleep(0.1)
    assert len(calls) < 50  # the rest of the batch was skipped


def test_a_stuck_inline_function_is_abandoned_and_the_pool_keeps_its_size():
    with dd.Runtime(engine="inline", workers=1, timeouts={"sleepy": 0.1}) as rt:
        t0 = time.monotonic()
        with pytest.raises(dd.FunctionTimeout) as info:
            rt.run(f.slow, 3.0)
        assert time.monotonic() - t0 < 2.0
        assert info.value.function == "sleepy"
        assert len(rt.backend.pool.workers) == 1
        assert rt.run(f.doubles, [4]) == [8]


def test_runs_from_many_threads_share_one_pool():
    results = {}
    with dd.Runtime(engine="inline", workers=2) as rt:
        def go(i):
            results[i] = rt.run(f.fan_in, list(range(i + 1)))
        threads = [threading.Thread(target=go, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {i: 2 * sum(range(i + 1)) for i in range(10)}


def test_a_wide_fan_out_is_batched_and_complete():
    with dd.Runtime(engine="inline", workers=2) as rt:
        xs = list(range(5000))
        assert rt.run(f.doubles, xs) == [2 * x for x in xs]


def test_an_io_function_that_leaves_its_one_item_result_empty_is_named(monkeypatch):
    from dandelion.io import functions

    monkeypatch.setattr(functions, "_HANDLERS", dict(functions._HANDLERS))
    monkeypatch.setattr(functions, "_PLATFORM", dict(functions._PLATFORM))

    @functions.platform_function("first_or_nothing", [("xs", "set[bytes]")],
                                 [("first", "item[bytes]")])
    async def first_or_nothing(engine, inputs):  # noqa: ANN001, ANN202 - a platform handler
        return [inputs[0][:1]]  # nothing when the set is empty

    fetch = functions.platform_functions()["first_or_nothing"]

    @dd.composition
    def first(xs: list[dd.Item[bytes]]) -> bytes:
        return fetch(dd.optional(xs))

    with dd.Runtime(engine="inline", workers=1) as rt:
        assert rt.run(first, [b"a", b"b"]) == b"a"
        with pytest.raises(dd.FunctionError, match="io function 'first_or_nothing', its "
                           "instance: returned no item for result 'first', which is one item"):
            rt.run(first, [])


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_started_run_resolves_its_future_like_run_returns(engine):
    """Runtime.start_plan: no thread waits for the run; its future holds what run_plan
    returns, or raises the same named error."""
    if engine == "process" and not sys.platform.startswith("linux"):
        pytest.skip("the process engine is Linux-only")
    program = as_program(f.fan_in)
    with dd.Runtime(engine=engine, workers=2) as rt:
        plan = rt.plan(program)
        sets = program.bind(([1, 2, 3],), {})
        future = rt.start_plan(plan, sets, program.artifacts)
        assert future is not None
        assert program.unbind(future.result(timeout=60)) == \
            program.unbind(rt.run_plan(plan, sets, program.artifacts))
        failing = as_program(f.failing)
        started = rt.start_plan(rt.plan(failing), failing.bind(([1, 3],), {}),
                                failing.artifacts)
        assert started is not None
        with pytest.raises(dd.FunctionError, match="fail_on_three") as info:
            started.result(timeout=60)
        assert info.value.instance == 1


def test_a_run_whose_timeouts_need_a_watching_thread_is_not_started():
    """The inline engine cannot stop a function: a run with time limits needs a thread
    that watches the clock, so start_plan declines (the caller uses run_plan)."""
    program = as_program(f.fan_in)
    with dd.Runtime(engine="inline", workers=1, timeout=5.0) as rt:
        assert rt.start_plan(rt.plan(program), program.bind(([1],), {}),
                             program.artifacts) is None


def test_cancelling_a_started_run_skips_its_instances_not_yet_run():
    calls.clear()
    program = as_program(recorded)
    with dd.Runtime(engine="inline", workers=1) as rt:
        future = rt.start_plan(rt.plan(program), program.bind((list(range(1, 200)),), {}),
                               program.artifacts)
        assert future is not None
        time.sleep(0.05)
        assert future.cancel()
        time.sleep(0.3)
        assert len(calls) < 100  # 199 instances of 10 ms each, one worker
        assert rt.run(f.doubles, [4]) == [8]  # the pool goes on
