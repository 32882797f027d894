"""A hit serves what the same runtime computes without the cache, for inputs that encode
the same but are different Python values (a tuple and a list, ``np.float64`` and
``float``, a Fortran-ordered array and its C-ordered copy)."""

from __future__ import annotations

import typing

import numpy as np
import pytest

import dandelion as dd


@dd.compute
def show(x: typing.Any) -> str:
    return repr(x)


@dd.compute
def layout(x: np.ndarray) -> str:
    return repr((x.flags["C_CONTIGUOUS"], x.ravel("K").tolist()))


CASES = [
    (show, [1, 2], (1, 2)),
    (show, [1.0], [np.float64(1.0)]),
    (show, b"ab", bytearray(b"ab")),
    (layout, np.arange(4).reshape(2, 2), np.asfortranarray(np.arange(4).reshape(2, 2))),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_an_input_that_encodes_as_another_is_served_what_it_computes_on_inline(case):
    fn, first, second = CASES[case]
    with dd.Runtime(engine="inline", cache="memory") as rt, \
            dd.Runtime(engine="inline", cache=False) as uncached:
        rt.run(fn, first)
        assert rt.run(fn, second) == uncached.run(fn, second)


@dd.compute
def pair(x: float) -> typing.Any:
    return (x, np.float64(x) * 2)


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_an_output_is_the_same_computed_served_and_uncached(engine):
    # a tuple of an int and a numpy scalar, returned untyped: a list of floats everywhere
    with dd.Runtime(engine=engine, workers=1, cache="memory") as rt, \
            dd.Runtime(engine=engine, workers=1, cache=False) as uncached:
        got = [rt.run(pair, 3), rt.run(pair, 3), uncached.run(pair, 3)]
    assert got == [[3.0, 6.0]] * 3 and all(type(g[1]) is float for g in got)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_on_process_such_inputs_are_the_same_input(case):
    fn, first, second = CASES[case]
    with dd.Runtime(engine="process", workers=1, cache="memory") as rt, \
            dd.Runtime(engine="process", workers=1, cache=False) as uncached:
        rt.run(fn, first)
        assert rt.run(fn, second) == uncached.run(fn, second)


@pytest.mark.ray
@pytest.mark.parametrize("case", [0, 3])
def test_on_ray_without_isolation_such_inputs_are_served_what_they_compute(
        case, ray_cluster, redis_url):
    # plain Ray tasks run the inline engine on the nodes (their inputs travel encoded),
    # sharing entries through Redis
    from dandelion.cache import RedisStore

    fn, first, second = CASES[case]
    store = RedisStore(redis_url, prefix=f"test-inline-{case}-{id(fn)}:")
    store.clear()
    with dd.Runtime(backend="ray", isolation="none", cache=store) as rt, \
            dd.Runtime(engine="process", workers=1, cache=False) as uncached:
        rt.run(fn, first)
        assert rt.run(fn, second) == uncached.run(fn, second)
