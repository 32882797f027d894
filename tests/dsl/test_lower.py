"""What each construct of the notations lowers to."""

from __future__ import annotations

import pytest

import dandelion as dd
import dandelion.dsl as dsl
from dandelion.ir import (
    Application,
    Argument,
    DataType,
    FunctionKind,
    Join,
    Output,
    ShardingMode,
)

SIGS = """
function f(set x) -> set
function two(set x) -> (set a, set b)
function pair(set l, set r) -> set
function inc(item[int] n) -> item[int]
"""


def app(text: str, **kw: object) -> Application:
    module = dsl.parse(text + SIGS, "t.dd")
    return module.compositions[0].applications[0]


@pytest.mark.parametrize(("loop", "mode"), [
    ("each", ShardingMode.EACH), ("each key", ShardingMode.KEYED),
    ("any", ShardingMode.ANY_EACH), ("any key", ShardingMode.ANY_KEYED)])
def test_loop_forms_set_the_sharding_mode(loop: str, mode: ShardingMode) -> None:
    got = app(f"input set s\noutput set y\ny = for {loop} v in s : f(v)\n")
    assert got.arguments == (Argument("x", "s", mode),)


def test_plain_call_passes_whole_sets() -> None:
    got = app("input set s\noutput set y\ny = f(s)\n")
    assert got == Application("f", [Argument("x", "s", ShardingMode.ALL)], [Output("result", "y")])


def test_two_loops_give_a_cross_product_and_by_a_join() -> None:
    got = app("input set a, b\noutput set y\n"
              "y = for each key u in a, each key w in b by u left w :\n    pair(u, w)\n")
    assert got.arguments == (Argument("l", "a", ShardingMode.KEYED),
                             Argument("r", "b", ShardingMode.KEYED))
    assert got.join == Join(["l", "r"], ["left"])
    cross = app("input set a, b\noutput set y\ny = for each u in a, each w in b : pair(u, w)\n")
    assert [a.mode for a in cross.arguments] == [ShardingMode.EACH, ShardingMode.EACH]
    assert cross.join is None


def test_loop_variables_may_come_in_any_parameter_position() -> None:
    got = app("input set a, b\noutput set y\ny = for each w in b : pair(a, w)\n")
    assert got.arguments == (Argument("l", "a"), Argument("r", "b", ShardingMode.EACH))


def test_optional_marks_the_argument() -> None:
    got = app("input set a, b\noutput set y\n"
              "y = for each v in a : pair(v, optional b)\n")
    assert got.arguments[1] == Argument("r", "b", ShardingMode.ALL, optional=True)


def test_several_results_and_underscore() -> None:
    got = app("input set a\noutput set p, q\np, q = two(a)\n")
    assert got.outputs == (Output("a", "p"), Output("b", "q"))
    dropped = app("input set a\noutput set q\n_, q = two(a)\n")
    assert dropped.outputs == (Output("b", "q"),)


def test_named_arguments_may_leave_parameters_out() -> None:
    got = app("input set a\noutput set y\ny = pair(r = a)\n")
    assert got.arguments == (Argument("r", "a"),)


def test_untyped_declarations_take_the_types_of_the_functions() -> None:
    module = dsl.parse("input item n\noutput item m\nephemeral item k\n"
                       "k = inc(n)\nm = inc(k)\n" + SIGS, "t.dd")
    comp = module.compositions[0]
    assert [d.type for d in comp.declarations()] == [DataType("int", False)] * 3


def test_written_types_win_over_inference() -> None:
    module = dsl.parse("input set[bytes] s\noutput set y\ny = f(s)\n" + SIGS, "t.dd")
    assert module.compositions[0].inputs[0].type == DataType("bytes", True)


def test_compositions_call_compositions_by_their_inputs_and_outputs() -> None:
    text = ("composition inner\n  input set[int] xs\n  output set[int] ys\n"
            "  ys = for each x in xs : inc(x)\n"
            "composition outer\n  input set[int] a\n  output set[int] b\n  b = inner(a)\n"
            "function inc(item[int] n) -> item[int]\n")
    module = dsl.parse(text, "t.dd")
    outer = module.composition("outer")
    assert outer is not None
    assert outer.applications[0] == Application("inner", [Argument("xs", "a")],
                                                [Output("ys", "b")])
    program = dsl.loads(text, "t.dd", functions={"inc": inc})
    assert program.entry == "outer"
    assert [c.name for c in program.module.compositions] == ["outer", "inner"]
    assert dd.run(program, [1, 2], engine="inline") == [2, 3]


@dd.compute
def inc(n: int) -> int:
    return n + 1


def test_io_functions_are_declared_with_io() -> None:
    module = dsl.parse("io function get(set r) -> set\ncacheable io function blob(set k) -> set\n"
                       "input set a\noutput set y, z\ny = get(a)\nz = blob(a)\n", "t.dd")
    get, blob = module.functions
    assert (get.kind, get.cacheable) == (FunctionKind.IO, False)
    assert (blob.kind, blob.cacheable) == (FunctionKind.IO, True)


def test_undeclared_functions_get_a_signature_from_their_call_in_parse() -> None:
    module = dsl.parse("input set a\noutput set y\ny = mystery(a)\n", "t.dd")
    assert [p.name for p in module.functions[0].params] == ["arg0"]
    with pytest.raises(dd.errors.CompositionError, match="not declared or bound"):
        dsl.loads("input set a\noutput set y\ny = mystery(a)\n", "t.dd")


def test_statements_may_come_in_any_order() -> None:
    a = dsl.parse("input item[int] n\noutput item[int] m\nephemeral item[int] k\n"
                  "k = inc(n)\nm = inc(k)\n" + SIGS, "t.dd")
    b = dsl.parse("m = inc(k)\nephemeral item[int] k\noutput item[int] m\n"
                  "k = inc(n)\ninput item[int] n\n" + SIGS, "t.dd")
    # Applications keep their written order; everything else is the same.
    assert a.compositions[0].applications == b.compositions[0].applications[::-1]
    assert a.compositions[0].declaration("k") == b.compositions[0].declaration("k")


def test_keywords_are_names_where_a_keyword_cannot_be() -> None:
    module = dsl.parse("input set key, left, each\noutput set any\n"
                       "any = for each v in key : pair(v, left)\n" + SIGS, "t.dd")
    assert [d.name for d in module.compositions[0].declarations()] == \
        ["key", "left", "each", "any"]


DCL = """
function HTTP (requests) => (headers, bodies);
function Parse (bodies) => (records);
composition Fetch (urls) => (records) {
    Parse (bodies = all pages) => (records = records);
    HTTP (requests = each urls) => (pages = bodies);
}
"""


def test_dcl_example_of_the_spec() -> None:
    module = dsl.parse(DCL, "fetch.dcl")
    comp = module.composition("Fetch")
    assert comp is not None
    assert comp.applications[1] == Application(
        "HTTP", [Argument("requests", "urls", ShardingMode.EACH)], [Output("bodies", "pages")])
    assert [d.name for d in comp.ephemeral] == ["pages"]
    types = {d.name: d.type for d in comp.declarations()}
    # .dcl is untyped; only the platform's HTTP function fixes the type of what it produces
    assert types["urls"] == types["records"] == DataType()
    assert types["pages"] == DataType("bytes")


def test_dcl_matches_arguments_and_results_by_name_in_any_order() -> None:
    text = ("function F (a, b) => (x, y);\ncomposition C (p, q) => (r) {\n"
            "  F(b = keyed q, a = optional anyKeyed p) => (r = y) by a full b;\n}\n")
    got = dsl.parse(text, "t.dcl").compositions[0].applications[0]
    assert got.arguments == (Argument("a", "p", ShardingMode.ANY_KEYED, optional=True),
                             Argument("b", "q", ShardingMode.KEYED))
    assert got.outputs == (Output("y", "r"),)
    assert got.join == Join(["a", "b"], ["full"])


def test_dcl_takes_types_from_bound_functions() -> None:
    text = ("function inc (n) => (result);\ncomposition C (a) => (b) {\n"
            "  inc(n = all a) => (b = result);\n}\n")
    program = dsl.loads(text, "t.dcl", functions={"inc": inc})
    comp = program.composition
    assert comp.inputs[0].type == DataType("int", False)
    assert dd.run(program, 41, engine="inline") == 42


def test_bare_calls_keep_no_results() -> None:
    module = dsl.parse("function store(set x)\ninput set a\nstore(a)\n"
                       "for each v in a : store(v)\n", "t.dd")
    first, second = module.compositions[0].applications
    assert first == Application("store", [Argument("x", "a")], [])
    assert second.arguments == (Argument("x", "a", ShardingMode.EACH),)
    assert second.outputs == ()


def test_uncacheable_compute_functions() -> None:
    module = dsl.parse("uncacheable function now(set x) -> item[int]\n"
                       "input set a\noutput item[int] t\nt = now(a)\n", "t.dd")
    assert module.functions[0].cacheable is False
    assert module.functions[0].kind is FunctionKind.COMPUTE


def test_entry_is_the_uncalled_composition_else_the_one_named_like_the_file() -> None:
    text = ("composition a\ninput set[int] x\noutput set[int] y\ny = for each v in x : inc(v)\n"
            "composition b\ninput set[int] x\noutput set[int] y\ny = a(x)\n")
    assert dsl.loads(text, "t.dd", functions={"inc": inc}).entry == "b"
    two = text.replace("y = a(x)", "y = for each v in x : inc(v)")
    assert dsl.loads(two, "a.dd", functions={"inc": inc}).entry == "a"
    assert dsl.loads(two, "other.dd", functions={"inc": inc}).entry == "b"
    assert dsl.loads(two, "t.dd", functions={"inc": inc}, entry="a").entry == "a"
    with pytest.raises(dd.errors.DandelionError, match="no composition called 'c'"):
        dsl.loads(two, "t.dd", functions={"inc": inc}, entry="c")
