"""The planner: passes given a context, every pass shown, sub-plans planned up front."""

from __future__ import annotations

import pytest

import dandelion as dd
import dandelion.planner
from dandelion.errors import BackendError
from dandelion.ir import (
    Application,
    Argument,
    Composition,
    FunctionSpec,
    Module,
    Output,
    Param,
    SetDecl,
)
from dandelion.planner import Decision, PassContext, Plan, flatten, make_plan
from tests.conformance import funcs as f


def _three_levels() -> Module:
    """outer applies middle to each item; middle applies inner to each item."""
    def comp(name: str, callee: str) -> Composition:
        return Composition(name, [SetDecl("a")], [SetDecl("b")], [],
                           [Application(callee, [Argument("x", "a", "each")],
                                        [Output("y", "b")])])

    def fix(c: Composition) -> Composition:  # compositions' parameters are 'a' and 'b'
        app = c.applications[0]
        if app.function == "f":
            return c
        return Composition(c.name, c.inputs, c.outputs, [], [
            Application(app.function, [Argument("a", "a", "each")], [Output("b", "b")])])

    return Module([FunctionSpec("f", [Param("x")], [Param("y")])],
                  [fix(comp("outer", "middle")), fix(comp("middle", "inner")),
                   comp("inner", "f")])


def test_sub_plans_of_nested_sharded_compositions_are_planned_up_front():
    plan = make_plan(_three_levels(), "outer")
    assert list(plan.subplans) == ["middle"]
    middle = plan.subplan("middle")
    assert middle.entry == "middle" and list(middle.subplans) == ["inner"]
    assert middle.subplan("inner").subplans == {}
    assert middle.passes == ("flatten", "cacheable", "fuse", "near_storage",
                            "locality", "partition")


def test_whole_set_calls_are_inlined_so_they_need_no_sub_plan():
    assert make_plan(f.nested_all.module, "nested_all").subplans == {}
    assert list(make_plan(f.nested_each.module, "nested_each").subplans) == ["fan_in"]


def test_a_plan_made_by_hand_says_which_sub_plan_it_lacks():
    with pytest.raises(BackendError, match="no sub-plan for composition 'fan_in'"):
        Plan(f.nested_each.module, "nested_each").subplan("fan_in")


def test_passes_are_given_the_context_and_their_decisions_are_recorded():
    def widen(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
        return plan, [Decision("widen", f"width {context.option('width', 1)}")]

    plan = make_plan(f.nested_each.module, "nested_each", [flatten, widen],
                     PassContext({"width": 8}))
    assert plan.passes == ("flatten", "widen")
    assert [d.message for d in plan.decisions] == ["width 8"]
    assert [d.message for d in plan.subplan("fan_in").decisions] == ["width 8"]


def test_explain_shows_every_pass_even_one_that_changed_nothing():
    text = make_plan(f.nested_each.module, "nested_each").describe(explain=True)
    assert "flatten: (no change)" in text
    assert "sub-plan for composition 'fan_in' (run once per shard)" in text


def test_the_runtime_gives_its_pass_context_to_the_passes():
    def note(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
        return plan, [Decision("note", str(context.option("tag")))]

    with dd.Runtime(engine="inline", workers=1, passes=[note],
                    pass_context=PassContext({"tag": "t1"})) as rt:
        assert [d.message for d in rt.plan(f.fan_in).decisions] == ["t1"]


def test_running_a_nested_sharded_composition_never_calls_the_planner(monkeypatch):
    groups = [dd.Item(1, key=0), dd.Item(2, key=0), dd.Item(3, key=1)]
    with dd.Runtime(engine="inline", workers=2) as rt:
        expected = rt.run(f.nested_each, groups)

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("the planner was called while running")

        monkeypatch.setattr(dandelion.planner, "derive_plan", refuse)
        monkeypatch.setattr(dandelion.planner, "make_plan", refuse)
        assert rt.run(f.nested_each, groups) == expected == [6, 6]
