"""``dandelion cache info`` of a Redis store counts its entries, not the leases of runs in
flight."""

from __future__ import annotations

import uuid

from dandelion.cache import RedisStore


def test_redis_info_counts_entries_not_leases(redis_url):
    store = RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex}:")
    store.put("default/00aa", b"entry")
    assert store.lease(["default/00bb", "default/00cc"], "holder") == [True, True]
    # before: 3, the two leases counted as entries
    assert store.info()["entries"] == 1
    store.release(["default/00bb", "default/00cc"], "holder")
    assert store.clear() == 1
