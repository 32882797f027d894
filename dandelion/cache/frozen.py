"""Arrays that can never change, and their digests remembered by identity.

A cache key hashes its inputs' content on every run, because a Python object may change
between two runs: a writeable array rerun after ``a[0, 0] += 1`` must miss.  Hashing is what
a warm rerun of a large array costs (about 34 µs for 128 KiB with BLAKE3 on the machine of
``docs/performance.rst``).  An array is *frozen* when nothing can ever write its memory:

- it is read-only, and so is every array in its ``base`` chain;
- the chain ends in a ``bytes`` object (immutable), or a read-only ``memoryview`` of one.

``numpy.frombuffer(data, dtype)`` over ``bytes`` gives such an array (its shape changed with
``reshape`` too), and numpy refuses to make it writeable again.  An array that owns its memory
is never frozen, even read-only: its owner may set ``writeable`` back.  Nor is any array
where numpy still lets ``ndarray.data`` be reassigned (numpy before 2), since then the
memory behind the same object could be swapped.

For a frozen array the digest of its bulk is kept as long as the array lives (a weak
reference drops it with the array), so hashing it again is a dictionary lookup.  Sound: the
bytes hashed are the only bytes the array can ever show; its dtype, shape and strides, which
may be reassigned in place, are not part of what is remembered (the record's head is made
from them on each run, and a change of layout makes the bulk non-contiguous or a different
size, which is checked).

>>> import numpy as np
>>> from dandelion.cache.frozen import frozen
>>> frozen(np.frombuffer(bytes(64), dtype=np.int64).reshape(2, 4))
True
>>> made = np.zeros(8)
>>> made.flags.writeable = False   # its owner may make it writeable again
>>> frozen(made)
False
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

from dandelion.codec import ndarray_class

#: Frozen arrays smaller than this are hashed each time (a lookup costs about as much).
MIN_BYTES = 4096

#: the bulk digest of each live frozen array, by id: (a weak reference to it, its size, the
#: digest)
_DIGESTS: dict[int, tuple[weakref.ref[Any], int, bytes]] = {}


def _data_fixed() -> bool:
    """Whether this numpy refuses to reassign an array's ``data`` (numpy 2 does)."""
    np = __import__("numpy")
    probe = np.frombuffer(bytes(8), dtype=np.uint8)
    try:
        probe.data = memoryview(bytes(8))
    except (AttributeError, TypeError, ValueError):
        return True
    return False  # pragma: no cover - numpy 1.x


_DATA_FIXED: bool | None = None


def frozen(value: Any) -> bool:
    """Whether ``value`` is an array whose memory nothing can ever write (see the module)."""
    global _DATA_FIXED
    ndarray = ndarray_class()
    if ndarray is None or not isinstance(value, ndarray) or value.flags.writeable:
        return False
    base = value.base
    while isinstance(base, ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    if type(base) is memoryview:
        if not base.readonly:
            return False
        base = base.obj
    if type(base) is not bytes:
        return False
    if _DATA_FIXED is None:
        _DATA_FIXED = _data_fixed()
    return _DATA_FIXED


def bulk_digest(value: Any, bulk: memoryview, digest: Callable[[Any], bytes]) -> bytes:
    """``digest(bulk)``, ``bulk`` being the C-contiguous bytes of the array ``value``;
    remembered while ``value`` lives when it is :func:`frozen` and at least
    :data:`MIN_BYTES`."""
    size = bulk.nbytes
    if size < MIN_BYTES or not frozen(value):
        return digest(bulk)
    key = id(value)
    known = _DIGESTS.get(key)
    if known is not None and known[0]() is value and known[1] == size:
        return known[2]
    made = digest(bulk)
    _DIGESTS[key] = (weakref.ref(value, _forget(key)), size, made)
    return made


def _forget(key: int) -> Callable[[weakref.ref[Any]], None]:
    def forget(ref: weakref.ref[Any]) -> None:
        known = _DIGESTS.get(key)
        if known is not None and known[0] is ref:
            del _DIGESTS[key]
    return forget
