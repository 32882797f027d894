"""Key-value I/O functions over the worker's Redis server (``IoConfig.redis_url``).

==============  ====================================  =====================================
function        takes                                 gives
==============  ====================================  =====================================
``kv_get``      ``keys``: items whose value is a key  ``values``: one item per key found,
                                                      named after the key (missing keys
                                                      give no item)
``kv_set``      ``entries``: items named after the    ``keys``: the keys written
                key, holding the value (bytes)
``kv_delete``   ``keys``                              ``deleted``: 1 or 0 per key
==============  ====================================  =====================================

Outputs keep the item key of their input, so they can be joined with ``keyed``.  A key
``@name/key`` addresses ``key`` on the Redis server the I/O option ``stores`` names ``name``
(:mod:`dandelion.io.stores`); outputs are named after the key as it was given.
"""

from __future__ import annotations

from typing import Any, Sequence

from dandelion.io.engine import IoEngine, item_like
from dandelion.io.errors import IoError
from dandelion.io.functions import Items, platform_function
from dandelion.io.stores import address
from dandelion.items import Item


def _key(item: Item[Any], what: str) -> str:
    value = item.value
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode()
        except UnicodeDecodeError:
            value = None
    if not isinstance(value, str) or not value:
        raise IoError(f"{what}: a Redis key is a non-empty string, not {item.value!r:.60}")
    return value


def _bytes(item: Item[Any]) -> bytes:
    value = item.value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise IoError(f"kv_set: the value of '{item.name}' must be bytes or str, "
                  f"not {type(value).__name__}")


async def _call(engine: IoEngine, what: str, op: Any, url: str | None = None) -> Any:
    url = url or engine.config.redis_url
    try:
        client = await engine.redis(url)
        async with engine.semaphore:
            return await op(client)
    except IoError:
        raise
    except Exception as e:
        raise IoError(f"{what} failed on {url}: {type(e).__name__}: {e}",
                      hint="is the Redis server running? (I/O option redis_url)") from None


def _by_server(engine: IoEngine, keys: Sequence[str]) -> dict[str, list[int]]:
    """Server URL -> the positions of the keys it holds."""
    out: dict[str, list[int]] = {}
    for at, key in enumerate(keys):
        url, _ = address(engine.config, "redis", key)
        out.setdefault(url or engine.config.redis_url, []).append(at)
    return out


async def _per_server(engine: IoEngine, what: str, keys: Sequence[str], op: Any) -> list[Any]:
    """``op(client, keys within the server)`` for each server, its answers in key order."""
    answers: list[Any] = [None] * len(keys)
    for url, ats in _by_server(engine, keys).items():
        local = [address(engine.config, "redis", keys[at])[1] for at in ats]
        got = await _call(engine, what, lambda c, local=local: op(c, local), url)
        for at, value in zip(ats, got):
            answers[at] = value
    return answers


@platform_function("kv_get", params=[("keys", "set[any]")], results=[("values", "set[bytes]")])
async def kv_get(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """Read the value of every key; a missing key gives no item."""
    items = inputs[0]
    if not items:
        return [()]
    keys = [_key(i, "kv_get") for i in items]
    values = await _per_server(engine, "kv_get", keys, lambda c, ks: c.mget(ks))
    return [tuple(Item(v, key=i.key, name=k) for i, k, v in zip(items, keys, values)
                  if v is not None)]


@platform_function("kv_set", params=[("entries", "set[any]")], results=[("keys", "set[str]")])
async def kv_set(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """Store every entry's value under the entry's name."""
    items = inputs[0]
    if not items:
        return [()]
    mapping = {}
    for item in items:
        if not item.name:
            raise IoError(f"kv_set: entry with key {item.key} has no name",
                          hint="name each entry after the Redis key: dd.Item(value, name=key)")
        mapping[item.name] = _bytes(item)
    names = list(mapping)
    for url, ats in _by_server(engine, names).items():
        chunk = {address(engine.config, "redis", names[at])[1]: mapping[names[at]]
                 for at in ats}
        await _call(engine, "kv_set", lambda c, chunk=chunk: c.mset(chunk), url)
    return [tuple(Item(i.name, key=i.key, name=i.name) for i in items)]


@platform_function("kv_delete", params=[("keys", "set[any]")], results=[("deleted", "set[int]")])
async def kv_delete(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """Delete every key; each output is 1 if the key existed, else 0."""
    items = inputs[0]
    keys = [_key(i, "kv_delete") for i in items]

    async def delete(client: Any, local: list[str]) -> list[int]:
        async with client.pipeline(transaction=False) as pipe:
            for k in local:
                pipe.delete(k)
            return list(await pipe.execute())

    counts = await _per_server(engine, "kv_delete", keys, delete) if keys else []
    return [tuple(item_like(i, int(n)) for i, n in zip(items, counts))]
