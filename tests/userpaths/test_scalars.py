"""numpy scalars where Python scalars are declared: a reduction's ``np.int64`` is an
``int`` result, on every engine, through a real server and on a real Ray cluster, and
every engine returns the same Python values (and keys the cache alike)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import dandelion as dd
from tests.userpaths.programs import scalars

M = np.arange(12).reshape(3, 4)
#: function, its result for M: of exactly these Python types
EXPECTED = [
    (scalars.total, 66),
    (scalars.mean, 5.5),
    (scalars.any_negative, False),
    (scalars.summary, {"max": 11, "mean": 5.5, "shape": [3, 4]}),
    (scalars.extremes, [0, 11]),
    (scalars.untyped_total, 66),
]


def _same(got, want):
    """Equal, and of the same Python types all the way down (no numpy scalar left)."""
    assert got == want and type(got) is type(want), (got, want)
    if isinstance(want, dict):
        for k in want:
            _same(got[k], want[k])
    elif isinstance(want, list):
        for g, w in zip(got, want):
            _same(g, w)


@pytest.mark.parametrize(("function", "want"), EXPECTED, ids=[f.name for f, _ in EXPECTED])
def test_a_numpy_scalar_result_is_the_python_value_it_stands_for(engine, function, want):
    _same(dd.run(function, M, engine=engine, cache=False), want)


def test_numpy_scalar_inputs_cross_as_python_scalars(engine):
    _same(dd.run(scalars.inc, np.int64(3), engine=engine, cache=False), 4)
    _same(dd.run(scalars.inc, np.int32(3), engine=engine, cache=False), 4)
    _same(dd.run(scalars.doubled_entries, {"n": np.int64(2)}, engine=engine, cache=False),
          {"n": 4})


def test_a_numpy_scalar_and_its_python_value_are_one_cache_entry(engine, tmp_path, caplog):
    """The function gets the same int either way, so the second run is served (it prints
    nothing)."""
    caplog.set_level(logging.INFO, logger="dandelion.function")
    with dd.Runtime(engine=engine, cache=tmp_path / "cache") as rt:
        _same(rt.run(scalars.announced, 3), 4)
        _same(rt.run(scalars.announced, np.int64(3)), 4)
        _same(rt.run(scalars.announced, np.int64(4)), 5)
    assert [r.getMessage().split("] ")[-1] for r in caplog.records
            if r.name == "dandelion.function"] == ["computing 3", "computing 4"]


def test_through_a_client_of_a_real_server(client):
    for function, want in EXPECTED:
        client.register(function)
        _same(client.invoke(function, M), want)
    client.register(scalars.inc)
    client.register(scalars.doubled_entries)  # numpy scalars given, inside a document too
    _same(client.invoke(scalars.inc, np.int64(3)), 4)
    _same(client.invoke(scalars.doubled_entries, {"n": np.int64(2), "t": (1,)}),
          {"n": 4, "t": [1, 1]})
    client.register(scalars.report)
    got = client.invoke(scalars.report, M)
    _same(list(got), [EXPECTED[3][1], 66])


@pytest.mark.ray
@pytest.mark.slow
def test_ray(ray_cluster):
    with dd.Runtime(backend="ray", cache=False) as rt:
        for function, want in EXPECTED:
            _same(rt.run(function, M), want)
