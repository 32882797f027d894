"""An array of Python objects cannot cross a sandbox: every engine and the client refuse it
the same way, at the boundary, naming the input or the result."""

from __future__ import annotations

import numpy as np
import pytest

import dandelion as dd
from tests.userpaths.programs import arrays

OBJECTS = np.array([{"a": 1}, None], dtype=object)


def test_numeric_arrays_cross(engine):
    m = np.arange(6.0).reshape(2, 3)
    assert dd.run(arrays.total_of, m, engine=engine) == 15.0


def test_an_object_array_input_is_refused_on_every_engine(engine):
    with pytest.raises(dd.EncodingError, match="input 'm': an array of Python objects "
                                               r"\(dtype object\) cannot cross a sandbox"):
        dd.run(arrays.total_of, OBJECTS, engine=engine)


def test_an_object_array_result_fails_its_function_on_every_engine(engine):
    with pytest.raises(dd.FunctionError, match="compute function 'tags', its instance: "
                                               "result 'result' of 'tags': an array of Python "
                                               "objects") as e:
        dd.run(arrays.tags_of, 2, engine=engine)
    assert e.value.function == "tags"


def test_the_client_refuses_it_before_sending(client):
    client.register(arrays.total_of)
    assert client.invoke(arrays.total_of, np.ones(4)) == 4.0
    with pytest.raises(dd.EncodingError, match="input 'm': an array of Python objects"):
        client.invoke(arrays.total_of, OBJECTS)
