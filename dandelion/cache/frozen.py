"""Arrays that can never change.

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

A frozen array's digest holds as long as the array lives (:mod:`dandelion.cache.watch`
keeps it), so hashing it again is a dictionary lookup.  Sound: the bytes hashed are the only
bytes the array can ever show; its dtype, shape and strides, which may be reassigned in
place, are not part of what is remembered (the record's head is made from them on each
run, and a change of layout makes the bulk non-contiguous or a different size, which is
checked).

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

from typing import Any

from dandelion.codec import ndarray_class


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
