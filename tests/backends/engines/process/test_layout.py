"""The context layout: what the worker writes is what a sandbox reads, and back."""

from __future__ import annotations

import numpy as np
import pytest

from dandelion.backends.engines.process.layout import (
    ELEMENT_CODES,
    ContextFull,
    add_outputs,
    read_items,
    write_inputs,
)
from dandelion.backends.engines.process.memory import SharedContext
from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType as E
from dandelion.items import Item


def _items(*values):
    return [Item(v, i, f"n{i}") for i, v in enumerate(values)]


def _codes(*elements):
    return bytes(ELEMENT_CODES[e] for e in elements)


def test_inputs_round_trip_with_keys_names_and_types():
    buf = bytearray(1 << 16)
    sets = [("a", 3, _items(1, -2)), ("b", 0, _items("x")), ("c", 1, []),
            ("d", 0, _items({"k": [1, 2]}, 2.5, True, b"\0raw", bytearray(b"ba"))),
            ("e", 6, _items([1, "two"])), ("f", 4, _items(3))]
    capacity = write_inputs(buf, sets, [("r", 1)], 1024)
    assert capacity % 4096 == 0 and capacity <= len(buf)
    got = read_items(buf, capacity, False, _codes(E.INT, E.ANY, E.BYTES, E.ANY, E.JSON,
                                                  E.FLOAT), True)
    assert got[0] == (Item(1, 0, "n0"), Item(-2, 1, "n1"))
    assert got[1] == (Item("x", 0, "n0"),)  # an untyped str travels as a str
    assert got[2] == ()
    assert [i.value for i in got[3]] == [{"k": [1, 2]}, 2.5, True, b"\0raw", b"ba"]
    assert got[4][0].value == [1, "two"]
    assert got[5][0].value == 3.0 and isinstance(got[5][0].value, float)


def test_a_context_too_small_for_the_inputs_asks_for_more_and_is_left_untouched():
    buf = bytearray(4096)
    needed = write_inputs(buf, [("a", 1, _items(bytes(10_000)))], [], 0)
    assert needed == -12288 and buf == bytearray(4096)


@pytest.mark.parametrize(("code", "value", "why"), [
    (3, 2 ** 63, "64 bits"), (1, "text", "expected bytes, got str"),
    (3, True, "expected int, got bool"), (5, 1, "expected bool, got int"),
    (6, {1j}, "not JSON serializable"), (0, object(), "cannot cross a sandbox boundary"),
    (7, [1, 2], "expected a numpy array"),
])
def test_values_that_do_not_fit_their_element_type_are_refused_with_the_reason(code, value,
                                                                                 why):
    buf = bytearray(1 << 16)
    with pytest.raises(EncodingError, match=why):
        write_inputs(buf, [("a", code, [Item(value)])], [], 0)
    capacity = write_inputs(buf, [], [("r", code)], 4096)
    with pytest.raises(EncodingError, match=why):
        add_outputs(buf, 0, code, [Item(value)])
    assert read_items(buf, capacity, True, bytes([code]), True) == ((),)


def test_an_ndarray_input_is_a_view_of_the_context_not_a_copy():
    buf = bytearray(1 << 20)
    m = np.arange(12, dtype=np.int64).reshape(3, 4)
    capacity = write_inputs(buf, [("m", 7, _items(m.T))], [], 0)  # not C-contiguous
    (view,), = read_items(buf, capacity, False, _codes(E.NDARRAY), False)
    assert np.array_equal(view.value, m.T)
    assert np.shares_memory(view.value, np.frombuffer(buf, dtype=np.uint8))
    (copy,), = read_items(buf, capacity, False, _codes(E.NDARRAY), True)
    assert np.array_equal(copy.value, m.T) and not np.shares_memory(copy.value, view.value)


def test_outputs_appended_by_a_sandbox_are_read_back_in_order():
    buf = bytearray(1 << 16)
    capacity = write_inputs(buf, [], [("x", 3), ("y", 1)], 4096)
    add_outputs(buf, 1, 1, [Item(b"hi", 7, "h")])
    add_outputs(buf, 0, 3, [Item(5)])
    add_outputs(buf, 1, 1, [Item(b"yo", 8)])
    out = read_items(buf, capacity, True, _codes(E.INT, E.BYTES), True)
    assert out == ((Item(5),), (Item(b"hi", 7, "h"), Item(b"yo", 8)))


def test_an_output_of_another_element_type_than_declared_is_rejected():
    buf = bytearray(1 << 16)
    capacity = write_inputs(buf, [], [("x", 0)], 4096)
    add_outputs(buf, 0, 0, [Item("five")])  # untyped: travels as str
    with pytest.raises(EncodingError, match="declared int but the sandbox returned str"):
        read_items(buf, capacity, True, _codes(E.INT), True)


def test_an_output_that_does_not_fit_is_refused_and_those_before_it_stay():
    buf = bytearray(8192)
    capacity = write_inputs(buf, [], [("x", 1)], 0)
    with pytest.raises(ContextFull) as e:
        add_outputs(buf, 0, 1, [Item(b"small"), Item(bytes(8192))])
    assert e.value.needed > e.value.left
    assert read_items(buf, capacity, True, _codes(E.BYTES), True) == ((Item(b"small"),),)


def test_outputs_pointing_outside_the_context_are_rejected():
    buf = bytearray(4096)
    capacity = write_inputs(buf, [], [("x", 1)], 1024)
    assert capacity == 4096
    add_outputs(buf, 0, 1, [Item(b"ok")])
    buf[len(buf) - 48 + 8:len(buf) - 48 + 16] = (10 ** 9).to_bytes(8, "little")  # data_len
    with pytest.raises(EncodingError, match="outside the context"):
        read_items(buf, capacity, True, _codes(E.BYTES), True)


def test_a_forged_header_item_count_or_result_index_is_rejected():
    buf = bytearray(4096)
    capacity = write_inputs(buf, [], [("x", 1)], 1024)
    add_outputs(buf, 0, 1, [Item(b"ok")])
    buf[len(buf) - 48 + 40:len(buf) - 48 + 44] = (5).to_bytes(4, "little")  # set
    with pytest.raises(EncodingError, match="names result 5, but the function declares 1"):
        read_items(buf, capacity, True, _codes(E.BYTES), True)
    buf[44:48] = (10 ** 6).to_bytes(4, "little")  # n_out_items
    with pytest.raises(EncodingError, match="more than fit"):
        read_items(buf, capacity, True, _codes(E.BYTES), True)
    buf[0:8] = b"forged!\0"
    with pytest.raises(EncodingError, match="overwrote the context header"):
        read_items(buf, capacity, True, _codes(E.BYTES), True)


@pytest.mark.parametrize("in_place", [True, False], ids=["zeroed in place", "punched out"])
def test_a_wiped_context_reads_as_zeros_and_is_reused(monkeypatch, in_place):
    from dandelion.backends.engines.process import memory

    if not in_place:  # more written than a wipe zeroes in place: the file is punched out
        monkeypatch.setattr(memory, "WIPE_IN_PLACE", 4096)
    ctx = SharedContext()
    ctx.place([[Item(b"secret" * 2000)]])
    ctx.layout([("x", 1)], [("r", 1)], b"\x01", 1 << 20)
    assert b"secret" in ctx.mm[:ctx.capacity]
    ctx.mm[ctx.capacity - 10:ctx.capacity] = b"scribbled!"  # as a sandbox could
    ctx.wipe()
    assert ctx.mm[:ctx.size] == bytes(ctx.size)
    ctx.close()


def test_each_input_is_encoded_once_and_read_back_whole():
    from dandelion.backends.engines.process import _sandboxc, layout

    calls = []

    def counting(declared, value):
        calls.append(value)
        return layout._encode(declared, value)

    values = [{"a": [1, 2]}, np.arange(6).reshape(2, 3), {"b": None}]
    buf = bytearray(1 << 16)
    capacity = _sandboxc.write_inputs(buf, [("xs", 0, [Item(v) for v in values])],
                                      [("out", 6)], 1024, counting)
    assert capacity > 0
    assert len(calls) == len(values)  # the sizing pass's encodings are the ones written
    (xs,), = [read_items(buf, capacity, False, None, True)]
    assert xs[0].value == values[0] and xs[2].value == values[2]
    assert np.array_equal(xs[1].value, values[1])


def test_an_ndarray_subclass_crosses_as_the_array_it_holds():
    class Tagged(np.ndarray):  # as np.matrix, np.memmap or a masked array are
        pass

    m = np.arange(4).reshape(2, 2).view(Tagged)
    buf = bytearray(1 << 16)
    capacity = write_inputs(buf, [("m", ELEMENT_CODES[E.NDARRAY], [Item(m)])],
                            [("out", ELEMENT_CODES[E.NDARRAY])], 1024)
    (item,), = read_items(buf, capacity, False, None, True)
    assert type(item.value) is np.ndarray and np.array_equal(item.value, np.asarray(m))
