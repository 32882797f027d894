"""A cache entry: the outputs of one function instance, as bytes a store keeps.

Per result, its items; per item, its record (:mod:`dandelion.cache.content`) and, for a long
record whose content id was known when the entry was made, its digest, so that a hit hands
its consumers that id without hashing again.  A long record's id is not made for the entry:
an output is hashed only when something needs its id (a cached consumer's key), which a run
that keeps an output nobody reads (the matrix's product) does not pay for; a hit on an entry
without it leaves the id to be made by the consumer that needs it.

An entry is always a copy (``bytes``): the outputs it keeps belong to the run's caller, who
may change them.  A large entry's bytes are joined by the C extension (``_keysc.join``,
else ``b"".join``), which first faults in their pages in one call where they are new memory,
as every entry of a store that grows is (about 13 µs less than a fault per page for an
entry of 128 KiB in a real run, on this virtual machine).

Even faulted in one call, new memory is most of the cost of keeping a large entry (about 50
of the 60 µs of keeping a 128 KiB one, on this virtual machine).  So a run that will keep
entries calls :func:`reserve` while its functions compute (the dispatcher does, once it has
handed them over, :meth:`Dispatcher.run <dandelion.runtime.dispatcher.Dispatcher.run>`): the C
extension makes, with the GIL released, the bytes of an entry as large as the last large one
(at least 64 KiB, at most 16 MiB) and faults their pages in, and the next entry of that size
is written into them, off the new memory's cost.  The reserved bytes are held by the C
extension alone until that entry is made, so they are never seen, nor changed, by anything
else: the entry is new bytes all the same.  One entry's worth of memory is held in reserve
at most.

The entry of one plain array, the output of the paper's matrix composition on every run, is
made in one call of the C extension (``_keysc.array_entry``) from the second one of a layout
on: :func:`pack` remembers the layout of the last one (the array's type, dtype, shape, and
the item's key, name and record head) and the C call checks the next output against it,
answering ``None`` for anything else (another dtype, shape, key or name, an array that is not
C-contiguous or is empty, a subclass), which the Python path then packs.  The bytes are the
Python path's either way (``tests/cache`` compares them over dtypes, shapes and orders).

>>> from dandelion.items import Item
>>> data, ids = pack([(Item(7, key=2, name="x"),), ()])
>>> outputs, same = unpack(data)
>>> outputs, same == ids
([(Item(value=7, key=2, name='x'),), ()], True)
>>> long = Item(b"x" * 100)
>>> pack([(long,)])[1], unpack(pack([(long,)])[0])[1]
([None], [None])
>>> from dandelion.cache.content import content_id
>>> known = {id(long): (long, content_id(long))}
>>> unpack(pack([(long,)], known)[0])[1] == [content_id(long)]
True
"""

from __future__ import annotations

import re
import struct
from typing import Any, Callable, Sequence

from dandelion.cache.content import (
    ELEMENTS,
    HEADER,
    INLINE_LIMIT,
    array_record,
    record,
    record_parts,
)
from dandelion.codec import decode
from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType
from dandelion.items import Item

try:  # the C extension: entries of int items, or of one array, in one call
    from dandelion.cache._keysc import array_entry as _array_entry
    from dandelion.cache._keysc import int_entries as _int_entries
    from dandelion.cache._keysc import int_result as _int_result
except ImportError:  # pragma: no cover - built without a C compiler, or an older build
    _int_entries = _int_result = _array_entry = None  # type: ignore[assignment]

_join: Callable[[list[Any]], bytes]
_reserve: Callable[[], bool]
try:  # the C extension: an entry's bytes, their pages faulted at once where they are new
    from dandelion.cache._keysc import join as _join
    from dandelion.cache._keysc import reserve as _reserve
except ImportError:  # pragma: no cover - built without a C compiler, or an older build
    _join = b"".join
    _reserve = bool  # (nothing to reserve: False)

MAGIC = b"DDCE1\0"
_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")
#: set in the size of a long record that is not followed by its digest (its id was not known)
_BARE = 1 << 63
_UNPACK_INT = struct.Struct("<q").unpack_from
_UNPACK_FLOAT = struct.Struct("<d").unpack_from
_SMALL = [struct.pack("<Q", n) for n in range(INLINE_LIMIT + 1)]
_ONE_INT = struct.Struct("<6sIIQBqIq")  # MAGIC, 1 result, 1 item, its size, an int record
_ONE_HEAD = struct.pack("<IIQ", 1, 1, struct.calcsize("<BqIq"))
_ONE_ONE = struct.pack("<II", 1, 1)  # 1 result, 1 item
#: how an entry of one result of one item starts; where its size and its record are
_ONE_ENTRY = MAGIC + _ONE_ONE
_ONE_SIZE_AT = len(_ONE_ENTRY)
_ONE_RECORD_AT = _ONE_SIZE_AT + _SIZE.size

Outputs = Sequence[Sequence[Item[Any]]]


class CorruptEntry(Exception):
    """Bytes that are not an entry this module wrote."""


def pack(outputs: Outputs, known: dict[int, tuple[Any, bytes]] | None = None
         ) -> tuple[bytes, list[bytes | None]]:
    """The bytes of an entry holding ``outputs`` (one item sequence per result), and the
    content id of each item in order: a short record's, and a long one's where ``known`` has
    it (by item identity; else ``None``: nothing is hashed here, see the module's
    documentation).

    Raises:
        Uncacheable: an output has no canonical encoding.
    """
    if len(outputs) == 1 and len(outputs[0]) == 1:  # one int item without a name
        item = outputs[0][0]
        global _last_array
        last = _last_array
        if last is not None:  # an array as the last one kept (a matrix's product): in C
            seen = known.get(id(item)) if known is not None else None
            cid = seen[1] if seen is not None and seen[0] is item else None
            data = _array_entry(item, last, cid)
            if data is not None:
                return data, [cid]
        small = record(item)
        if small is not None:
            return MAGIC + _ONE_HEAD + small, [b"\x00" + small]
        array = array_record(item)
        if array is not None:  # one plain array: in one join
            head, bulk = array
            if _array_entry is not None:  # the next one like it is made in C
                value = item.value
                _last_array = (type(value), value.dtype, value.shape, item.key, item.name,
                               head)
            size = len(head) + bulk.nbytes
            seen = known.get(id(item)) if known is not None else None
            if seen is not None and seen[0] is item:
                return _join([MAGIC, _ONE_ONE, _SIZE.pack(size), head, bulk,
                              seen[1][1:]]), [seen[1]]
            return _join([MAGIC, _ONE_ONE, _SIZE.pack(size | _BARE), head, bulk]), [None]
    chunks: list[Any] = [MAGIC, _COUNT.pack(len(outputs))]
    ids: list[bytes | None] = []
    for items in outputs:
        made = _int_result(items) if _int_result is not None else None
        if made is not None:  # all int items without a name: in one C call
            chunks.append(made[0])
            ids += made[1]
            continue
        chunks.append(_COUNT.pack(len(items)))
        for item in items:
            small = record(item)
            if small is not None:
                chunks += (_SMALL[len(small)], small)
                ids.append(b"\x00" + small)
                continue
            size, parts = record_parts(item)
            if size <= INLINE_LIMIT:
                chunks.append(_SIZE.pack(size))
                chunks += parts
                ids.append(b"\x00" + b"".join(parts))
                continue
            seen = known.get(id(item)) if known is not None else None
            if seen is not None and seen[0] is item:
                chunks.append(_SIZE.pack(size))
                chunks += parts
                chunks.append(seen[1][1:])
                ids.append(seen[1])
            else:
                chunks.append(_SIZE.pack(size | _BARE))
                chunks += parts
                ids.append(None)
    return _join(chunks), ids


#: the layout of the last entry of one plain array made (its array type, dtype, shape, key,
#: name and record head: ``_keysc.array_entry``'s), for the next such entry to be made in one
#: C call, with the same bytes (``None``: none yet, or no C extension)
_last_array: tuple[Any, ...] | None = None


#: How long a run that keeps entries waits, once it has handed its instances over, before it
#: reserves the next entry's memory (:func:`reserve`), in seconds.  Reserving at once kept
#: the calling thread busy on its CPU for the ~50 µs of the faults just when the worker it
#: had woken was to run, and the worker started on the instance 20-40 µs later than in an
#: uncached run (on a loaded machine: woken with the other CPU busy, it waited behind the
#: caller; see ``docs/caching.rst``).  Waiting first leaves the CPU to the worker (or to the
#: sandbox, woken onto the caller's CPU, where the caller drives the instance itself:
#: :mod:`dandelion.runtime.here`); a run that ends sooner reserves nothing.
RESERVE_AFTER = 0.0002


def reserve() -> bool:
    """Make the bytes of the next large entry ahead, as large as the last large entry made
    (64 KiB to 16 MiB), with their pages faulted in while the GIL is released, for the next
    entry of that size to be written into (see the module's documentation); ``False`` when
    there is nothing to make (no large entry yet, one reserved already, or no C extension).
    Called by a run that keeps entries, while its functions compute (from
    :data:`RESERVE_AFTER` after it handed them over)."""
    return _reserve()


def pack_ints(outputs: Sequence[Outputs]) -> list[bytes] | None:
    """The entries of many instances' outputs in one step when each is one result of one
    ``int`` item without a name (as :func:`pack` makes them), else ``None``.

    >>> pack_ints([[(Item(7, key=2),)]]) == [pack([(Item(7, key=2),)])[0]]
    True
    >>> pack_ints([[(Item(True),)]]) is None
    True
    """
    if _int_entries is not None:
        return _int_entries(outputs)
    one = _ONE_INT.pack
    try:
        entries = [one(MAGIC, 1, 1, 21, 3, item.key, 0, value) for out in outputs
                   if len(out) == 1 and len(out[0]) == 1
                   and type(value := (item := out[0][0]).value) is int and not item.name]
    except struct.error:  # an int beyond 64 bits
        return None
    return entries if len(entries) == len(outputs) else None


def unpack(data: bytes) -> tuple[list[tuple[Item[Any], ...]], list[bytes | None]]:
    """The outputs in an entry and the content id of each item (``None``: a long one the
    entry does not know).

    Raises:
        CorruptEntry: ``data`` is not a well-formed entry.
    """
    if len(data) == _ONE_INT.size:  # one int item without a name: the common case
        magic, n_results, n_items, size, code, key, name_len, value = _ONE_INT.unpack(data)
        if (magic, n_results, n_items, size, code, name_len) == (MAGIC, 1, 1, 21, 3, 0):
            return [(Item(value, key),)], [b"\x00" + data[-21:]]
    try:
        if data.startswith(_ONE_ENTRY):  # one plain array (a matrix's product): at once
            made = _one_array(data)
            if made is not None:
                return made
        return _unpack(memoryview(data))
    except (struct.error, EncodingError, IndexError, ValueError, TypeError,
            UnicodeDecodeError) as e:  # (TypeError: numpy, of a dtype it does not know)
        raise CorruptEntry(f"malformed cache entry: {e}") from None


def _one_array(data: bytes) -> tuple[list[tuple[Item[Any], ...]], list[bytes | None]] | None:
    """The output of an entry of one result of one plain array item, as :func:`pack` writes
    it, without going over the entry's parts one by one (``None``: another entry, or a
    malformed one: :func:`_unpack` reads it, or says what is wrong)."""
    (size,) = _SIZE.unpack_from(data, _ONE_SIZE_AT)
    bare = size & _BARE
    size ^= bare
    end = _ONE_RECORD_AT + size
    if size <= INLINE_LIMIT or len(data) != (end if bare else end + 32):
        return None
    code, key, name_len = HEADER.unpack_from(data, _ONE_RECORD_AT)
    start = _ONE_RECORD_AT + HEADER.size + name_len
    if code != 7 or start + 10 > end:
        return None
    layout = _layout(data[start:start + 10 + _NPY_HLEN(data, start + 8)[0]])
    if layout is None:
        return None
    dtype, shape, head_size = layout
    bulk = end - start - head_size
    count = bulk // dtype.itemsize
    if count <= 0 or count * dtype.itemsize != bulk:
        return None
    import numpy as np  # (imported already: the layout is known)

    try:
        value = np.frombuffer(data, dtype, count, start + head_size).reshape(shape).copy()
    except ValueError:  # the shape does not match the bulk
        return None
    name = str(data[_ONE_RECORD_AT + HEADER.size:start], "utf-8", "surrogatepass") \
        if name_len else ""
    return [(Item(value, key, name),)], [None if bare else b"\x01" + data[end:]]


def _unpack(view: memoryview) -> tuple[list[tuple[Item[Any], ...]], list[bytes | None]]:
    if bytes(view[:len(MAGIC)]) != MAGIC:
        raise CorruptEntry("not a cache entry (bad magic)")
    at = len(MAGIC)
    (n_results,) = _COUNT.unpack_from(view, at)
    at += 4
    outputs: list[tuple[Item[Any], ...]] = []
    ids: list[bytes | None] = []
    for _ in range(n_results):
        (n_items,) = _COUNT.unpack_from(view, at)
        at += 4
        items = []
        for _ in range(n_items):
            (size,) = _SIZE.unpack_from(view, at)
            at += 8
            bare = size & _BARE
            size ^= bare
            if bare and size <= INLINE_LIMIT:
                raise CorruptEntry("a short record without its id")
            record = view[at:at + size]
            if len(record) != size:
                raise CorruptEntry("truncated cache entry")
            at += size
            code, key, name_len = HEADER.unpack_from(record)
            start = HEADER.size + name_len
            name = str(record[HEADER.size:start], "utf-8", "surrogatepass") if name_len \
                else ""
            items.append(Item(_value(code, record[start:]), key, name))
            if size <= INLINE_LIMIT:
                ids.append(b"\x00" + bytes(record))
            elif bare:
                ids.append(None)
            else:
                digest = bytes(view[at:at + 32])
                at += 32
                ids.append(b"\x01" + digest)
        outputs.append(tuple(items))
    if at != len(view):
        raise CorruptEntry("trailing bytes after a cache entry")
    return outputs, ids


_NPY = re.compile(r"\{'descr': '([<>|=][a-zA-Z]\d*)', 'fortran_order': False, "
                  r"'shape': \(([\d, ]*)\), \}\s*$")


def _value(code: int, data: memoryview) -> Any:
    if code == 3:
        return _UNPACK_INT(data)[0]
    if code == 1:
        return bytes(data)
    if code == 4:
        return _UNPACK_FLOAT(data)[0]
    if code == 7:
        return _array(data)
    element = ELEMENTS.get(code)
    if element is None:
        raise CorruptEntry(f"unknown element code {code}")
    return decode(data, element)


def _array(data: memoryview) -> Any:
    """A writable array from the canonical ``.npy`` bytes (one copy)."""
    import numpy as np

    (hlen,) = _NPY_HLEN(data, 8)
    layout = _layout(bytes(data[:10 + hlen]))
    if layout is None:
        return decode(data, ElementType.NDARRAY)
    dtype, shape, head_size = layout
    flat = np.frombuffer(data, dtype=dtype, offset=head_size)
    return flat.reshape(shape).copy()


def _layout(head: bytes) -> tuple[Any, tuple[int, ...], int] | None:
    """The dtype, shape and length of a canonical ``.npy`` header ``head`` (``None``:
    another header, which :func:`~dandelion.codec.decode` reads)."""
    known = _ARRAYS.get(head)
    if known is None:
        import numpy as np

        match = _NPY.match(head[10:].decode("latin1"))
        if head[:8] != b"\x93NUMPY\x01\x00" or match is None:
            return None
        known = (np.dtype(match.group(1)),
                 tuple(int(n) for n in match.group(2).replace(",", " ").split()), len(head))
        if len(_ARRAYS) >= 256:
            _ARRAYS.clear()
        _ARRAYS[head] = known
    return known


#: the dtype, shape and header length of the ``.npy`` headers seen last (often the same
#: each run)
_ARRAYS: dict[bytes, tuple[Any, tuple[int, ...], int]] = {}
_NPY_HLEN = struct.Struct("<H").unpack_from

