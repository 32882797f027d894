"""The wire format: binary-safe msgpack, JSON with base64, typed per element."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dandelion.ir import DataType
from dandelion.items import Item
from dandelion.server.wire import (
    WireError,
    decode_sets,
    dumps,
    encode_sets,
    loads,
    pack_outputs,
)

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


UNTYPED = [b"\x00x", "é", -3, 0.5, math.inf, True, {"value": [1]}, [1, "a"], None,
           np.arange(6, dtype=np.int64).reshape(2, 3)]


@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
def test_an_untyped_item_arrives_as_what_it_was(binary):
    """Each item of an untyped set says its element type, so that an int is not read back
    as bytes (nor an array refused)."""
    decls = {"x": T("set")}
    sets = {"x": tuple(Item(v, key=i) for i, v in enumerate(UNTYPED))}
    wire = encode_sets(sets, decls, binary)
    assert [item["type"] for item in wire["x"]] == \
        ["bytes", "str", "int", "float", "float", "bool", "json", "json", "json", "ndarray"]
    back = decode_sets(loads(dumps(wire, binary), "application/msgpack" if binary else None),
                       decls)["x"]
    for item, want in zip(back, UNTYPED):
        if isinstance(want, np.ndarray):
            assert np.array_equal(item.value, want)
        else:
            assert item.value == want and type(item.value) is type(want)
    assert [item.key for item in back] == list(range(len(UNTYPED)))
    if binary:  # the response writer's own packing, byte for byte
        assert pack_outputs(sets, decls) == dumps({"outputs": wire}, True)


def test_an_untagged_untyped_value_is_bytes_if_it_can_be_else_itself():
    """As curl users write them: a string (or binary data) is bytes, as before ``type``
    existed; a value that cannot be bytes is the JSON value it is."""
    got = decode_sets({"x": ["ab", {"base64": "AAE="}, 3, [1], {"a": 1}, None]},
                      {"x": T("set")})["x"]
    assert [i.value for i in got] == [b"ab", b"\x00\x01", 3, [1], {"a": 1}, None]


@pytest.mark.parametrize("value, decl, message", [
    ([{"value": 1, "type": "integer"}], "set",
     r'x\[0\]\.type: expected one of bytes, str, int, float, bool, json, ndarray, got '
     r'"integer"'),
    ([{"value": 1, "type": 3}], "set", r"x\[0\]\.type: .*got an integer"),
    ([{"value": 1, "type": "any"}], "set", r'got "any"'),
    ([{"value": 1, "type": "str"}], "set[int]", r"x\[0\]\.type: the set is declared int, "
                                                r"not str"),
    ([{"value": "1", "type": "int"}], "set", r"x\[0\]\.value: expected an integer"),
])
def test_a_bad_type_is_named(value, decl, message):
    with pytest.raises(WireError, match=message):
        decode_sets({"x": value}, {"x": T(decl)}, "inputs")


def test_a_typed_item_may_repeat_its_declared_type():
    got = decode_sets({"x": [{"value": 2, "type": "int"}]}, {"x": T("set[int]")})
    assert got["x"][0].value == 2
