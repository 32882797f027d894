"""A result that cannot cross as declared fails its function with an error that says what
to do instead, on every engine; the hint about raw bytes is for inputs only."""

from __future__ import annotations

import pytest

import dandelion as dd
from tests.userpaths.programs import returns


def test_a_set_result_says_to_return_a_list(engine):
    with pytest.raises(dd.DandelionError, match="a set cannot cross a sandbox boundary") as e:
        dd.run(returns.unique, [1, 2, 2], engine=engine, cache=False)
    assert "give or return a list (sorted(...))" in e.value.hint


def test_bytes_for_a_str_result_name_the_result_without_the_input_hint(engine):
    with pytest.raises(dd.FunctionError, match="result 'result' of 'shout': bytes is not an "
                                               "instance of str") as e:
        dd.run(returns.shout, "hi", engine=engine, cache=False)
    assert e.value.hint is None or "typed parameter" not in e.value.hint


def test_bytes_for_a_str_input_keep_the_input_hint(engine):
    with pytest.raises(dd.InputError, match="bytes is not an instance of str") as e:
        dd.run(returns.length, b"abc", engine=engine, cache=False)
    assert e.value.hint.startswith("bytes reach a function's typed parameter as they are")


class Point:
    """A plain class: no element type, no encoding."""


def test_an_untyped_input_of_no_element_type_is_refused_before_the_run(engine):
    """inline used to hand it to the function, process to fail the instance: now both
    refuse it where it is given, naming the input."""
    with pytest.raises(dd.EncodingError, match="input 'x': a Point cannot cross a sandbox "
                                               "boundary untyped"):
        dd.run(returns.untyped_length, Point(), engine=engine, cache=False)
