"""Pass ``fuse``: which chains run as one unit, and why the others do not."""

from __future__ import annotations

from typing import NamedTuple

import dandelion as dd
from dandelion.io import system_HTTPGet
from dandelion.planner import PassContext, can_fuse, make_plan


@dd.compute
def inc(x: int) -> int:
    return x + 1


@dd.compute
def double(x: int) -> int:
    return 2 * x


@dd.compute
def spread(x: int) -> list[int]:
    return [x, x]


@dd.compute
def total(xs: list[int]) -> int:
    return sum(xs)


@dd.compute(fuse=False)
def alone(x: int) -> int:
    return x


@dd.composition
def three(xs: list[int]) -> list[int]:
    return inc(dd.each(double(dd.each(inc(dd.each(xs))))))


def fuse_notes(plan: dd.planner.Plan) -> list[str]:
    return [d.message for d in plan.decisions if d.pass_name == "fuse"]


def test_a_chain_linked_each_to_each_is_one_unit_with_its_reason():
    plan = make_plan(three.module, "three")
    assert plan.chains == ((0, 1, 2),)
    assert fuse_notes(plan) == ["fused 'inc' -> 'double' -> 'inc' (each over 'inc_result', "
                                "each over 'double_result'): one sandbox per instance"]
    assert "fused: [0] inc -> [1] double -> [2] inc" in plan.describe()
    assert can_fuse(plan, 0, 1) and not can_fuse(plan, 0, 2)


def test_fusion_off_for_a_run_or_a_function():
    assert make_plan(three.module, "three", context=PassContext({"fuse": False})).chains == ()

    @dd.composition
    def with_alone(xs: list[int]) -> list[int]:
        return inc(dd.each(alone(dd.each(xs))))

    plan = make_plan(with_alone.module, "with_alone")
    assert plan.chains == ()
    assert fuse_notes(plan) == ["'alone' -> 'inc' not fused: 'alone' is declared fusable=False"]


def test_edges_that_are_not_one_to_one_are_not_fused_and_say_why():
    @dd.composition
    def fan_in(xs: list[int]) -> int:
        return total(double(dd.each(xs)))

    @dd.composition
    def fan_out(x: int) -> list[int]:
        return inc(dd.each(spread(x)))

    @dd.composition
    def shared(xs: list[int]) -> tuple[list[int], list[int]]:
        d = double(dd.each(xs))
        return inc(dd.each(d)), inc(dd.each(d))

    @dd.composition
    def kept(xs: list[int]) -> tuple[list[int], list[int]]:
        d = double(dd.each(xs))
        return d, inc(dd.each(d))

    cases = {fan_in: "'total' takes them all", fan_out: "'spread' returns a set",
             shared: "is read by 2 arguments", kept: "is an output of the composition"}
    for comp, reason in cases.items():
        plan = make_plan(comp.module, comp.name)
        assert plan.chains == (), comp.name
        assert any(reason in note for note in fuse_notes(plan)), fuse_notes(plan)


def test_whole_to_whole_from_a_single_instance_is_fused():
    @dd.composition
    def single(x: int) -> int:
        return total(spread(x))

    assert make_plan(single.module, "single").chains == ((0, 1),)


def test_io_functions_are_never_fused():
    @dd.composition
    def fetch(requests: list[dd.HttpRequest]) -> list[dd.HttpResponse]:
        return system_HTTPGet(dd.each(requests))

    plan = make_plan(fetch.module, "fetch")
    assert plan.chains == ()


class Parts(NamedTuple):
    half: int
    odd: int


@dd.compute
def split(x: int) -> Parts:
    return Parts(x // 2, x % 2)


@dd.compute
def add(x: int, ys: list[int]) -> int:
    return x + sum(ys)


def test_a_merge_that_would_make_a_cycle_between_units_is_refused():
    @dd.composition
    def loop(x: int) -> int:
        half, odd = split(x)
        return add(half, alone(odd))  # split -> add waits on alone, which waits on split

    plan = make_plan(loop.module, "loop")
    assert plan.chains == ()
    assert "'split' -> 'add' not fused: 'add' also waits for work that waits for 'split'" \
        in fuse_notes(plan)


def test_a_member_reading_two_sets_of_its_chain_is_not_fused_to_it():
    @dd.composition
    def both(x: int) -> int:
        half, odd = split(x)
        return add(half, spread(odd))

    plan = make_plan(both.module, "both")
    assert plan.chains == ((0, 1),)  # split -> spread; add reads 'half' of that chain too
    assert "'spread' -> 'add' not fused: 'add' reads another set of the chain it would " \
        "join" in fuse_notes(plan)
    with dd.Runtime(engine="inline", workers=1, cache=False) as rt:
        assert rt.run(both, 7) == 3 + 2
