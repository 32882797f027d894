"""The context layout: what the worker writes is what a sandbox reads, and back."""

from __future__ import annotations

import re

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

    values = [{"a": [1, 2]}, np.arange(6).reshape(3, 2).T, {"b": None}]  # (not plain: Python)
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


PLAIN = [np.arange(16, dtype=np.int64).reshape(4, 4), np.zeros((0, 3)), np.array(5),
         np.array([True, False]), np.arange(6, dtype=np.float32),
         np.arange(6, dtype=np.complex64).reshape(1, 2, 3), np.ones((1,) * 12, np.uint8)]


class _Sub(np.ndarray):  # as np.matrix, np.memmap or a masked array are
    pass


NOT_PLAIN = [np.arange(12.0).reshape(3, 4).T, np.arange(4).astype("datetime64[ns]"),
             np.arange(3, dtype=">i4"), np.array(["ab", "c"]), np.array([b"ab", b"c"]),
             np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]), np.arange(4).view(_Sub)]


def _counting(calls, function):
    def counted(code, value):
        calls.append(code)
        return function(code, value)
    return counted


@pytest.mark.parametrize("value", PLAIN + NOT_PLAIN, ids=lambda v: f"{v.dtype}{v.shape}")
def test_a_plain_ndarray_crosses_in_c_as_the_codec_encodes_it(value):
    """A plain array (exactly ``ndarray``, C order, a plain dtype) is encoded and decoded in
    C, without the Python encoder or decoder, into the very bytes :func:`codec.encode`
    writes; anything else is encoded by the general path, with the same bytes (and read by
    it where its bytes are not those of a plain array)."""
    from dandelion.backends.engines.process import _sandboxc, layout
    from dandelion.codec import encode

    plain = any(value is p for p in PLAIN)
    encoded, decoded = [], []
    buf = bytearray(1 << 16)
    capacity = _sandboxc.write_inputs(buf, [("m", 7, [Item(value)])], [("r", 7)], 8192,
                                      _counting(encoded, layout._encode))
    (item,), = _sandboxc.read_items(buf, capacity, False, None,
                                    _counting(decoded, layout._decode), Item, False)
    _sandboxc.add_outputs(buf, 0, 7, [Item(value)], _counting(encoded, layout._encode))
    (out,), = _sandboxc.read_items(buf, capacity, True, b"\x07",
                                   _counting(decoded, layout._decode_copy), Item, True)
    assert (encoded, decoded) == ([], []) if plain else encoded == [7, 7]
    assert np.shares_memory(item.value, np.frombuffer(buf, np.uint8)) or not value.size
    assert not np.shares_memory(out.value, np.frombuffer(buf, np.uint8))  # a copy, out
    assert out.value.flags.owndata or not plain
    for got in (item.value, out.value):
        assert type(got) is np.ndarray and got.dtype == value.dtype
        assert encode(got, E.NDARRAY) == encode(value, E.NDARRAY)  # in: a view; out: a copy
    (entry,) = [buf[capacity - 48:capacity]]  # the output's bytes, as the codec writes them
    at, size = int.from_bytes(entry[:8], "little"), int.from_bytes(entry[8:16], "little")
    assert bytes(buf[at:at + size]) == encode(value, E.NDARRAY)


def _npy(text, data=b"", version=1):
    head = text.encode("latin1")
    size = len(head).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + head + data


WRONG = [
    b"\x93NUMPX\x01\x00" + _npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }")[8:],
    _npy("{'descr': '<i8', 'fortran_order': False, 'shape': (128, 128), }", bytes(80)),
    _npy("{'descr': '<i8', 'fortran_order': False, 'shape': (4294967296, 4294967296, "
         "4294967296), }", bytes(8)),
    _npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", bytes(8)),
    _npy("{'descr': '<q9', 'fortran_order': False, 'shape': (1,), }", bytes(8)),
    _npy("{'descr': '<i8', 'fortran_order': False, 'shape': (-1,), }", bytes(8)),
    _npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }x", bytes(8)),
    _npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }")[:30],
    b"\x93NUMPY\x01\x00\xff\xff{'descr'",
]
ODD = [  # decodable, though not as Dandelion writes them: the general path reads them
    _npy("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }\n", bytes(range(24))),
    _npy("{'descr': '=i8', 'fortran_order': False, 'shape': (2,3), }  \n", bytes(range(48))),
    _npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }\n", bytes(range(24))),
    _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n", bytes(8), 2),
]


def _ndarray_item(raw, outputs):
    """A context holding ``raw`` as an ndarray item: an input, or an output a sandbox
    left."""
    buf = bytearray(1 << 16)
    if outputs:
        capacity = write_inputs(buf, [], [("r", 7)], 8192)
        add_outputs(buf, 0, 1, [Item(raw)])  # bytes, then retyped, as a sandbox may
        buf[capacity - 48 + 36] = 7
    else:
        capacity = write_inputs(buf, [("m", 1, [Item(raw)])], [], 0)
        buf[128 + 32 + 36] = 7
    return buf, capacity


@pytest.mark.parametrize("outputs", [False, True], ids=["input", "output"])
@pytest.mark.parametrize("raw", WRONG + ODD, ids=range(len(WRONG + ODD)))
def test_an_ndarray_item_not_written_as_dandelion_writes_it_reads_as_the_codec_says(raw,
                                                                                   outputs):
    """What C does not read as a plain array (a malformed or hostile item, or one another
    writer laid out otherwise) is read by :func:`codec.decode_npy`: its array, or its
    error, for that item alone."""
    from dandelion.codec import decode_npy

    buf, capacity = _ndarray_item(raw, outputs)
    declared = b"\x07" if outputs else None
    try:
        want = decode_npy(memoryview(raw), True)
    except EncodingError as e:
        with pytest.raises(EncodingError, match=re.escape(str(e))):
            read_items(buf, capacity, outputs, declared, outputs)
        assert any(raw is w for w in WRONG)
        return
    ((got,),) = read_items(buf, capacity, outputs, declared, outputs)
    assert any(raw is o for o in ODD)
    assert got.value.dtype == want.dtype and np.array_equal(got.value, want)


def test_a_plain_array_s_header_is_its_own_whatever_came_before():
    """The headers written last are kept by dtype and shape (``c/npy.c``): arrays of other
    shapes, dtypes and ranks in turn, and again, each get exactly the codec's bytes."""
    from dandelion.codec import encode

    arrays = [np.zeros(shape, dtype) for dtype in (np.int64, np.float64, np.int32)
              for shape in [(2, 3), (3, 2), (6,), (), (1,) * 9, (2, 3, 1), (0,)]]
    buf = bytearray(1 << 16)
    for value in arrays + arrays[::-1] + arrays[::3]:
        capacity = write_inputs(buf, [("m", 7, [Item(value)])], [], 0)
        at, size = (int.from_bytes(buf[128 + 32 + k:128 + 40 + k], "little") for k in (0, 8))
        assert bytes(buf[at:at + size]) == encode(value, E.NDARRAY)
        (item,), = read_items(buf, capacity, False, None, False)
        assert item.value.shape == value.shape and item.value.dtype == value.dtype
