"""Instance formation, the pure core of the semantics."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dandelion.ir import Join
from dandelion.ir import ShardingMode as M
from dandelion.items import Item
from dandelion.runtime.sharding import Input, gather, instances


def items(*pairs):
    return tuple(Item(v, key=k) for v, k in pairs)


def test_all_gives_one_instance_with_everything():
    xs = items(("a", 1), ("b", 2))
    [inst] = instances([Input("x", xs)])
    assert inst.inputs == (xs,)


def test_each_keeps_item_order():
    xs = items(("a", 9), ("b", 1))
    assert [i.inputs[0][0].value for i in instances([Input("x", xs, M.EACH)])] == ["a", "b"]


def test_cross_product_first_parameter_outermost_and_all_inputs_shared():
    a, b, c = items(("a1", 0), ("a2", 0)), items(("b1", 0), ("b2", 0)), items(("c", 0))
    insts = instances([Input("a", a, M.EACH), Input("c", c), Input("b", b, M.EACH)])
    assert [(i.inputs[0][0].value, i.inputs[2][0].value) for i in insts] == [
        ("a1", "b1"), ("a1", "b2"), ("a2", "b1"), ("a2", "b2")]
    assert all(i.inputs[1] == c for i in insts)


def test_required_empty_input_gives_no_instances_optional_does():
    assert instances([Input("a", items(("x", 0))), Input("b", ())]) == []
    assert len(instances([Input("a", items(("x", 0))), Input("b", (), optional=True)])) == 1


def test_chained_joins_apply_left_to_right():
    a = items(("a1", 1), ("a2", 2))
    b = items(("b2", 2), ("b3", 3))
    c = items(("c1", 1), ("c3", 3))
    insts = instances([Input("a", a, M.KEYED), Input("b", b, M.KEYED), Input("c", c, M.KEYED)],
                      Join(["a", "b", "c"], ["full", "inner"]))
    got = [tuple(tuple(it.value for it in s) for s in i.inputs) for i in insts]
    assert got == [(("a1",), (), ("c1",)), ((), ("b3",), ("c3",))]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=30),
       st.integers(1, 8), st.sampled_from([M.ANY_EACH, M.ANY_KEYED]))
def test_any_modes_cover_every_item_once_in_order_and_never_split_keys(pairs, par, mode):
    xs = items(*pairs)
    insts = instances([Input("x", xs, mode)], parallelism=par)
    flat = [it for i in insts for it in i.inputs[0]]
    assert 1 <= len(insts) <= max(1, par) or not xs
    if mode is M.ANY_EACH:
        assert tuple(flat) == xs
    else:
        assert sorted(flat, key=lambda it: it.key) == flat
        keys = [{it.key for it in i.inputs[0]} for i in insts]
        assert all(not (k1 & k2) for n, k1 in enumerate(keys) for k2 in keys[n + 1:])
        assert sorted(it.value for it in flat) == sorted(v for v, _ in pairs)


@given(st.lists(st.tuples(st.integers(), st.integers(-3, 3)), max_size=30))
def test_keyed_groups_ascend_by_key_and_keep_order_within(pairs):
    xs = items(*pairs)
    insts = instances([Input("x", xs, M.KEYED)])
    assert [i.keys[0] for i in insts] == sorted({k for _, k in pairs})
    for inst in insts:
        assert list(inst.inputs[0]) == [it for it in xs if it.key == inst.keys[0]]


def test_gather_concatenates_per_result_in_instance_order():
    outs = [[items(("a", 0)), items(("x", 0))], [items(("b", 0), ("c", 0)), ()]]
    assert gather(outs, 2) == [items(("a", 0), ("b", 0), ("c", 0)), items(("x", 0))]


def values(insts):
    return [tuple(tuple(it.value for it in s) for s in i.inputs) for i in insts]


MODES = [M.ALL, M.EACH, M.KEYED, M.ANY_EACH, M.ANY_KEYED]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=20),
       st.sampled_from(MODES), st.sampled_from(MODES), st.booleans(), st.integers(1, 4))
def test_an_empty_optional_input_is_dropped_from_the_sharding(pairs, mode, empty_mode, first,
                                                              par):
    xs = items(*pairs)
    empty = Input("e", (), empty_mode, optional=True)
    alone = instances([Input("x", xs, mode)], parallelism=par)
    both = instances([empty, Input("x", xs, mode)] if first else
                     [Input("x", xs, mode), empty], parallelism=par)
    assert [i.keys for i in both] == [i.keys for i in alone]
    assert values(both) == [(((), *v) if first else (*v, ())) for v in values(alone)]


def test_only_empty_optional_inputs_give_one_instance_with_empty_sets():
    insts = instances([Input("a", (), M.KEYED, optional=True), Input("b", (), M.EACH, True)])
    assert values(insts) == [((), ())]


A = items(("a1", 1), ("a2", 2), ("a3", 3))
B = items(("b2", 2), ("b3", 3), ("b4", 4))
C = items(("c1", 1), ("c4", 4))


def test_an_empty_optional_input_leaves_the_join_with_the_kind_that_joined_it():
    no_b = Input("b", (), M.KEYED, optional=True)
    three = [Input("a", A, M.KEYED), no_b, Input("c", C, M.KEYED)]
    # a inner b left c without b is a left c
    assert values(instances(three, Join(["a", "b", "c"], ["inner", "left"]))) == [
        (("a1",), (), ("c1",)), (("a2",), (), ()), (("a3",), (), ())]
    # without its first parameter, a join starts at the next one
    no_a = Input("a", (), M.KEYED, optional=True)
    assert values(instances([no_a, Input("b", B, M.KEYED)], Join(["a", "b"], ["inner"]))) == [
        ((), ("b2",)), ((), ("b3",)), ((), ("b4",))]


JOIN_KINDS = ["inner", "left", "right", "full"]
keyed_items = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 6)), max_size=15)


@given(keyed_items, keyed_items, keyed_items, st.sampled_from(JOIN_KINDS),
       st.sampled_from(JOIN_KINDS), st.integers(1, 6))
def test_any_keyed_joins_group_whole_joined_keys_consistently_across_sides(a, b, c, k1, k2,
                                                                           par):
    sides = {"a": items(*a), "b": items(*b), "c": items(*c)}
    join = Join(["a", "b", "c"], [k1, k2])
    keyed = instances([Input(p, s, M.KEYED) for p, s in sides.items()], join)
    merged = instances([Input(p, s, M.ANY_KEYED) for p, s in sides.items()], join, par)
    assert len(merged) == min(par, len(keyed))
    # the same items, in the same order, on every side
    for side in range(3):
        assert [it for i in merged for it in i.inputs[side]] == [
            it for i in keyed for it in i.inputs[side]]
    # every joined key lands whole, with its groups of every side, in one instance
    where = {id(it): n for n, i in enumerate(merged) for s in i.inputs for it in s}
    for row in keyed:
        assert len({where[id(it)] for s in row.inputs for it in s}) == 1


def test_a_keyed_input_joined_with_an_any_keyed_one_gets_one_instance_per_key():
    join = Join(["a", "b"], ["full"])
    keyed = instances([Input("a", A, M.KEYED), Input("b", B, M.KEYED)], join)
    mixed = instances([Input("a", A, M.KEYED), Input("b", B, M.ANY_KEYED)], join, 2)
    assert values(mixed) == values(keyed) and len(mixed) == 4


@given(st.lists(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=4),
                min_size=2, max_size=4), st.lists(st.booleans(), min_size=4, max_size=4))
def test_sets_taken_whole_form_the_instance_a_cross_join_of_them_forms(sets, optional):
    """Every input ``all`` and no join takes a shortcut: it must form what the general
    rules form for the same sets crossed (each side one shard, as alone)."""
    inputs = [Input(f"p{i}", items(*pairs), M.ALL, optional[i]) for i, pairs in enumerate(sets)]
    crossed = instances(inputs, Join([i.param for i in inputs], ["cross"] * (len(inputs) - 1)))
    assert instances(inputs) == crossed
