"""Pass ``cacheable``: the verdict per application, its reason, and what runs follow."""

from __future__ import annotations

import dandelion as dd
from dandelion.io import system_HTTPGet
from dandelion.planner import make_plan


@dd.compute
def square(x: int) -> int:
    return x * x


@dd.compute(cacheable=False)
def stamp(x: int) -> int:
    import time

    return int(time.time_ns()) + x


@dd.composition
def mixed(xs: list[int]) -> tuple[list[int], list[int]]:
    return square(dd.each(xs)), stamp(dd.each(xs))


def test_compute_functions_are_cacheable_unless_declared_otherwise():
    plan = make_plan(mixed.module, "mixed")
    assert [plan.hints[i]["cacheable"] for i in range(2)] == [True, False]
    explained = plan.describe(explain=True)
    assert "cacheable [0]: 'square' is cacheable" in explained
    assert "cacheable [1]: 'stamp' is not cacheable: declared cacheable=False" in explained


def test_io_functions_are_cacheable_only_when_declared_so():
    for fetch, verdict in ((system_HTTPGet, False),
                           (system_HTTPGet.declare(name="fetch_immutable", cacheable=True),
                            True)):
        @dd.composition
        def get(requests: list[dd.HttpRequest]) -> list[dd.HttpResponse]:
            return fetch(dd.each(requests))  # noqa: B023 - called while defined

        plan = make_plan(get.module, "get")
        assert plan.hints[0]["cacheable"] is verdict


def test_a_function_declared_not_cacheable_runs_every_time():
    with dd.Runtime(engine="inline", cache="memory") as rt:
        first = rt.run(mixed, [1, 2])
        second = rt.run(mixed, [1, 2])
    assert first[0] == second[0] == [1, 4]
    assert first[1] != second[1]
