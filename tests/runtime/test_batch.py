"""Batches: several instances of one application in one sandbox invocation, each with its
own outcome; vectorised implementations."""

from __future__ import annotations

import numpy as np
import pytest

import dandelion as dd
from dandelion.backends.engines.process import ProcessEngine
from dandelion.errors import FunctionError, FunctionTimeout, FunctionTypeError
from dandelion.items import Item
from dandelion.runtime.batch import Failed
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.events import EventKind
from tests.runtime import batchfuncs as b

ENGINES = ["inline", "process"]


def call_of(fn: dd.compute) -> FunctionCall:
    return FunctionCall(fn.spec, fn.spec.implementations[0], fn.artifact)


def test_a_batch_reports_each_instance_apart_and_one_failure_fails_alone():
    engine = ProcessEngine()
    try:
        run = engine.run_batch(call_of(b.picky), [[(Item(x),)] for x in range(5)])
    finally:
        engine.close()
    assert run is not None and run.seconds is not None and run.seconds > 0
    outcomes = run.outcomes
    assert len(outcomes) == 5
    failed, printed = outcomes[b.BAD]
    assert isinstance(failed, Failed) and printed == "checking 2\n"
    assert "raised ValueError: no 2" in str(failed.error)
    assert [o[0][0].value for i, (o, _) in enumerate(outcomes) if i != b.BAD] == [0, 10, 30, 40]
    assert [p for _, p in outcomes] == [f"checking {x}\n" for x in range(5)]


def test_instances_of_one_job_share_sandboxes_k_at_a_time():
    # 16 instances on one worker: jobs of 4 (dispatcher.BATCHES_PER_WORKER)
    with dd.Runtime(engine="process", workers=1, cache=False, batch=3) as rt:
        assert rt.run(b.tallies, list(range(16))) == [1, 2, 3, 1] * 4
    with dd.Runtime(engine="process", workers=1, cache=False, batch=1) as rt:
        assert rt.run(b.tallies, list(range(16))) == [1] * 16
    with dd.Runtime(engine="process", workers=1, cache=False) as rt:
        rt.run(b.tallies, list(range(16)))  # measures the sandbox against the function
        assert max(rt.run(b.tallies, list(range(400)))) == 100  # jobs of 100, one batch


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("batch", [None, 1, 3, 64])
def test_batched_results_equal_unbatched_and_a_failure_names_its_instance(engine, batch):
    with dd.Runtime(engine=engine, workers=2, cache=False, batch=batch) as rt:
        xs = [x for x in range(40) if x != b.BAD]
        assert rt.run(b.pickies, xs) == [10 * x for x in xs]
        with pytest.raises(FunctionError, match=r"'picky', instance 2 of 40.*no 2") as e:
            rt.run(b.pickies, list(range(40)))
        assert e.value.logs == "checking 2\n"  # what it printed, not its batch


def test_a_batch_that_times_out_reruns_its_instances_one_by_one_to_find_the_culprit():
    with dd.Runtime(engine="process", workers=1, cache=False, batch=4, timeout=0.5) as rt:
        xs = [x for x in range(17) if x != b.BAD]
        assert rt.run(b.spinners, xs) == [x + 1 for x in xs]
        with pytest.raises(FunctionTimeout, match=r"'spinner', instance 2 of 16"):
            rt.run(b.spinners, list(range(16)))


def test_a_batch_whose_sandbox_dies_reruns_its_instances_one_by_one():
    with dd.Runtime(engine="process", workers=1, cache=False, batch=4) as rt:
        with pytest.raises(FunctionError, match=r"'snoop', instance 2 of 16.*system call"):
            rt.run(b.snoops, list(range(16)))


def test_the_cache_keeps_batched_instances_one_by_one(tmp_path):
    with dd.Runtime(engine="process", workers=1, batch=8,
                    cache=str(tmp_path / "cache")) as rt:
        assert rt.run(b.pickies, [1, 3, 4]) == [10, 30, 40]
        events: list = []
        rt.subscribe(events.append)
        assert rt.run(b.pickies, [1, 3, 4, 5]) == [10, 30, 40, 50]
    assert [(e.hits, e.misses) for e in events if e.kind is EventKind.CACHED] == [(3, 1)]
    assert [e.instance for e in events if e.kind is EventKind.FINISHED] == [3]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_vectorised_implementation_gives_what_the_function_gives(engine):
    rng = np.random.default_rng(7)
    ms = [rng.integers(-9, 9, (16, 16)) for _ in range(12)]
    with dd.Runtime(engine=engine, workers=2, cache=False) as rt:
        out = rt.run(b.grams, ms)
    assert len(out) == len(ms)
    for got, m in zip(out, ms):
        assert got.dtype == np.int64 and np.array_equal(got, b.gram(m))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_vectorised_implementation_with_the_wrong_number_of_outputs_is_named(engine):
    with dd.Runtime(engine=engine, workers=1, cache=False) as rt:
        with pytest.raises(FunctionError, match="the vectorised implementation of "
                                                    "'halve' returned 9 outputs for 10"):
            rt.run(b.halves, list(range(40)))  # jobs of 10 instances


def test_batch_must_be_a_positive_int():
    with pytest.raises(FunctionTypeError, match="batch=0 must be a positive int"):
        @dd.compute(batch=0)
        def f(x: int) -> int:
            return x


def test_the_event_stream_reports_every_instance_of_a_batch():
    from dandelion.runtime.events import Event

    events: list[Event] = []
    with dd.Runtime(engine="process", workers=1, cache=False, batch=4,
                    observers=[events.append]) as rt:
        assert rt.run(b.tallies, list(range(16))) == [1, 2, 3, 4] * 4  # batches of 4
    finished = sorted(e.instance for e in events if e.kind is EventKind.FINISHED)
    started = sorted(e.instance for e in events if e.kind is EventKind.STARTED)
    assert started == finished == list(range(16))
    assert all(e.outcome == "ok" and e.function_seconds is not None for e in events
               if e.kind is EventKind.FINISHED)


def test_a_sandbox_stacks_the_arrays_of_a_batch_in_place_in_its_context():
    from dandelion.backends.engines.process.layout import read_items, write_inputs
    from dandelion.items import Item
    from dandelion.runtime.batch import _stack

    ms = [np.arange(12).reshape(3, 4) * i for i in range(12)]
    context = bytearray(1 << 16)
    capacity = write_inputs(context, [(f"m.{i}", 7, [Item(m)]) for i, m in enumerate(ms)],
                            [], 1024)
    values = [s[0].value for s in read_items(context, capacity, False, None, False)]
    memory = np.frombuffer(context, np.uint8)
    stacked = _stack(values, in_place=True)  # as a sandbox stacks them: a view
    assert np.array_equal(stacked, np.stack(ms)) and np.shares_memory(stacked, memory)
    copied = _stack(values)  # as the inline engine does: the caller's arrays, copied
    assert np.array_equal(copied, np.stack(ms)) and not np.shares_memory(copied, memory)
    # arrays not laid out one after another at equal distances are copied
    assert not np.shares_memory(_stack(values[::-1], in_place=True), memory)
    assert not np.shares_memory(_stack(values[:5] + values[6:], in_place=True), memory)
