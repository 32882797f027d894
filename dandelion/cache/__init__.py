"""Sound result caching.

A compute function's outputs are a function of its code and its inputs, so they are
memoized by default: the key of an instance hashes the function's identity
(:mod:`~dandelion.cache.identity`), the canonical content of its inputs
(:mod:`~dandelion.cache.content`) and its sharding (:mod:`~dandelion.cache.key`); entries
(:mod:`~dandelion.cache.entry`) live in pluggable stores (:mod:`~dandelion.cache.memory`,
:mod:`~dandelion.cache.disk`, :mod:`~dandelion.cache.redis_store`, stacked by
:class:`~dandelion.cache.store.StackStore`); a run sees them through
:class:`~dandelion.cache.run.RunCache`.
"""

from dandelion.cache.cache import Cache, CacheConfigError, namespace_of, open_cache, open_store
from dandelion.cache.content import Uncacheable
from dandelion.cache.disk import DiskStore, default_cache_dir
from dandelion.cache.memory import MemoryStore
from dandelion.cache.redis_store import RedisStore
from dandelion.cache.store import CacheWarning, GuardedStore, StackStore, Store

__all__ = ["Cache", "CacheConfigError", "CacheWarning", "DiskStore",
           "GuardedStore", "MemoryStore", "RedisStore", "StackStore", "Store", "Uncacheable",
           "default_cache_dir", "namespace_of", "open_cache", "open_store"]
