"""The cryptographic hash behind every cache key and checksum.

BLAKE3 when the ``blake3`` package is installed (``pip install 'dandelion[cache]'``: about
six times faster than BLAKE2b on large inputs), else BLAKE2b from :mod:`hashlib`.  Both give
32-byte digests; the algorithm's name is part of every key, so two workers that hash
differently never mistake each other's entries (they just do not share them).

>>> len(digest(b"abc")), ALGORITHM in ("blake3", "blake2b")
(32, True)
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Protocol


class Hasher(Protocol):
    """An incremental hash (the subset of :mod:`hashlib`'s interface used here)."""

    def update(self, data: Any, /) -> Any: ...

    def digest(self) -> bytes: ...


def _blake2b(data: Any = b"") -> Hasher:
    return hashlib.blake2b(data, digest_size=32)


new: Callable[..., Hasher]
try:
    from blake3 import blake3 as _blake3

    new = _blake3
    ALGORITHM = "blake3"

    def digest(data: Any) -> bytes:
        """The 32-byte digest of ``data`` (bytes or any buffer)."""
        return _blake3(data).digest()  # type: ignore[no-any-return,unused-ignore]
except ImportError:  # pragma: no cover - depends on the installed extras
    new = _blake2b
    ALGORITHM = "blake2b"
    _new_blake2b = hashlib.blake2b

    def digest(data: Any) -> bytes:
        """The 32-byte digest of ``data`` (bytes or any buffer)."""
        return _new_blake2b(data, digest_size=32).digest()
