"""A Redis cache store, shared by every worker and every node of a Ray cluster that reaches
the server.

Entries are plain string values under ``<prefix><namespace>/<key>``; bound the memory with
the server's own ``maxmemory`` and ``maxmemory-policy allkeys-lru`` (Redis then evicts the
least recently used entries), or give entries a ``ttl``.
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
    """

    kind = "redis"

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, ttl: float | None = None,
                 timeout: float = 2.0) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
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
        entries = sum(1 for _ in self.client.scan_iter(match=self.prefix + "*", count=1000))
        memory = self.client.info("memory")
        return {"kind": self.kind, "location": self.url, "entries": entries,
                "bytes": memory.get("used_memory"), "max_bytes": memory.get("maxmemory")}

    def close(self) -> None:
        self.client.close()

    def reopener(self) -> Callable[[], Store] | None:
        return functools.partial(RedisStore, self.url, self.prefix, self.ttl, self.timeout)
