"""The content id of an item covers every byte of its record, short or long."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import dandelion as dd
from dandelion.cache.content import array_record, content_id, long_digest, record_parts
from dandelion.cache.entry import MAGIC, CorruptEntry, pack, unpack
from dandelion.items import Item


def _array() -> np.ndarray:
    return np.arange(64 * 64, dtype=np.int64).reshape(64, 64)


def test_a_long_record_changes_its_id_with_any_part_of_it():
    a = _array()
    base = content_id(dd.Item(a, key=1, name="m"))
    assert base[:1] == b"\x01" and len(base) == 33  # long: a digest
    changed = a.copy()
    changed[63, 63] += 1  # the last byte of the bulk
    others = [dd.Item(changed, key=1, name="m"), dd.Item(a, key=2, name="m"),
              dd.Item(a, key=1, name="n"), dd.Item(a.astype(np.int32), key=1, name="m"),
              dd.Item(a.reshape(32, 128), key=1, name="m"),  # the same bytes, reshaped
              dd.Item(a.tobytes(), key=1, name="m")]  # the same bytes, not an array
    ids = [content_id(item) for item in others]
    assert base not in ids and len(set(ids)) == len(ids)
    # the same content is the same id: another object, a strided view of equal values
    assert content_id(dd.Item(a.copy(), key=1, name="m")) == base
    wide = np.zeros((64, 128), dtype=np.int64)
    wide[:, ::2] = a
    assert content_id(dd.Item(wide[:, ::2], key=1, name="m")) == base


def test_an_entry_gives_its_outputs_the_ids_content_id_gives():
    outputs = [(dd.Item(_array(), key=3, name="m"), dd.Item("x" * 200)), (dd.Item(5),)]
    expected = [content_id(item) for items in outputs for item in items]
    known = {id(item): (item, cid)
             for item, cid in zip([i for items in outputs for i in items], expected)}
    data, ids = pack(outputs, known)
    assert ids == expected
    served, same = unpack(data)
    assert same == ids and (served[0][0].value == _array()).all()
    assert served[0][1:] == outputs[0][1:] and served[1] == outputs[1]


def test_an_entry_hashes_no_long_output_whose_id_is_not_known():
    outputs = [(dd.Item(_array(), key=3, name="m"), dd.Item("x" * 200)), (dd.Item(5),)]
    data, ids = pack(outputs)
    assert ids == [None, None, content_id(dd.Item(5))]  # the short one is its own id
    served, same = unpack(data)
    assert same == ids and (served[0][0].value == _array()).all()
    assert served[0][0].key == 3 and served[0][0].name == "m"
    assert served[0][1:] == outputs[0][1:] and served[1] == outputs[1]
    # what a hit serves still hashes to the id the computed output has
    assert [content_id(item) for items in served for item in items] == \
        [content_id(item) for items in outputs for item in items]


@pytest.mark.parametrize("value", [
    np.arange(12, dtype=np.int64).reshape(3, 4), np.arange(12, dtype=np.int64).reshape(4, 3),
    np.arange(12, dtype=np.int64).reshape(3, 4).T,  # Fortran order: not the plain path
    np.arange(12, dtype=">i8"), np.arange(12, dtype=np.int32), np.ones(5, dtype=np.bool_),
    np.arange(6, dtype=np.float16), np.arange(6, dtype=np.complex128), np.array(7),
    np.zeros((0, 3)), np.array(["ab", "c"]), np.arange(24, dtype=np.uint8)[::2],
])
@pytest.mark.parametrize(("key", "name"), [(0, ""), (5, "m"), (-(2 ** 63), "é")])
def test_an_array_id_is_that_of_its_record_whatever_path_makes_it(value, key, name):
    item = dd.Item(value, key=key, name=name)
    size, parts = record_parts(item)
    assert size > 64 and content_id(item) == b"\x01" + long_digest(parts)
    again = dd.Item(value.copy(), key=key, name=name)  # the remembered head, another array
    assert content_id(again) == content_id(item)


def test_an_entry_whose_sizes_say_what_it_lacks_wrongly_is_corrupt():
    long, short = dd.Item(b"x" * 100), dd.Item(b"y")
    data = bytearray(pack([(long, short)])[0])
    at = len(MAGIC) + 8  # the long record's size, which says: no digest follows
    with pytest.raises(CorruptEntry):
        unpack(bytes(data[:-1]))  # truncated
    data[at + 7] &= 0x7F  # now it says a digest follows: the short record is read as one
    with pytest.raises(CorruptEntry):
        unpack(bytes(data))
    short_at = at + 8 + 100 + 13
    data[at + 7] |= 0x80
    data[short_at + 7] |= 0x80  # a short record without its id
    with pytest.raises(CorruptEntry):
        unpack(bytes(data))


@pytest.mark.parametrize("known", [False, True])
def test_an_entry_of_one_plain_array_is_the_one_its_general_path_makes(known):
    a = np.arange(12 * 12, dtype=np.int64).reshape(12, 12)
    plain, other = dd.Item(a, key=4, name="p"), dd.Item(np.asfortranarray(a), key=4, name="p")
    assert not other.value.flags.c_contiguous  # packed through record_parts
    ids = {id(i): (i, content_id(i)) for i in (plain, other)} if known else None
    data, plain_ids = pack([(plain,)], ids)
    assert (data, plain_ids) == pack([(other,)], ids)
    assert plain_ids == ([content_id(plain)] if known else [None])
    served, served_ids = unpack(data)
    assert (served[0][0].value == a).all() and served[0][0].name == "p" and served_ids == plain_ids


def _read(data: bytes, general: bool) -> object:
    """What an entry serves, as plain data (or that it is corrupt): through :func:`unpack`,
    or through the general reader of entries alone."""
    from dandelion.cache.entry import _unpack

    try:
        outputs, ids = _unpack(memoryview(data)) if general else unpack(data)
    except CorruptEntry:
        return "corrupt"
    except Exception as e:  # unpack turns these into CorruptEntry; _unpack does not
        if general:
            return "corrupt"
        raise AssertionError(f"unpack raised {e!r}") from None
    plain = []
    for items in outputs:
        for item in items:
            value = item.value
            if isinstance(value, np.ndarray):
                assert value.flags.writeable and value.flags.owndata  # the caller's own
                value = (value.dtype.str, value.shape, value.tobytes())
            plain.append((value, item.key, item.name))
    return plain, ids


@pytest.mark.parametrize("known", [False, True])
@pytest.mark.parametrize(("key", "name"), [(0, ""), (5, "m"), (-(2 ** 63), "é")])
def test_an_entry_of_one_array_reads_as_the_general_reader_reads_it_even_broken(known, key,
                                                                                  name):
    # the one-array reader is the general one's shortcut: every entry, whole, truncated at
    # any length or with any byte changed, reads the same through both (or is corrupt)
    item = dd.Item(np.arange(12, dtype=np.int64).reshape(3, 4), key=key, name=name)
    ids = {id(item): (item, content_id(item))} if known else None
    data = pack([(item,)], ids)[0]
    assert _read(data, False) == _read(data, True) != "corrupt"
    for cut in range(len(data)):
        assert _read(data[:cut], False) == _read(data[:cut], True) == "corrupt"
    for at in range(len(data)):
        for flip in (0x01, 0x80):
            changed = bytearray(data)
            changed[at] ^= flip
            assert _read(bytes(changed), False) == _read(bytes(changed), True)
    for value in (np.arange(6, dtype=">i8"), np.ones(5, dtype=np.bool_), np.array(7),
                  np.zeros((0, 3)), np.array(["ab", "c"]), np.arange(6, dtype=np.float16)):
        data = pack([(dd.Item(value, key=key, name=name),)])[0]
        assert _read(data, False) == _read(data, True) != "corrupt"


def test_an_entry_whose_array_names_a_dtype_numpy_does_not_know_is_corrupt():
    data = pack([(dd.Item(np.arange(12, dtype=np.int64)),)])[0]
    assert data.count(b"'<i8'") == 1
    with pytest.raises(CorruptEntry):  # numpy's TypeError was let through: the run failed
        unpack(data.replace(b"'<i8'", b"'<h8'"))


@pytest.mark.parametrize("sizes", [[], [0], [5, 0, 7], [4096 * 16 - 1, 1], [4096 * 40 + 3],
                                   [6, 8, 8, 189, 128 * 128 * 8], [1] * 9 + [70_000]])
def test_an_entry_joined_in_c_is_the_bytes_python_joins(sizes):
    # _keysc.join faults a large entry's new pages in one call first (a store that grows);
    # what it gives must be b"".join's bytes, from bytes and from an array's own buffer
    from dandelion.cache._keysc import join

    rng = np.random.default_rng(len(sizes))
    parts: list[object] = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    if sizes:
        parts[-1] = memoryview(np.frombuffer(parts[-1], np.uint8).copy())  # type: ignore
    kept = [join(parts) for _ in range(40)]  # (each new memory: the pages are fresh)
    assert all(type(k) is bytes and k == b"".join(parts) for k in kept)  # type: ignore


def test_a_reserved_entry_is_new_bytes_that_nothing_else_sees():
    # a run that keeps entries reserves the next large one's bytes while it computes
    # (_keysc.reserve); the join that takes them must give b"".join's bytes in an object of
    # its own, which no later join writes into and no change to the parts reaches
    from dandelion.cache._keysc import join, reserve

    src = np.arange(128 * 128, dtype=np.int64)
    parts = [b"head", memoryview(src)]
    first = join(parts)  # a large entry: the size reserved next
    assert reserve() is True and reserve() is False  # (one of that size is reserved)
    made = join(parts)  # written into the reserved bytes
    assert made == first and made is not first and sys.getrefcount(made) == 2  # ours alone
    src[:] = 7  # the caller changes what it joined: the entries keep what they were
    assert reserve() is True  # the reserve was taken: a new one
    again = join(parts)
    assert again != first and made == first and again is not made
    assert join([b"x" * 70_000]) == b"x" * 70_000  # another size: the reserve is left
    assert reserve() is True and join([b"y" * 70_000]) == b"y" * 70_000
    assert join([b"z" * 10]) == b"z" * 10  # a small entry: the size reserved stays
    assert reserve() is True and reserve() is False


ENTRY_DTYPES = ["<i8", "<i4", "<u2", "|i1", "|b1", "<f2", "<f8", "<c16", ">i8", "<U3", "|S4",
                "<M8[s]", "<m8[ms]"]


@pytest.mark.parametrize("dtype", ENTRY_DTYPES)
@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (12,), (2, 3, 2), (128, 128), ()])
def test_an_entry_of_one_array_made_in_c_is_the_one_python_makes(dtype, shape, monkeypatch):
    # pack remembers the layout of the last array entry it made and makes the next one like
    # it in one C call (_keysc.array_entry): the same bytes and ids as the Python path, for
    # every dtype and shape, key and name, id known or not; anything else (another dtype,
    # shape, key or name, Fortran order, a stride, a subclass, empty) goes the Python way
    from dandelion.cache import entry

    real = entry._array_entry
    if real is None:
        pytest.skip("the C extension lacks the path")
    made: list[Any] = []

    def counting(item: Any, layout: Any, cid: Any) -> Any:
        made.append(real(item, layout, cid))  # type: ignore[misc]
        return made[-1]

    def python(outputs: Any, known: Any = None) -> Any:
        with monkeypatch.context() as m:
            m.setattr(entry, "_array_entry", None)
            m.setattr(entry, "_last_array", None)
            return pack(outputs, known)

    monkeypatch.setattr(entry, "_array_entry", counting)
    monkeypatch.setattr(entry, "_last_array", None)
    a = (np.arange(int(np.prod(shape))) % 7).astype(np.dtype(dtype)).reshape(shape)
    first = Item(a, key=5, name="out")
    assert pack([(first,)]) == python([(first,)]) and made == []  # (learns the layout)
    plain = array_record(first) is not None  # (else never in C: byte-swapped, strings...)
    assert (entry._last_array is not None) == plain
    same = Item(a.copy(), key=5, name="out")
    known = {id(same): (same, content_id(same))}
    for ids in (None, known):
        got = pack([(same,)], ids)
        assert got == python([(same,)], ids) and len(made) == int(plain)
        assert not plain or made.pop() is got[0]
        assert unpack(got[0])[1] == got[1]
    small = Item(3, key=5, name="out")  # a short record's id (0x00 + it): not in C
    assert pack([(small,)], {id(small): (small, content_id(small))}) == \
        python([(small,)], {id(small): (small, content_id(small))})
    assert made in ([], [None])
    made.clear()
    swapped = a.astype(np.dtype(dtype).newbyteorder()) if a.dtype.byteorder != "|" else \
        a.astype("<i2")
    others = [Item(a, key=6, name="out"), Item(a, key=5, name="other"),
              Item(swapped, key=5, name="out"),
              Item(np.asfortranarray(a), key=5, name="out"),
              Item(a.reshape(-1)[::2], key=5, name="out"),
              Item(a.reshape(-1, 1), key=5, name="out"),
              Item(a.view(np.ma.MaskedArray), key=5, name="out"),
              Item(a.reshape(-1)[:0], key=5, name="out")]
    for other in others:
        expected = python([(other,)])
        monkeypatch.setattr(entry, "_last_array", None)
        pack([(first,)])  # the layout of ``first``
        got = pack([(other,)])
        assert got == expected  # in C only where its layout is first's (a 1-d "Fortran")
        assert made in ([], [None]) or (made == [got[0]] and other.value.shape == shape)
        if other.key != 5 or other.name != "out":  # another record head: never in C
            assert made in ([], [None])
        made.clear()
        assert unpack(got[0])[1] == got[1]


def test_a_join_in_c_refuses_what_python_refuses():
    from dandelion.cache._keysc import join

    strided = memoryview(np.arange(10, dtype=np.uint8))[::2]  # not one block of memory
    for bad in ([1], [b"a", "text"], [strided]):
        with pytest.raises((TypeError, BufferError)) as python:
            b"".join(bad)  # type: ignore[arg-type]
        with pytest.raises(type(python.value)):
            join(bad)
    with pytest.raises(TypeError):
        b"".join(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        join(5)  # type: ignore[arg-type]
    assert join(part for part in (b"a", b"b")) == b"ab"  # any iterable, as b"".join


def test_an_entry_does_not_share_memory_with_the_output_it_keeps():
    # the entry of an array is a copy: the caller, who owns the array, may change it after
    # the instance is kept, and the entry must still give what was computed
    a = np.arange(128 * 128, dtype=np.int64).reshape(128, 128)
    item = dd.Item(a)
    data, _ = pack([(item,)])
    a[0, 0] = -1
    a[127, 127] = -1
    (served,), _ = unpack(data)
    assert served[0].value[0, 0] == 0 and served[0].value[127, 127] == 128 * 128 - 1
    served[0].value[1, 1] = -7  # and what a hit gives is the caller's own, not the entry
    assert unpack(data)[0][0][0].value[1, 1] == 129
