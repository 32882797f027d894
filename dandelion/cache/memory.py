"""An in-process cache store: least recently used entries go first, bounded by bytes.

>>> store = MemoryStore(max_bytes=10)
>>> store.put("ns/a", b"123456"); store.put("ns/b", b"123456")
>>> store.get("ns/a"), store.get("ns/b")
(None, b'123456')

The entries are kept in a plain dictionary, least recently used first (a hit moves its entry
to the end).  Holding only strings and bytes, that dictionary is left alone by Python's
garbage collector, which would otherwise visit every entry on each full collection of the
process (an ``OrderedDict`` of 300,000 entries added 21 ms to each).  Going over its bound,
the store drops the least recently used entries until it is at most 15/16 full, so that
finding them (from the front of the dictionary) is paid once per sixteenth of the bound.
"""

from __future__ import annotations

import functools
import operator
import threading
from typing import Any, Callable

from dandelion.cache.store import Store

_VALUE = operator.itemgetter(1)

#: The default bound of a memory store.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class MemoryStore(Store):
    """Entries in a dictionary of this process, at most ``max_bytes`` of them."""

    kind = "memory"

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        #: least recently used first
        self._entries: dict[str, bytes] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entries = self._entries
            value = entries.pop(key, None)
            if value is not None:
                entries[key] = value  # now the most recently used: last
            return value

    def get_many(self, keys: Any) -> list[bytes | None]:
        entries = self._entries
        with self._lock:
            out = list(map(entries.get, keys))
            if out.count(None) < len(out):  # some hit: they are the most recently used
                for k, v in zip(keys, out):
                    if v is not None:
                        del entries[k]
                        entries[k] = v
            return out

    def put(self, key: str, value: bytes) -> None:
        self.put_many([(key, value)])

    def put_many(self, entries: Any) -> None:
        stored = self._entries
        entries = entries if isinstance(entries, list) else list(entries)
        size = sum(map(len, map(_VALUE, entries)))
        with self._lock:
            if size <= self.max_bytes:  # each fits: at once
                before = len(stored)
                stored.update(entries)
                if len(stored) - before == len(entries):  # all new: the usual
                    self._bytes += size
                else:  # some replaced (a refresh): they are the most recent, count again
                    self._to_end(key for key, _ in entries)
            else:
                for key, value in entries:
                    if len(value) > self.max_bytes:
                        continue
                    old = stored.pop(key, None)
                    if old is not None:
                        self._bytes -= len(old)
                    stored[key] = value
                    self._bytes += len(value)
                    self._evict()
            if self._bytes > self.max_bytes:  # (a call less: usually within its bound)
                self._evict()

    def put_all(self, keys: Any, values: Any) -> None:
        size = sum(map(len, values))
        if size > self.max_bytes or len(keys) != len(values):
            self.put_many(list(zip(keys, values)))
            return
        stored = self._entries
        with self._lock:
            before = len(stored)
            stored.update(zip(keys, values))  # (zip makes no pair per entry)
            if len(stored) - before == len(keys):  # all new: the usual
                self._bytes += size
            else:  # some replaced (a refresh): they are the most recent, count again
                self._to_end(keys)
            if self._bytes > self.max_bytes:  # (a call less: usually within its bound)
                self._evict()

    def _to_end(self, keys: Any) -> None:
        """Make ``keys`` the most recently used and count the bytes again (lock held; a
        dictionary's update keeps a replaced key in its place)."""
        stored = self._entries
        for key in keys:
            stored[key] = stored.pop(key)
        self._bytes = sum(map(len, stored.values()))

    def _evict(self) -> None:
        """Beyond the bound, drop the least recently used entries until at most 15/16 of
        it is used (lock held)."""
        if self._bytes <= self.max_bytes:
            return
        stored = self._entries
        goal = self.max_bytes - self.max_bytes // 16
        doomed, left = [], self._bytes
        for key, value in stored.items():  # the least recently used first
            if left <= goal:
                break
            doomed.append(key)
            left -= len(value)
        for key in doomed:
            del stored[key]
        self._bytes = left

    def delete(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)

    def clear(self, namespace: str | None = None) -> int:
        with self._lock:
            doomed = [k for k in self._entries
                      if namespace is None or k.startswith(namespace + "/")]
            for k in doomed:
                self._bytes -= len(self._entries.pop(k))
            return len(doomed)

    def info(self) -> dict[str, Any]:
        with self._lock:
            return {"kind": self.kind, "entries": len(self._entries), "bytes": self._bytes,
                    "max_bytes": self.max_bytes}

    def reopener(self) -> Callable[[], Store] | None:
        return functools.partial(MemoryStore, self.max_bytes)
