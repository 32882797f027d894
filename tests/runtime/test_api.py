"""dd.run and dd.Runtime: inputs, outputs, reserved words, futures, asyncio."""

from __future__ import annotations

import asyncio

import pytest

import dandelion as dd
from tests.conformance import funcs as f


def test_run_takes_inputs_by_position_or_name():
    assert dd.run(f.crossed, ["a"], b=["1"], engine="inline") == ["a1"]


def test_inputs_may_be_items_or_plain_values():
    assert dd.run(f.group_listing, [dd.Item(1, key=2), dd.Item(5)], engine="inline") == [
        "0:5", "2:1"]


@pytest.mark.parametrize("call, message", [
    (lambda: dd.run(f.doubles, engine="inline"), "missing input"),
    (lambda: dd.run(f.doubles, [1], xz=[1], engine="inline"), "no input 'xz'"),
    (lambda: dd.run(f.doubles, [1], xs=[1], engine="inline"), "given twice"),
    (lambda: dd.run(f.doubles, [1], [2], engine="inline"), "takes 1 input"),
    (lambda: dd.run(f.doubles, ["one"], engine="inline"), "str is not an instance of int"),
    (lambda: dd.run(f.doubles, 5, engine="inline"), "must be a list"),
])
def test_bad_inputs_raise_input_errors(call, message):
    with pytest.raises(dd.InputError, match=message):
        call()


def test_misspelled_input_gets_a_hint():
    with pytest.raises(dd.InputError) as info:
        dd.run(f.doubles, xx=[1], engine="inline")
    assert "did you mean 'xs'" in str(info.value)


def test_unknown_backend_and_engine_are_clear_errors():
    with pytest.raises(dd.BackendError, match="unknown backend 'nope'"):
        dd.Runtime(backend="nope")
    with pytest.raises(dd.BackendError, match="(?s)unknown engine 'warp'.*available"):
        dd.Runtime(engine="warp")
    with pytest.raises(dd.BackendError, match="lower-case identifier"):
        dd.Runtime(engine="../x")


@pytest.mark.parametrize("engine, option, suggestion", [
    ("process", "reuse_sandbox", "did you mean 'reuse_sandboxes'"),
    ("process", "nosuch", None),
    ("inline", "memory_limit", None),
])
def test_an_option_the_engine_does_not_take_is_refused_before_it_starts(
        engine, option, suggestion):
    """A misspelt engine option used to be kept and never read: nothing turned on, no word."""
    with pytest.raises(dd.BackendError, match=f"the {engine} engine takes no option '{option}'"
                       ) as info:
        dd.Runtime(engine=engine, engine_options={option: True})
    assert info.value.hint == (suggestion and suggestion + "?")
    with dd.Runtime(engine="process", workers=1,
                    engine_options={"memory_limit": 256 << 20}) as rt:  # a real one works
        assert rt.run(f.doubles, xs=[1, 2]) == [2, 4]


def test_submit_returns_futures_and_run_async_awaits():
    with dd.Runtime(engine="inline", workers=2) as rt:
        fut = rt.submit(f.doubles, [1, 2])
        assert fut.result(timeout=30) == [2, 4]
        assert asyncio.run(rt.run_async(f.fan_in, [1, 2])) == 6


def test_a_closed_runtime_refuses_to_run():
    rt = dd.Runtime(engine="inline", workers=1)
    rt.close()
    with pytest.raises(dd.BackendError, match="closed"):
        rt.run(f.doubles, [1])


def test_a_compute_function_runs_as_its_call_alone():
    # (it used to be refused, "wrap it in a @dd.composition"; a worker already ran a
    # registered function alone, and dd.run now runs it the same way)
    assert dd.run(f.double, 4, engine="inline") == f.double(4)


def test_what_is_neither_a_composition_nor_a_function_is_refused():
    with pytest.raises(dd.CompositionTypeError, match="cannot run int: expected a "):
        dd.run(3, engine="inline")


def test_a_module_of_ir_runs_when_its_artifacts_come_along():
    prog = dd.Program.from_module(f.fan_in.module, "fan_in", f.fan_in.artifacts)
    assert dd.run(prog, [1, 2, 3], engine="inline") == 12


def test_missing_code_is_reported_not_crashed():
    prog = dd.Program.from_module(f.fan_in.module, "fan_in", {})
    with pytest.raises(dd.BackendError, match="no code loaded"):
        dd.run(prog, [1], engine="inline")


@dd.compute
def _scaled(x: int, factor: int = 2) -> int:
    return x * factor


def test_a_default_in_the_signature_applies_where_the_input_is_left_out():
    """As in a Python call: for the function run alone and in a composition that does not
    pass it (tests/userpaths/test_defaults.py runs it through every entry point)."""
    assert dd.run(_scaled, 3, 5, engine="inline") == 15
    assert dd.run(_scaled, 3, engine="inline") == 3 * _scaled.fn.__defaults__[0]

    @dd.composition
    def uses_default(x: int) -> int:
        return _scaled(x)

    assert dd.run(uses_default, 3, engine="inline") == 3 * _scaled.fn.__defaults__[0]
