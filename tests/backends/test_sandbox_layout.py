"""The context layout: what the worker writes is what a sandbox reads, and back."""

from __future__ import annotations

import numpy as np
import pytest

from dandelion.backends._sandbox_layout import (
    ELEMENT_CODES,
    ContextFull,
    add_output,
    encodable,
    read_items,
    write_inputs,
)
from dandelion.backends._sandbox_memory import SharedContext
from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType as E
from dandelion.items import Item


def _items(values, element):
    return [(*encodable(v, element), i, f"n{i}") for i, v in enumerate(values)]


def _codes(*elements):
    return bytes(ELEMENT_CODES[e] for e in elements)


def test_inputs_round_trip_with_keys_names_and_types():
    buf = bytearray(1 << 16)
    sets = [("a", _items([1, -2], E.INT)), ("b", _items(["x"], E.ANY)), ("c", []),
            ("d", _items([{"k": [1, 2]}, 2.5, True, b"\0raw"], E.ANY))]
    capacity = write_inputs(buf, sets, [("r", 1)], 1024)
    assert capacity % 4096 == 0 and capacity <= len(buf)
    got = read_items(buf, capacity, False, _codes(E.INT, E.ANY, E.ANY, E.ANY), True)
    assert got[0] == [(1, 0, "n0"), (-2, 1, "n1")]
    assert got[1] == [("x", 0, "n0")]  # an untyped str travels as a str
    assert got[2] == []
    assert [v for v, *_ in got[3]] == [{"k": [1, 2]}, 2.5, True, b"\0raw"]


def test_a_context_too_small_for_the_inputs_asks_for_more_and_is_left_untouched():
    buf = bytearray(4096)
    needed = write_inputs(buf, [("a", _items([bytes(10_000)], E.BYTES))], [], 0)
    assert needed == -12288 and buf == bytearray(4096)


def test_values_that_do_not_fit_their_element_type_are_refused_with_the_reason():
    buf = bytearray(1 << 16)
    with pytest.raises(EncodingError, match="64 bits"):
        write_inputs(buf, [("a", [(3, 2 ** 63, 0, "")])], [], 0)
    with pytest.raises(EncodingError, match="expected bytes, got str"):
        write_inputs(buf, [("a", [(1, "text", 0, "")])], [], 0)


def test_an_ndarray_input_is_a_view_of_the_context_not_a_copy():
    buf = bytearray(1 << 20)
    m = np.arange(12, dtype=np.int64).reshape(3, 4)
    capacity = write_inputs(buf, [("m", _items([m], E.NDARRAY))], [], 0)
    (view, *_), = read_items(buf, capacity, False, _codes(E.NDARRAY), False)[0]
    assert np.array_equal(view, m)
    assert np.shares_memory(view, np.frombuffer(buf, dtype=np.uint8))
    (copy, *_), = read_items(buf, capacity, False, _codes(E.NDARRAY), True)[0]
    assert np.array_equal(copy, m) and not np.shares_memory(copy, view)


def test_outputs_appended_by_a_sandbox_are_read_back_in_order():
    buf = bytearray(1 << 16)
    capacity = write_inputs(buf, [], [("x", 3), ("y", 1)], 4096)
    add_output(buf, 1, 1, b"hi", 7, "h")
    add_output(buf, 0, 3, 5, 0, "")
    add_output(buf, 1, 1, b"yo", 8, "")
    out = read_items(buf, capacity, True, _codes(E.INT, E.BYTES), True)
    assert out == [[(5, 0, "")], [(b"hi", 7, "h"), (b"yo", 8, "")]]


def test_an_output_of_another_element_type_than_declared_is_rejected():
    buf = bytearray(1 << 16)
    capacity = write_inputs(buf, [], [("x", 3)], 4096)
    add_output(buf, 0, 2, "five", 0, "")
    with pytest.raises(EncodingError, match="declared int but the sandbox returned str"):
        read_items(buf, capacity, True, _codes(E.INT), True)


def test_an_output_that_does_not_fit_is_refused():
    buf = bytearray(4096)
    write_inputs(buf, [], [("x", 1)], 0)
    with pytest.raises(ContextFull):
        add_output(buf, 0, 1, bytes(8192), 0, "")


def test_outputs_pointing_outside_the_context_are_rejected():
    buf = bytearray(4096)
    capacity = write_inputs(buf, [], [("x", 1)], 1024)
    assert capacity == 4096
    add_output(buf, 0, 1, b"ok", 0, "")
    buf[len(buf) - 48 + 8:len(buf) - 48 + 16] = (10 ** 9).to_bytes(8, "little")  # data_len
    with pytest.raises(EncodingError, match="outside the context"):
        read_items(buf, capacity, True, _codes(E.BYTES), True)


def test_a_forged_header_or_item_count_is_rejected():
    buf = bytearray(4096)
    capacity = write_inputs(buf, [], [("x", 1)], 1024)
    buf[44:48] = (10 ** 6).to_bytes(4, "little")  # n_out_items
    with pytest.raises(EncodingError, match="more than fit"):
        read_items(buf, capacity, True, _codes(E.BYTES), True)
    buf[0:8] = b"forged!\0"
    with pytest.raises(EncodingError, match="overwrote the context header"):
        read_items(buf, capacity, True, _codes(E.BYTES), True)


def test_a_wiped_context_reads_as_zeros_and_is_reused():
    ctx = SharedContext()
    ctx.place([[Item(b"secret" * 100)]])
    ctx.layout([("x", E.BYTES)], [("r", E.BYTES)], 1 << 20)
    assert b"secret" in ctx.mm[:ctx.capacity]
    ctx.mm[ctx.capacity - 10:ctx.capacity] = b"scribbled!"  # as a sandbox could
    ctx.wipe()
    assert ctx.mm[:ctx.size] == bytes(ctx.size)
    ctx.close()
