"""Functions with no annotations. One that never names numpy (no ``np.`` in its body) given
a numpy array: the sandbox decodes the array with numpy, so its zygote must have numpy
loaded although the function's code does not ask for it. Any value given to an untyped
function arrives as what it was, through a real server too (the wire says what an
untyped item is). Run as users run it: in-process, as a script, with ``dandelion run``,
with a client of a real ``dandelion serve`` and on a real Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import dandelion as dd
from tests.userpaths.conftest import PROGRAMS, dandelion
from tests.userpaths.programs import untyped

M = np.arange(12).reshape(3, 4)


def test_an_array_reaches_a_function_that_never_names_numpy(engine):
    assert np.array_equal(dd.run(untyped.gram, M, engine=engine, cache=False), M @ M.T)
    assert dd.run(untyped.width, M, engine=engine, cache=False) == 4
    assert dd.run(untyped.gram_width, M, engine=engine, cache=False) == 3


def test_arrays_and_plain_values_take_turns_on_one_function(engine):
    """The same function given an int, then an array, then an int again: each runs."""
    with dd.Runtime(engine=engine, cache=False) as rt:
        assert rt.run(untyped.scaled, 3, 2) == 6
        assert np.array_equal(rt.run(untyped.scaled, M, 2), M * 2)
        assert rt.run(untyped.scaled, 4, 2) == 8
        assert np.array_equal(rt.run(untyped.scaled, M, 3), M * 3)


def test_the_script_runs_as_written():
    out = subprocess.run([sys.executable, str(PROGRAMS / "untyped.py")], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str((M @ M.T).tolist()), "3"]


def test_dandelion_run_with_an_npy_file(tmp_path):
    """The composition declares its input an array (a file given to an untyped input is
    its bytes, docs/cli.rst); the function it calls still declares nothing."""
    np.save(tmp_path / "m.npy", M)
    out = dandelion("run", f"{PROGRAMS / 'untyped.py'}:gram_of", "-i",
                    f"m=@{tmp_path / 'm.npy'}", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == (M @ M.T).tolist()


#: a value of each element type
VALUES = [3, 2.5, True, "ab", b"xy", [1, 2], M]


def test_untyped_values_through_a_client_of_a_real_server(client):
    client.register(untyped.twice_of)
    for value in VALUES:
        got = client.invoke(untyped.twice_of, value)
        want = dd.run(untyped.twice_of, value, engine="inline", cache=False)
        if isinstance(value, np.ndarray):
            assert np.array_equal(got, want)
        else:
            assert got == want and type(got) is type(want), value


def test_an_array_to_a_function_that_never_names_numpy_through_a_real_server(client):
    client.register(untyped.gram)
    client.register(untyped.gram_width)
    assert np.array_equal(client.invoke(untyped.gram, M), M @ M.T)
    assert client.invoke(untyped.gram_width, M) == 3


@pytest.mark.ray
@pytest.mark.slow
def test_ray(ray_cluster):
    with dd.Runtime(backend="ray", cache=False) as rt:
        assert np.array_equal(rt.run(untyped.gram, M), M @ M.T)
        assert rt.run(untyped.gram_width, M) == 3
