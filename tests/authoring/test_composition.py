"""@dd.composition: tracing, naming, and errors at definition time."""

from __future__ import annotations

import pytest

import dandelion as dd
from tests.conformance import funcs as f


def test_sets_are_named_after_the_variables_they_are_assigned_to():
    @dd.composition
    def wc(pages: list[bytes]) -> int:
        words = split(dd.each(pages))
        n = count(words)
        return n

    comp = wc.composition
    assert [d.name for d in comp.ephemeral] == ["words"]
    assert [d.name for d in comp.outputs] == ["n"]
    assert [(a.function, a.arguments[0].mode.value) for a in comp.applications] == [
        ("split", "each"), ("count", "all")]


@dd.compute
def split(page: bytes) -> list[str]:
    return page.decode().split()


@dd.compute
def count(words: list[str]) -> int:
    return len(words)


def test_an_unnamed_single_output_is_called_result():
    @dd.composition
    def wc(pages: list[bytes]) -> int:
        return count(split(dd.each(pages)))

    assert [d.name for d in wc.composition.outputs] == ["result"]
    assert wc.composition.ephemeral[0].name == "split_result"


def test_outputs_keyword_names_outputs():
    @dd.composition(outputs="total")
    def wc(pages: list[bytes]) -> int:
        return count(split(dd.each(pages)))

    assert wc.composition.outputs[0].name == "total"


def test_type_mismatch_is_an_error_at_definition_naming_file_and_line():
    with pytest.raises(dd.CompositionTypeError) as info:
        @dd.composition
        def bad(pages: list[bytes]) -> int:
            return f.total(pages)  # total takes ints
    err = info.value
    assert err.span.file == __file__
    assert "'pages' holds bytes but parameter 'xs' of 'total' expects int" in str(err)
    assert f"{__file__}:" in str(err)


def test_whole_set_into_an_item_parameter_suggests_each():
    with pytest.raises(dd.CompositionTypeError, match="dd.each|'each'"):
        @dd.composition
        def bad(xs: list[int]) -> list[int]:
            return f.double(xs)


def test_wrong_arity_and_unknown_keywords_fail_at_the_call():
    with pytest.raises(dd.CompositionTypeError, match="takes 1 argument"):
        @dd.composition
        def bad(x: int, y: int) -> int:
            return f.inc(x, y)
    with pytest.raises(dd.CompositionTypeError, match="missing argument"):
        @dd.composition
        def bad2(x: int) -> int:
            return f.combine(x)
    with pytest.raises(dd.CompositionTypeError, match="no parameter 'z'"):
        @dd.composition
        def bad3(x: int) -> int:
            return f.inc(z=x)


def test_a_value_given_as_an_argument_is_a_constant_set_of_the_composition():
    @dd.composition
    def suffixed(x: str) -> str:
        return f.combine(x, "suffix")

    (const,) = suffixed.composition.ephemeral
    assert const.name == "combine_b" and const.value is not None
    assert dd.run(suffixed, "a-", engine="inline") == "a-suffix"


def test_a_constant_of_another_type_than_its_parameter_is_refused_where_it_is_written():
    with pytest.raises(dd.CompositionTypeError,
                       match=r"argument 'b' of 'combine': .*3.* str") as info:
        @dd.composition
        def bad(x: str) -> str:
            return f.combine(x, 3)
    assert info.value.span.line == bad_line(info)


def bad_line(info: pytest.ExceptionInfo[dd.CompositionTypeError]) -> int:
    """The line of the ``return`` in the composition that failed (its traceback's last
    frame in this file)."""
    return next(t.lineno + 1 for t in reversed(info.traceback)
                if t.path.name == "test_composition.py" and t.name == "bad")


def test_branching_on_a_set_is_explained():
    with pytest.raises(dd.CompositionTypeError, match="branch inside a compute function"):
        @dd.composition
        def bad(x: int) -> int:
            if x:
                return f.inc(x)
            return f.inc(x)


def test_returning_an_input_or_a_constant_is_rejected():
    with pytest.raises(dd.CompositionTypeError, match="unchanged"):
        @dd.composition
        def ident(x: int) -> int:
            return x
    with pytest.raises(dd.CompositionTypeError, match="returns int"):
        @dd.composition
        def const(x: int) -> int:
            return 3


def test_join_by_string_names_parameters_and_kinds():
    app = f.JOINS["left"].composition.applications[0]
    assert str(app.join) == "a left b"
    with pytest.raises(dd.CompositionTypeError, match="not a join"):
        @dd.composition
        def bad(a: list[dd.Item[str]], b: list[dd.Item[str]]) -> list[str]:
            return f.pair(dd.keyed(a), dd.keyed(b), by="a sideways b")


def test_join_over_each_inputs_is_rejected():
    with pytest.raises(dd.CompositionError, match="not a keyed input"):
        @dd.composition
        def bad(a: list[dd.Item[str]], b: list[dd.Item[str]]) -> list[str]:
            return f.pair(dd.each(a), dd.keyed(b), by="a inner b")


def test_nested_compositions_bring_their_functions_and_compositions():
    names = {c.name for c in f.nested_each.module.compositions}
    assert names == {"nested_each", "fan_in"}
    assert {fn.name for fn in f.nested_each.module.functions} == {"double", "total"}


def test_a_composition_called_outside_a_composition_runs():
    assert f.fan_in([1, 2]) == 6


def test_sharding_helpers_reject_non_sets():
    with pytest.raises(dd.CompositionTypeError):
        dd.each([1, 2, 3])


@pytest.mark.parametrize("body, use", [
    (lambda x: x.upper(), "'.upper'"),
    (lambda x: x[0], "an index"),
    (lambda x: len(x), "len()"),
    (lambda x: x * 2, "the operator *"),
    (lambda x: 1 + x, "the operator +"),
])
def test_an_undecorated_function_used_on_a_set_says_to_decorate_it(body, use):
    with pytest.raises(dd.CompositionTypeError) as caught:
        @dd.composition
        def c(xs: list[str]) -> list[str]:
            return body(dd.each(xs))
    assert f"set 'xs' is used as data ({use}) while the composition is defined" \
        in str(caught.value)
    assert "decorate it with @dd.compute" in str(caught.value)
    assert caught.value.span.file == __file__


def test_a_composition_annotated_with_a_result_that_returns_nothing_is_an_error():
    with pytest.raises(dd.CompositionTypeError, match="'twice' is annotated to return "
                                                      r"list\[int\] but returns nothing"):
        @dd.composition
        def twice(xs: list[int]) -> list[int]:
            f.double(dd.each(xs))

    @dd.composition
    def sink(xs: list[int]) -> None:  # nothing to return, and it says so
        f.double(dd.each(xs))

    assert sink.composition.outputs == ()
