"""The C extension of :mod:`dandelion.cache.key` (``c/keysc.c``)."""

from typing import Sequence

ALGORITHMS: tuple[str, ...]


def storage_keys(prefix: bytes, namespace: str, tails: Sequence[bytes | None],
                 algorithm: str) -> list[str | None]: ...
def digest(data: bytes, algorithm: str) -> bytes: ...
