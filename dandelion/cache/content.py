"""The canonical content of items: what a cache key sees of a function's data.

An item's *record* is its element code, key, name and value bytes, in the
:mod:`dandelion.codec` encoding that crosses a sandbox (``.npy`` in C order for arrays), never a
pickle.  Its *content id* is the record itself when it is short, else a digest of it
(:func:`long_digest`), so small items cost no hash of their own and large ones are hashed
once per run.  The element follows
the value (an ``int`` is an ``int`` whatever set it travels in), which makes the id a function
of what a sandboxed function can observe of the item, and of nothing else.

>>> from dandelion.items import Item
>>> content_id(Item(5, key=1, name="a")) == content_id(Item(5, key=1, name="a"))
True
>>> content_id(Item(5, key=1)) == content_id(Item(5, key=2))
False
>>> content_id(Item(object()))
Traceback (most recent call last):
...
dandelion.cache.content.Uncacheable: an item holds a object, which has no canonical encoding
"""

from __future__ import annotations

import struct
from typing import Any

from dandelion.cache import hashing
from dandelion.cache.watch import bulk_digest
from dandelion.codec import encode, ndarray_class, npy_parts
from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType
from dandelion.items import Item

#: Element codes, as in a sandbox's context layout.
CODES: dict[ElementType, int] = {
    ElementType.BYTES: 1, ElementType.STR: 2, ElementType.INT: 3, ElementType.FLOAT: 4,
    ElementType.BOOL: 5, ElementType.JSON: 6, ElementType.NDARRAY: 7,
}
ELEMENTS = {code: element for element, code in CODES.items()}

#: Records up to this many bytes are their own content id; longer ones are digested.
INLINE_LIMIT = 64

#: element code u8, key i64, name length u32
HEADER = struct.Struct("<BqI")

_BY_TYPE: dict[type, int] = {bytes: 1, bytearray: 1, memoryview: 1, str: 2, int: 3,
                             float: 4, bool: 5, dict: 6, list: 6, tuple: 6, type(None): 6}
_PACK_INT = struct.Struct("<q").pack
_PACK_FLOAT = struct.Struct("<d").pack
_INT_RECORD = struct.Struct("<BqIq").pack  # HEADER, then the value
_INT_ID = struct.Struct("<BBqIq").pack  # 0x00, then an int item's record


class Uncacheable(Exception):
    """A function instance cannot be cached; the message says why."""


def value_parts(value: Any) -> tuple[int, list[Any]]:
    """The element code of ``value`` and its canonical bytes, as buffers to concatenate.

    Raises:
        Uncacheable: the value has no canonical encoding.
    """
    code = _BY_TYPE.get(type(value))
    if code is None and type(value).__name__ != "ndarray":
        # a subclass (an IntEnum, a str enum …) travels as its base type
        code = next((c for t, c in _BY_TYPE.items() if isinstance(value, t)), None)
    try:
        if code == 3:
            return 3, [_PACK_INT(value)]
        if code == 1:
            return 1, [value]
        if code == 2:
            return 2, [value.encode("utf-8", "surrogatepass")]
        if code == 4:
            return 4, [_PACK_FLOAT(value)]
        if code == 5:
            return 5, [b"\x01" if value else b"\x00"]
        if code == 6:
            return 6, [encode(value, ElementType.JSON)]
        if type(value).__name__ == "ndarray" or _is_array(value):
            return 7, _npy_parts(value)
    except struct.error:
        raise Uncacheable(f"an int item ({value}) does not fit in 64 bits") from None
    except EncodingError as e:
        raise Uncacheable(f"an item has no canonical encoding: {e.message}") from None
    raise Uncacheable(f"an item holds a {type(value).__name__}, which has no canonical "
                      "encoding")


def _is_array(value: Any) -> bool:
    np = _numpy()
    return np is not None and isinstance(value, np.ndarray)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is an optional dependency
        return None
    return numpy


def _npy_parts(value: Any) -> list[Any]:
    if value.dtype.hasobject:
        raise Uncacheable("an ndarray item holds Python objects, which have no canonical "
                          "encoding")
    return list(npy_parts(value))


def record(item: Item[Any]) -> bytes | None:
    """The record of a small ``int`` item without a name in one step, else ``None``."""
    value = item.value
    if type(value) is int and not item.name:
        try:
            return _INT_RECORD(3, item.key, 0, value)
        except struct.error:
            return None
    return None


def record_parts(item: Item[Any]) -> tuple[int, list[Any]]:
    """The record of ``item`` as buffers, and its length in bytes.

    Raises:
        Uncacheable: the key does not fit in 64 bits or the value has no canonical encoding.
    """
    code, parts = value_parts(item.value)
    name = item.name.encode("utf-8", "surrogatepass")
    try:
        head = HEADER.pack(code, item.key, len(name))
    except struct.error:
        raise Uncacheable(f"an item key ({item.key}) does not fit in 64 bits") from None
    size = len(head) + len(name) + sum(
        p.nbytes if type(p) is memoryview else len(p) for p in parts)
    return size, [head, name, *parts]


def content_id(item: Item[Any]) -> bytes:
    """The content id of ``item``: ``0x00`` + its record if short, else ``0x01`` + digest.

    Raises:
        Uncacheable: the item has no canonical encoding.
    """
    value = item.value
    if type(value) is int and not item.name:  # the common case, in one step
        try:
            return _INT_ID(0, 3, item.key, 0, value)
        except struct.error:
            pass  # the general path says why
    made = array_id(item)
    if made is not None:  # a plain array: its bulk hashed from its own buffer
        return made
    size, parts = record_parts(item)
    if size <= INLINE_LIMIT:
        return b"\x00" + b"".join(parts)
    return b"\x01" + long_digest(parts)


def array_id(item: Item[Any]) -> bytes | None:
    """:func:`content_id` of a plain array item (see :func:`array_record`), made from its
    record's parts without joining them (``None`` for any other item).

    Raises:
        Uncacheable: the key does not fit in 64 bits.
    """
    made = array_record(item)
    if made is None:
        return None
    digest = hashing.digest
    return b"\x01" + digest(made[0] + bulk_digest(item.value, made[1], digest))


def array_record(item: Item[Any]) -> tuple[bytes, memoryview] | None:
    """The record of a plain array item (C-contiguous, a builtin dtype in native byte
    order, not empty) as its part before the bulk and a view of the bulk, without going
    through :func:`record_parts` (``None`` for any other item): the part before the bulk
    depends only on the dtype, shape, key and name, so it is made once for them
    (:data:`_ARRAY_HEADS`).  The same bytes :func:`record_parts` gives, so the same id.

    Raises:
        Uncacheable: the key does not fit in 64 bits.
    """
    value = item.value
    ndarray = ndarray_class()  # (no array exists before numpy has its ndarray)
    if ndarray is None or type(value) is not ndarray:
        return None
    dtype = value.dtype
    if dtype.isbuiltin != 1 or dtype.hasobject or not value.size or \
            not value.flags.c_contiguous:
        return None
    memo = (dtype.str, value.shape, item.key, item.name)
    head = _ARRAY_HEADS.get(memo)
    if head is None:
        size, parts = record_parts(item)
        head = b"".join(parts[:-1])
        if len(_ARRAY_HEADS) >= 256:
            _ARRAY_HEADS.clear()
        _ARRAY_HEADS[memo] = head
    return head, memoryview(value).cast("B")


#: the record of an array item up to its bulk (its header, name and ``.npy`` header), by
#: the dtype, shape, key and name it follows from: often the same each run
_ARRAY_HEADS: dict[tuple[Any, ...], bytes] = {}


def long_digest(parts: list[Any]) -> bytes:
    """The digest of a long record, from its buffers (:func:`record_parts`):
    ``H(the parts before the last, H(the last))``.

    The last part is the bulk of the value (an array's data, a string's bytes), hashed on
    its own from its first byte: a hash fed a few header bytes first cannot hash the rest
    as one wide tree (BLAKE3 is about a fifth slower on 128 KiB so).  The record is still
    covered whole: where its last part starts follows from the parts before it (the name's
    length is in the header, an ``.npy`` header gives its own length).
    """
    digest = hashing.digest
    return digest(b"".join(parts[:-1]) + digest(parts[-1]))
