"""The event stream: every instance's start and end, for observers only."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import dandelion as dd
from dandelion.cli import main
from dandelion.errors import FunctionError
from dandelion.io import storage_read
from dandelion.runtime.events import Event, EventKind, summarize
from tests.conformance import funcs as f

SCALE = 3  # a module constant the function reads, as users write them


@dd.compute
def scale(x: int) -> int:
    return x * SCALE


@dd.compute
def total(xs: list[int]) -> int:
    return sum(xs)


@dd.composition
def scaled_total(xs: list[int]) -> int:
    return total(scale(dd.each(xs)))


@dd.compute
def fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


@dd.composition
def failing(xs: list[int]) -> list[int]:
    return fails_on_two(dd.each(xs))


@dd.compute
def norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(a))


@dd.composition
def norms(arrays: list[np.ndarray]) -> list[float]:
    return norm(dd.each(arrays))


def test_every_instance_starts_and_finishes_with_its_application_and_bytes():
    events: list[Event] = []
    with dd.Runtime(engine="inline", workers=2, cache=False, observers=[events.append]) as rt:
        assert rt.run(scaled_total, [1, 2, 3]) == 18
    started = sorted((e.application, e.instance) for e in events
                     if e.kind is EventKind.STARTED)
    finished = {(e.application, e.instance): e for e in events
                if e.kind is EventKind.FINISHED}
    assert started == sorted(finished) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    first = finished[0, 0]
    assert (first.composition, first.function, first.engine, first.node, first.outcome) == \
        ("scaled_total", "scale", "inline", None, "ok")
    assert first.bytes_in == first.bytes_out == 8  # one int each way
    assert finished[1, 0].bytes_in == 3 * 8 and finished[1, 0].bytes_out == 8
    assert all(e.end is not None and e.end >= e.start for e in finished.values())
    by_app = summarize(events)
    assert [(s.function, s.instances) for s in by_app] == [("scale", 3), ("total", 1)]


def test_a_failing_instance_finishes_failed():
    events: list[Event] = []
    with dd.Runtime(engine="inline", workers=1, cache=False, observers=[events.append]) as rt:
        with pytest.raises(FunctionError):
            rt.run(failing, [1, 2, 3])
    outcomes = {e.instance: e.outcome for e in events if e.kind is EventKind.FINISHED}
    assert outcomes[1] == "failed" and outcomes.get(0) == "ok"


def test_subscribing_and_unsubscribing_between_runs():
    events: list[Event] = []
    with dd.Runtime(engine="inline", workers=1, cache=False) as rt:
        rt.run(scaled_total, [1])
        stop = rt.subscribe(events.append)
        rt.run(scaled_total, [1, 2])
        stop()
        rt.run(scaled_total, [1, 2, 3])
    assert len([e for e in events if e.kind is EventKind.FINISHED]) == 3


def test_nested_compositions_report_their_own_applications():
    events: list[Event] = []
    with dd.Runtime(engine="inline", workers=2, cache=False, observers=[events.append]) as rt:
        rt.run(f.nested_each, [dd.Item(1, key=0), dd.Item(2, key=0), dd.Item(3, key=1)])
    inner = {(e.composition, e.function) for e in events if e.kind is EventKind.FINISHED}
    assert inner == {("fan_in", "double"), ("fan_in", "total")}


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the process engine's seccomp filter and C primitives are Linux-only")
def test_the_process_engine_reports_the_function_time_apart_from_its_own():
    events: list[Event] = []
    arrays = [np.ones(1000), np.zeros(10)]
    with dd.Runtime(engine="process", workers=1, cache=False, observers=[events.append]) as rt:
        assert rt.run(norms, arrays) == [pytest.approx(1000 ** 0.5), 0.0]
    done = [e for e in events if e.kind is EventKind.FINISHED]
    assert len(done) == 2
    for e in done:
        assert e.engine == "process" and e.function_seconds is not None
        assert 0 <= e.function_seconds <= (e.end or 0) - e.start
    assert sorted(e.bytes_in for e in done) == [80, 8000]


@dd.composition
def read(keys: list[str]) -> list[dd.Item[bytes]]:
    return storage_read(keys)


def test_io_instances_report_events_from_the_io_engine(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "b.txt").write_bytes(b"hi")
    events: list[Event] = []
    with dd.Runtime(engine="inline", workers=1, cache=False, observers=[events.append],
                    io={"storage_root": str(tmp_path)}) as rt:
        assert [i.value for i in rt.run(read, ["a.txt", "b.txt"])] == [b"hello", b"hi"]
    done = [(e.instance, e.engine, e.function, e.bytes_in, e.bytes_out) for e in events
            if e.kind is EventKind.FINISHED]
    assert done == [(0, "io", "storage_read", len("a.txtb.txt"), len("hellohi"))]


def test_cli_stats_prints_a_summary_per_application(capsys, tmp_path):
    examples = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"
    assert main(["run", f"{examples}/wordcount.py", "-i", "pages=one two", "-i",
                 "pages=three", "--engine", "inline", "--stats"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "3"
    lines = captured.err.strip().splitlines()
    assert lines[0].split()[:3] == ["application", "instances", "engine"]
    assert lines[1].split()[:4] == ["word_count[0]", "split", "2", "inline"]
    assert lines[2].split()[:4] == ["word_count[1]", "count", "1", "inline"]
