"""The wire format: binary-safe msgpack, JSON with base64, typed per element."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dandelion.ir import DataType
from dandelion.items import Item
from dandelion.server.wire import WireError, decode_sets, dumps, encode_sets, loads

T = DataType.parse

items = st.builds(Item, st.binary(max_size=64), key=st.integers(-(2 ** 63), 2 ** 63 - 1),
                  name=st.text(max_size=8))


@given(st.lists(items, max_size=5), st.booleans())
def test_bytes_round_trip_through_both_encodings(values, binary):
    decls = {"b": T("set[bytes]")}
    data = loads(dumps(encode_sets({"b": tuple(values)}, decls, binary), binary),
                 "application/msgpack" if binary else "application/json")
    assert decode_sets(data, decls)["b"] == tuple(values)


def test_every_element_type_round_trips_as_json():
    decls = {"s": T("item[str]"), "i": T("item[int]"), "f": T("set[float]"),
             "b": T("item[bool]"), "j": T("item[json]"), "a": T("item[ndarray]")}
    arr = np.arange(6, dtype=np.int64).reshape(2, 3)
    sets = {"s": (Item("é"),), "i": (Item(-3),), "f": (Item(math.inf), Item(0.5)),
            "b": (Item(True),), "j": (Item({"value": [1]}),), "a": (Item(arr),)}
    back = decode_sets(loads(dumps(encode_sets(sets, decls, False), False), None), decls)
    assert back["s"] == sets["s"] and back["i"] == sets["i"] and back["b"] == sets["b"]
    assert [i.value for i in back["f"]] == [math.inf, 0.5]
    assert back["j"][0].value == {"value": [1]}
    assert (back["a"][0].value == arr).all()


@pytest.mark.parametrize("value, decl, message", [
    ([True], "set[int]", "expected an integer"),
    ([1.5], "set[int]", "expected an integer"),
    (["x"], "set[float]", "expected a number"),
    ([{"base64": "!!"}], "set[bytes]", "invalid base64"),
    ([{"value": 1, "key": "k"}], "set[int]", "key: expected a 64-bit integer, got a string"),
    ([{"value": 1, "key": 2**64}], "set[int]",
     r"key: expected a 64-bit integer, got 18446744073709551616, which is out of range"),
    ([{"value": 1, "name": 3}], "set[int]", "name: expected a string"),
    ([{"base64": "AAAA"}], "set[ndarray]", "not a valid ndarray"),
    ([1, 2], "item[int]", "exactly one item"),
    ({"a": 1}, "set[int]", "a set is a list"),
])
def test_bad_values_are_named(value, decl, message):
    with pytest.raises(WireError, match=message):
        decode_sets({"x": value}, {"x": T(decl)})
