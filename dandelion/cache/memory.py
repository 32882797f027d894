"""An in-process cache store: least recently used entries go first, bounded by bytes.

>>> store = MemoryStore(max_bytes=10)
>>> store.put("ns/a", b"123456"); store.put("ns/b", b"123456")
>>> store.get("ns/a"), store.get("ns/b")
(None, b'123456')
"""

from __future__ import annotations

import functools
import operator
import threading
from collections import OrderedDict
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
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def get_many(self, keys: Any) -> list[bytes | None]:
        entries = self._entries
        with self._lock:
            out = list(map(entries.get, keys))
            if out.count(None) < len(out):  # some hit: they are the most recently used
                for k, v in zip(keys, out):
                    if v is not None:
                        entries.move_to_end(k)
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
                    for key, _ in entries:
                        stored.move_to_end(key)
                    self._bytes = sum(map(len, stored.values()))
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
                for key in keys:
                    stored.move_to_end(key)
                self._bytes = sum(map(len, stored.values()))
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently used entries beyond the bound (lock held)."""
        stored = self._entries
        while self._bytes > self.max_bytes:
            _, evicted = stored.popitem(last=False)
            self._bytes -= len(evicted)

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
