"""The context layout: what the worker writes is what a sandbox reads, and back."""

from __future__ import annotations

import numpy as np
import pytest

from dandelion.backends._sandbox_layout import ContextFull, Writer, decode_view, encode_parts
from dandelion.backends._sandbox_memory import SharedContext
from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType as E
from dandelion.items import Item


def _items(values, element):
    return [(*encode_parts(v, element), i, f"n{i}") for i, v in enumerate(values)]


def test_inputs_round_trip_with_keys_names_and_types():
    buf = bytearray(1 << 16)
    sets = [("a", _items([1, -2], E.INT)), ("b", _items(["x"], E.ANY)), ("c", [])]
    Writer(buf).write_inputs(len(buf), sets, [("r", E.BYTES)])
    got = Writer(buf).inputs()
    assert [[(decode_view(d, E.INT, True), k, n) for d, k, n, _ in got[0]]] == [
        [(1, 0, "n0"), (-2, 1, "n1")]]
    (data, key, name, code), = got[1]
    assert decode_view(data, E.STR, True) == "x" and code == 2
    assert got[2] == []


def test_an_ndarray_input_is_a_view_of_the_context_not_a_copy():
    buf = bytearray(1 << 20)
    m = np.arange(12, dtype=np.int64).reshape(3, 4)
    Writer(buf).write_inputs(len(buf), [("m", _items([m], E.NDARRAY))], [])
    (data, *_), = Writer(buf).inputs()[0]
    view = decode_view(data, E.NDARRAY, copy=False)
    assert np.array_equal(view, m)
    assert np.shares_memory(view, np.frombuffer(buf, dtype=np.uint8))


def test_outputs_appended_by_a_sandbox_are_read_back_in_order():
    buf = bytearray(1 << 16)
    Writer(buf).write_inputs(len(buf), [], [("x", E.INT), ("y", E.BYTES)])
    w = Writer(buf)
    w.add_output(1, *encode_parts(b"hi", E.BYTES), 7, "h")
    w.add_output(0, *encode_parts(5, E.INT), 0, "")
    w.add_output(1, *encode_parts(b"yo", E.BYTES), 8, "")
    out = Writer(buf).outputs(2, len(buf))
    assert [decode_view(d, E.INT, True) for d, *_ in out[0]] == [5]
    assert [(bytes(d), k, n) for d, k, n, _ in out[1]] == [(b"hi", 7, "h"), (b"yo", 8, "")]


def test_an_output_that_does_not_fit_is_refused():
    buf = bytearray(4096)
    Writer(buf).write_inputs(len(buf), [], [("x", E.BYTES)])
    with pytest.raises(ContextFull):
        Writer(buf).add_output(0, *encode_parts(bytes(8192), E.BYTES), 0, "")


def test_outputs_pointing_outside_the_context_are_rejected():
    buf = bytearray(4096)
    Writer(buf).write_inputs(len(buf), [], [("x", E.BYTES)])
    Writer(buf).add_output(0, *encode_parts(b"ok", E.BYTES), 0, "")
    buf[len(buf) - 48 + 8:len(buf) - 48 + 16] = (10 ** 9).to_bytes(8, "little")  # data_len
    with pytest.raises(EncodingError, match="outside the context"):
        Writer(buf).outputs(1, len(buf))


def test_a_wiped_context_reads_as_zeros_and_is_reused():
    ctx = SharedContext()
    ctx.place([[Item(b"secret" * 100)]])
    ctx.layout([("x", E.BYTES)], [("r", E.BYTES)], 1 << 20)
    assert b"secret" in ctx.mm[:ctx.capacity]
    ctx.mm[ctx.capacity - 10:ctx.capacity] = b"scribbled!"  # as a sandbox could
    ctx.wipe()
    assert ctx.mm[:ctx.size] == bytes(ctx.size)
    ctx.close()
