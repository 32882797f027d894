from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dandelion.codec import MAX_JSON_DEPTH, decode, encode
from dandelion.errors import EncodingError
from dandelion.ir import ElementType as E


@given(st.integers(min_value=-2**63, max_value=2**63 - 1))
def test_int64_round_trip(n):
    assert decode(encode(n, E.INT), E.INT) == n


@given(st.floats(allow_nan=False))
def test_float_round_trip(x):
    assert decode(encode(x, E.FLOAT), E.FLOAT) == x


@given(st.text())
def test_str_round_trip(s):
    assert decode(encode(s, E.STR), E.STR) == s


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=10))
def test_json_round_trip(doc):
    assert decode(encode(doc, E.JSON), E.JSON) == doc


def test_ndarray_round_trip_without_pickles():
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert (decode(encode(a, E.NDARRAY), E.NDARRAY) == a).all()
    with pytest.raises(EncodingError):
        encode(np.array([object()]), E.NDARRAY)


@pytest.mark.parametrize("value, element, why", [
    (2**63, E.INT, "64 bits"),
    ("1", E.INT, "expected int"),
    (True, E.INT, "expected int"),
    (1, E.BOOL, "expected bool"),
    ({1j}, E.JSON, "not JSON serializable"),
    (math.nan, E.JSON, "Out of range"),
    ("x", E.BYTES, "expected bytes"),
    (3, E.ANY, "untyped"),
])
def test_values_that_cannot_be_encoded_say_why(value, element, why):
    with pytest.raises(EncodingError, match=why):
        encode(value, element)


@pytest.mark.parametrize("data, element", [(b"abc", E.INT), (b"\x02", E.BOOL),
                                           (b"\xff", E.STR), (b"{", E.JSON)])
def test_invalid_bytes_fail_to_decode(data, element):
    with pytest.raises(EncodingError):
        decode(data, element)


def nested(depth: int, inner: object = None) -> object:
    """``depth`` lists (or, alternately, objects) around ``inner``."""
    value = inner
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_json_nested_past_the_limit_is_refused_at_any_depth(depth):
    with pytest.raises(EncodingError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
        encode(nested(depth), E.JSON)


def test_json_nested_up_to_the_limit_round_trips():
    doc = nested(MAX_JSON_DEPTH, [1, 2])  # the innermost list is one level more
    with pytest.raises(EncodingError):
        encode(doc, E.JSON)
    doc = nested(MAX_JSON_DEPTH - 1, [1, 2])
    assert decode(encode(doc, E.JSON), E.JSON) == doc


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_json_bytes_nested_past_the_limit_fail_to_decode(depth):
    with pytest.raises(EncodingError, match="nested"):
        decode(b"[" * depth + b"]" * depth, E.JSON)


def test_a_known_npy_header_still_checks_its_data_and_a_bad_one_fails_every_time():
    import io

    from dandelion.codec import decode_npy

    buf = io.BytesIO()
    np.save(buf, np.arange(4, dtype=np.int64))
    data = buf.getvalue()
    for _ in range(2):  # the second time its header is one read before
        assert decode_npy(memoryview(data), False).tolist() == [0, 1, 2, 3]
        with pytest.raises(EncodingError, match="shorter than its shape"):
            decode_npy(memoryview(data[:-8]), False)
        bad = data.replace(b"'<i8'", b"'|O8'")
        with pytest.raises(EncodingError, match="Python objects"):
            decode_npy(memoryview(bad), True)


def test_a_long_npy_header_is_read_like_a_short_one():
    import io

    from dandelion.codec import decode_npy

    fields = [(f"field_with_a_long_name_{i}", "<i2") for i in range(40)]  # a long descr
    a = np.zeros(3, dtype=fields)
    a["field_with_a_long_name_7"] = [1, 2, 3]
    buf = io.BytesIO()
    np.save(buf, a)
    assert int.from_bytes(buf.getvalue()[8:10], "little") > 512
    back = decode_npy(memoryview(buf.getvalue()), True)
    assert back.dtype == a.dtype and back["field_with_a_long_name_7"].tolist() == [1, 2, 3]


def test_a_numpy_half_imported_by_another_thread_is_taken_for_no_numpy() -> None:
    """While one thread imports numpy, ``sys.modules`` holds a numpy without ``ndarray`` yet
    (a Ray node worker unpickles one function, importing numpy, while it reads another's
    types and keys its inputs): reading views, keying and running a function then work as
    without numpy, instead of failing with "partially initialized module 'numpy' has no
    attribute 'ndarray'" (the Ray test of the user programs failed so)."""
    program = textwrap.dedent("""
        import sys, types
        sys.modules["numpy"] = types.ModuleType("numpy")  # as an import in progress leaves it
        import dandelion as dd
        from dandelion.codec import ndarray_class

        SCALE = 2.0

        @dd.compute
        def scaled(values: list[float]) -> list[float]:
            return [v * SCALE for v in values]

        assert ndarray_class() is None
        with dd.Runtime(engine="inline") as rt:
            print(rt.run(scaled, [1.0, 2.5]), rt.run(scaled, [1.0, 2.5]))
        del sys.modules["numpy"]
        import numpy
        assert ndarray_class() is numpy.ndarray
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[2.0,", "5.0]", "[2.0,", "5.0]"], done.stdout
