"""verify() finds every problem and says where."""

from __future__ import annotations

import pytest

from dandelion.errors import CompositionError, CompositionTypeError
from dandelion.ir import (
    Application,
    Argument,
    Composition,
    DataType,
    FunctionSpec,
    Join,
    Module,
    Output,
    Param,
    SetDecl,
    Span,
    check,
    verify,
)

F = FunctionSpec("f", [Param("x", DataType("int"))], [Param("y", DataType("int"))])
G = FunctionSpec("g", [Param("a", DataType("str", False)), Param("b", DataType("str"))],
                 [Param("r", DataType("str", False))])


def comp(apps, inputs=("i",), outputs=("o",), ephemeral=(), itype="set[int]"):
    return Composition("c", [SetDecl(n, DataType.parse(itype)) for n in inputs],
                       [SetDecl(n, DataType("int")) for n in outputs],
                       [SetDecl(n, DataType("int")) for n in ephemeral], apps)


def codes(module):
    return [d.code for d in verify(module)]


def test_a_correct_composition_has_no_diagnostics():
    m = Module([F], [comp([Application("f", [Argument("x", "i")], [Output("y", "o")])])])
    assert verify(m) == []
    assert check(m) == []


def test_unknown_function_is_reported_with_a_did_you_mean_hint():
    app = Application("ff", [Argument("x", "i")], [Output("y", "o")], span=Span("a.dd", 3, 5))
    found = verify(Module([F], [comp([app])]))
    assert found[0].code == "unknown-function"
    assert found[0].hint == "did you mean 'f'?"
    assert str(found[0]).startswith("a.dd:3:5: error:")


def test_undefined_set_and_unproduced_output_are_both_reported():
    m = Module([F], [comp([Application("f", [Argument("x", "nope")], [Output("y", "oo")])])])
    assert set(codes(m)) >= {"undefined-set", "unproduced-output"}


def test_a_set_produced_twice_is_an_error():
    apps = [Application("f", [Argument("x", "i")], [Output("y", "o")]),
            Application("f", [Argument("x", "i")], [Output("y", "o")])]
    assert "produced-twice" in codes(Module([F], [comp(apps)]))


def test_cycles_are_found():
    apps = [Application("f", [Argument("x", "b")], [Output("y", "a")]),
            Application("f", [Argument("x", "a")], [Output("y", "b")]),
            Application("f", [Argument("x", "i")], [Output("y", "o")])]
    assert "cycle" in codes(Module([F], [comp(apps, ephemeral=("a", "b"))]))


def test_element_type_mismatch_on_an_edge():
    m = Module([F], [comp([Application("f", [Argument("x", "i")], [Output("y", "o")])],
                          itype="set[str]")])
    assert "type-mismatch" in codes(m)
    with pytest.raises(CompositionTypeError):
        check(m)


def test_whole_set_into_an_item_parameter_is_a_shape_error_with_a_hint():
    c = Composition("c", [SetDecl("s", DataType("str")), SetDecl("t", DataType("str"))],
                    [SetDecl("o", DataType("str"))], [],
                    [Application("g", [Argument("a", "s"), Argument("b", "t")],
                                 [Output("r", "o")])])
    found = verify(Module([G], [c]))
    assert found[0].code == "shape-mismatch" and "each" in found[0].hint


def test_sharded_application_cannot_produce_an_item_declared_set():
    c = Composition("c", [SetDecl("s", DataType("str")), SetDecl("t", DataType("str"))],
                    [SetDecl("o", DataType("str", False))], [],
                    [Application("g", [Argument("a", "s", "each"), Argument("b", "t")],
                                 [Output("r", "o")])])
    assert "shape-mismatch" in codes(Module([G], [c]))


def test_join_over_a_non_keyed_input_is_an_error():
    c = Composition("c", [SetDecl("s", DataType("str")), SetDecl("t", DataType("str"))],
                    [SetDecl("o", DataType("str"))], [],
                    [Application("g", [Argument("a", "s", "each"), Argument("b", "t", "keyed")],
                                 [Output("r", "o")], join=Join(["a", "b"], ["inner"]))])
    assert "join-not-keyed" in codes(Module([G], [c]))


def test_reserved_input_names_are_rejected():
    m = Module([F], [comp([Application("f", [Argument("x", "backend")], [Output("y", "o")])],
                          inputs=("backend",))])
    assert "reserved-name" in codes(m)


def test_unused_ephemeral_set_is_only_a_warning():
    apps = [Application("f", [Argument("x", "i")], [Output("y", "o")]),
            Application("f", [Argument("x", "i")], [Output("y", "spare")])]
    found = verify(Module([F], [comp(apps, ephemeral=("spare",))]))
    assert [d.code for d in found] == ["unused-set"] and not found[0].is_error
    check(Module([F], [comp(apps, ephemeral=("spare",))]))  # does not raise


def test_unknown_parameter_and_result_names():
    app = Application("f", [Argument("z", "i")], [Output("w", "o")])
    assert {"unknown-parameter", "unknown-result"} <= set(codes(Module([F], [comp([app])])))


def test_recursive_compositions_are_rejected():
    c = Composition("c", [SetDecl("i")], [SetDecl("o")], [],
                    [Application("c", [Argument("i", "i")], [Output("o", "o")])])
    assert "recursive-composition" in codes(Module([], [c]))


def test_check_raises_with_all_diagnostics_attached():
    m = Module([F], [comp([Application("nope", [Argument("x", "zz")], [Output("y", "o")])])])
    with pytest.raises(CompositionError) as info:
        check(m)
    assert len(info.value.diagnostics) >= 2
    assert "more" in str(info.value)


def _constant(name, value, text=None):
    from dandelion.constants import write

    return SetDecl(name, DataType("int"), value=text if text is not None else
                   write(value, DataType("int"), name))


def test_a_constant_set_is_produced_by_nothing_and_read():
    app = Application("f", [Argument("x", "k")], [Output("y", "o")])
    m = Module([F], [Composition("c", [], [SetDecl("o", DataType("int"))],
                                 [_constant("k", [1, 2])], [app])])
    assert verify(m) == []
    unused = Module([F], [Composition("c", [SetDecl("i", DataType("int"))],
                                      [SetDecl("o", DataType("int"))], [_constant("k", [1])],
                                      [Application("f", [Argument("x", "i")],
                                                   [Output("y", "o")])])])
    assert codes(unused) == ["unused-set"]


def test_a_constant_that_a_function_produces_is_refused():
    apps = [Application("f", [Argument("x", "i")], [Output("y", "k")]),
            Application("f", [Argument("x", "k")], [Output("y", "o")])]
    m = Module([F], [Composition("c", [SetDecl("i", DataType("int"))],
                                 [SetDecl("o", DataType("int"))], [_constant("k", [1])], apps)])
    assert codes(m) == ["produced-constant"]


@pytest.mark.parametrize("text", ["[1]", "{}", '[{"type": "int"}]',
                                  '[{"type": "int", "data": "!!"}]',
                                  '[{"type": "nope", "data": ""}]', "not json"])
def test_a_malformed_constant_is_refused_as_the_ir_is_read(text):
    app = Application("f", [Argument("x", "k")], [Output("y", "o")])
    m = Module([F], [Composition("c", [], [SetDecl("o", DataType("int"))],
                                 [_constant("k", None, text)], [app])])
    assert codes(m) == ["bad-constant"]
    with pytest.raises(CompositionError, match="set 'k': the items of a constant set are "
                                               "malformed"):
        check(m)
