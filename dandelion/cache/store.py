"""Where cache entries live: the :class:`Store` interface, stacks of stores, and the guard
that turns a failing store into misses.

A store maps string keys (``<namespace>/<hex digest>``) to bytes.  Stores stack
(:class:`StackStore`): a read tries each in turn and copies a hit into the stores in front of
it; a write goes to all.  A store that fails (a full disk, Redis gone) must never fail a
run: :class:`GuardedStore` answers misses instead, warns once, and tries the store again
after a pause.

>>> from dandelion.cache.memory import MemoryStore
>>> front, back = MemoryStore(), MemoryStore()
>>> stack = StackStore([front, back])
>>> back.put("ns/ab", b"entry")
>>> stack.get("ns/ab"), front.get("ns/ab")
(b'entry', b'entry')
"""

from __future__ import annotations

import abc
import functools
import logging
import threading
import time
import warnings
from typing import Any, Callable, Sequence

log = logging.getLogger("dandelion.cache")


class CacheWarning(RuntimeWarning):
    """A cache store failed; the run goes on without it (its lookups are misses)."""


class Store(abc.ABC):
    """A place that keeps cache entries (bytes) by key."""

    #: a short name for messages and ``dandelion cache info``
    kind = "store"

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None:
        """The entry under ``key``, or ``None``."""

    @abc.abstractmethod
    def put(self, key: str, value: bytes) -> None:
        """Keep ``value`` under ``key`` (the store may evict other entries)."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The entries under ``keys``, in order (one round trip where the store can)."""
        return [self.get(k) for k in keys]

    def put_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """Keep each ``(key, value)`` (one round trip where the store can)."""
        for key, value in entries:
            self.put(key, value)

    def put_all(self, keys: Sequence[str], values: Sequence[bytes]) -> None:
        """:meth:`put_many` with the keys and values apart (no pair per entry)."""
        self.put_many(list(zip(keys, values)))

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Forget the entry under ``key`` (if any)."""

    @abc.abstractmethod
    def clear(self, namespace: str | None = None) -> int:
        """Forget every entry (of ``namespace`` only, if given); how many were removed."""

    @abc.abstractmethod
    def info(self) -> dict[str, Any]:
        """Plain data about the store: its kind, location, entries, bytes and limit."""

    def close(self) -> None:  # noqa: B027 - an optional hook; most stores hold nothing
        """Release connections and files."""

    def lease(self, keys: Sequence[str], holder: str) -> list[bool] | None:
        """Claim the computing of the entries of ``keys`` for ``holder`` (a token unique to
        the caller), across every process that reaches this store: per key ``True``, the
        caller now holds its lease and computes it; ``False``, another holder does (wait
        for its entry, or for its lease to end).  A lease ends when released, or when its
        holder stops renewing it (it died): after :attr:`lease_seconds`.  ``None``: this
        store has no leases (every caller computes)."""
        return None

    def renew(self, keys: Sequence[str], holder: str) -> None:  # noqa: B027 - optional
        """Keep ``holder``'s leases of ``keys`` for another :attr:`lease_seconds`."""

    def release(self, keys: Sequence[str], holder: str) -> None:  # noqa: B027 - optional
        """End ``holder``'s leases of ``keys`` (those of another holder stay)."""

    #: how long a lease lasts unless renewed: how long waiters wait for a holder that died
    lease_seconds: float = 10.0

    def reopener(self) -> Callable[[], Store] | None:
        """A picklable callable that opens this store again in another process (a Ray
        node's): the same directory or server; a memory store opens as a new, empty one of
        that process.  ``None``: this store cannot be opened elsewhere."""
        return None


def _stack(openers: Sequence[Callable[[], Store]]) -> Store:
    return StackStore([open_() for open_ in openers])


def _guard(opener: Callable[[], Store], pause: float) -> Store:
    return GuardedStore(opener(), pause)


class StackStore(Store):
    """Stores tried in order (fast and small first): a hit is copied to those in front."""

    kind = "stack"

    def __init__(self, stores: Sequence[Store]) -> None:
        self.stores = list(stores)
        self.lease_seconds = min(s.lease_seconds for s in self.stores)  # renewed in time

    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found: list[bytes | None] = [None] * len(keys)
        missing = list(range(len(keys)))
        for depth, store in enumerate(self.stores):
            if not missing:
                break
            values = store.get_many([keys[i] for i in missing])
            still = []
            for i, value in zip(missing, values):
                if value is None:
                    still.append(i)
                    continue
                found[i] = value
                for front in self.stores[:depth]:
                    front.put(keys[i], value)
            missing = still
        return found

    def put(self, key: str, value: bytes) -> None:
        for store in self.stores:
            store.put(key, value)

    def put_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        for store in self.stores:
            store.put_many(entries)

    def put_all(self, keys: Sequence[str], values: Sequence[bytes]) -> None:
        for store in self.stores:
            store.put_all(keys, values)

    def delete(self, key: str) -> None:
        for store in self.stores:
            store.delete(key)

    def clear(self, namespace: str | None = None) -> int:
        return sum(store.clear(namespace) for store in self.stores)

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "stores": [store.info() for store in self.stores]}

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def lease(self, keys: Sequence[str], holder: str) -> list[bool] | None:
        """The leases of the deepest store that has them (the one that is shared)."""
        for store in reversed(self.stores):
            held = store.lease(keys, holder)
            if held is not None:
                return held
        return None

    def renew(self, keys: Sequence[str], holder: str) -> None:
        for store in self.stores:
            store.renew(keys, holder)

    def release(self, keys: Sequence[str], holder: str) -> None:
        for store in self.stores:
            store.release(keys, holder)

    def reopener(self) -> Callable[[], Store] | None:
        openers = [o for o in (s.reopener() for s in self.stores) if o is not None]
        if len(openers) < len(self.stores):
            return None
        return functools.partial(_stack, tuple(openers))


class GuardedStore(Store):
    """A store whose failures become misses: one warning, then retries after ``pause`` s.

    >>> class Broken(Store):
    ...     def get(self, key): raise OSError("disk on fire")
    ...     def put(self, key, value): raise OSError("disk on fire")
    ...     def delete(self, key): pass
    ...     def clear(self, namespace=None): return 0
    ...     def info(self): return {"kind": "broken"}
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     guarded = GuardedStore(Broken())
    ...     guarded.get("ns/a"), guarded.get("ns/b")
    (None, None)
    >>> len(caught)
    1
    """

    def __init__(self, store: Store, pause: float = 30.0) -> None:
        self.store = store
        self.kind = store.kind
        self.lease_seconds = store.lease_seconds
        self.pause = pause
        self._down_until = 0.0
        self._warned = False
        self._lock = threading.Lock()

    def _failed(self, error: BaseException, doing: str) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.pause
            warn = not self._warned
            self._warned = True
        message = (f"the {self.kind} cache store failed while {doing} ({type(error).__name__}: "
                   f"{error}); runs go on without it, recomputing what it would have served")
        if warn:
            warnings.warn(message, CacheWarning, stacklevel=3)
        else:
            log.debug(message)

    def _up(self) -> bool:
        """Whether the store is to be asked (not paused after a failure).  The calls of a
        run's path (get, get_many, put_many, put_all) test ``_down_until == 0.0`` first
        themselves: one Python call less each, as a store is almost always up."""
        return self._down_until == 0.0 or time.monotonic() >= self._down_until

    def get(self, key: str) -> bytes | None:
        if self._down_until == 0.0 or self._up():
            try:
                return self.store.get(key)
            except Exception as e:
                self._failed(e, "reading")
        return None

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if self._down_until == 0.0 or self._up():
            try:
                return self.store.get_many(keys)
            except Exception as e:
                self._failed(e, "reading")
        return [None] * len(keys)

    def put(self, key: str, value: bytes) -> None:
        self.put_many([(key, value)])

    def put_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        if self._down_until == 0.0 or self._up():
            try:
                self.store.put_many(entries)
            except Exception as e:
                self._failed(e, "writing")

    def put_all(self, keys: Sequence[str], values: Sequence[bytes]) -> None:
        if self._down_until == 0.0 or self._up():
            try:
                self.store.put_all(keys, values)
            except Exception as e:
                self._failed(e, "writing")

    def delete(self, key: str) -> None:
        try:
            self.store.delete(key)
        except Exception as e:
            self._failed(e, "deleting")

    def clear(self, namespace: str | None = None) -> int:
        return self.store.clear(namespace)

    def info(self) -> dict[str, Any]:
        return self.store.info()

    def close(self) -> None:
        self.store.close()

    def lease(self, keys: Sequence[str], holder: str) -> list[bool] | None:
        if not self._up():
            return None
        try:
            held = self.store.lease(keys, holder)
        except Exception as e:  # no leases: everyone computes
            self._failed(e, "leasing")
            return None
        return held

    def renew(self, keys: Sequence[str], holder: str) -> None:
        try:
            self.store.renew(keys, holder)
        except Exception as e:
            self._failed(e, "renewing leases")

    def release(self, keys: Sequence[str], holder: str) -> None:
        try:
            self.store.release(keys, holder)
        except Exception as e:  # the lease ends by itself
            self._failed(e, "releasing leases")

    def reopener(self) -> Callable[[], Store] | None:
        opener = self.store.reopener()
        return None if opener is None else functools.partial(_guard, opener, self.pause)
