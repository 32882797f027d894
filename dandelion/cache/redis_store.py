"""A Redis cache store, shared by every worker and every node of a Ray cluster that reaches
the server.

Entries are plain string values under ``<prefix><namespace>/<key>``; bound the memory with
the server's own ``maxmemory`` and ``maxmemory-policy allkeys-lru`` (Redis then evicts the
least recently used entries), or give entries a ``ttl``.

Leases (:meth:`~dandelion.cache.store.Store.lease`) are keys ``<prefix>lease:<namespace>/<key>``
set with ``SET NX PX`` to the holder's token: they expire after ``lease_seconds`` unless the
holder renews them, and only the holder's token renews or releases one (a Lua script compares
it, in one step).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from dandelion.cache.store import Store

#: Every key this store writes starts with this.
DEFAULT_PREFIX = "dandelion:cache:"


class RedisStore(Store):
    """Entries in the Redis server at ``url`` (``redis://host:port/db``).

    Args:
        url: the server.
        prefix: put before every key (several caches can share one database).
        ttl: seconds an entry lives (``None``: until Redis evicts it).
        timeout: seconds to wait for the server before a lookup counts as failed.
        lease_seconds: how long a lease lasts unless its holder renews it.
    """

    kind = "redis"

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, ttl: float | None = None,
                 timeout: float = 2.0, lease_seconds: float = 10.0) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self.lease_seconds = lease_seconds
        self.client = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)

    def get(self, key: str) -> bytes | None:
        value = self.client.get(self.prefix + key)
        return value if isinstance(value, bytes) else None

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = self.client.mget([self.prefix + k for k in keys])
        return [v if isinstance(v, bytes) else None for v in values]

    def put(self, key: str, value: bytes) -> None:
        px = int(self.ttl * 1000) if self.ttl is not None else None
        self.client.set(self.prefix + key, value, px=px)

    def put_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        px = int(self.ttl * 1000) if self.ttl is not None else None
        with self.client.pipeline(transaction=False) as pipe:
            for key, value in entries:
                pipe.set(self.prefix + key, value, px=px)
            pipe.execute()

    def delete(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def clear(self, namespace: str | None = None) -> int:
        pattern = self.prefix + (f"{namespace}/*" if namespace else "*")
        removed = 0
        batch: list[Any] = []
        for key in self.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += self.client.delete(*batch)
                batch = []
        if batch:
            removed += self.client.delete(*batch)
        return removed

    def info(self) -> dict[str, Any]:
        leases = (self.prefix + "lease:").encode()  # held by runs in flight: not entries
        entries = sum(1 for key in self.client.scan_iter(match=self.prefix + "*", count=1000)
                      if not key.startswith(leases))
        memory = self.client.info("memory")
        return {"kind": self.kind, "location": self.url, "entries": entries,
                "bytes": memory.get("used_memory"), "max_bytes": memory.get("maxmemory")}

    def _leases(self, keys: Sequence[str]) -> list[str]:
        return [f"{self.prefix}lease:{k}" for k in keys]

    def lease(self, keys: Sequence[str], holder: str) -> list[bool] | None:
        px = max(1, int(self.lease_seconds * 1000))
        with self.client.pipeline(transaction=False) as pipe:
            for lease in self._leases(keys):
                pipe.set(lease, holder, nx=True, px=px)
            return [bool(taken) for taken in pipe.execute()]

    def renew(self, keys: Sequence[str], holder: str) -> None:
        if keys:
            self.client.eval(_RENEW, len(keys), *self._leases(keys), holder,
                             max(1, int(self.lease_seconds * 1000)))

    def release(self, keys: Sequence[str], holder: str) -> None:
        if keys:
            self.client.eval(_RELEASE, len(keys), *self._leases(keys), holder)

    def close(self) -> None:
        self.client.close()

    def reopener(self) -> Callable[[], Store] | None:
        return functools.partial(RedisStore, self.url, self.prefix, self.ttl, self.timeout,
                                 self.lease_seconds)


#: KEYS: leases, ARGV: holder, milliseconds: extend those the holder holds
_RENEW = """
for _, lease in ipairs(KEYS) do
    if redis.call('GET', lease) == ARGV[1] then redis.call('PEXPIRE', lease, ARGV[2]) end
end
"""

#: KEYS: leases, ARGV: holder: delete those the holder holds
_RELEASE = """
for _, lease in ipairs(KEYS) do
    if redis.call('GET', lease) == ARGV[1] then redis.call('DEL', lease) end
end
"""
