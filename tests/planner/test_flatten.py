from __future__ import annotations

from dandelion.planner import PassContext, make_plan
from dandelion.planner.flatten import flatten
from dandelion.planner.plan import Plan
from tests.conformance import funcs as f


def test_whole_set_composition_calls_are_inlined_with_renamed_sets():
    plan = make_plan(f.nested_all.module, "nested_all")
    apps = plan.composition.applications
    assert [a.function for a in apps] == ["double", "total"]
    assert apps[0].arguments[0].source == "xs"
    assert apps[1].arguments[0].source == apps[0].outputs[0].target == "d"
    assert any(d.pass_name == "flatten" for d in plan.decisions)


def test_sharded_composition_calls_are_left_for_the_backend():
    plan, decisions = flatten(Plan(f.nested_each.module, "nested_each"), PassContext())
    assert [a.function for a in plan.composition.applications] == ["fan_in"]
    assert plan.decisions == ()
    assert decisions == []


def test_explain_lists_the_decisions():
    text = make_plan(f.nested_all.module, "nested_all").describe(explain=True)
    assert "flatten: inlined composition 'doubles'" in text
