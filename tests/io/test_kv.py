"""The key-value functions against a real Redis server."""

from __future__ import annotations

import pytest

import dandelion as dd
from dandelion.io import kv_delete, kv_get, kv_set
from dandelion.io.errors import IoError

pytestmark = pytest.mark.redis


@dd.composition
def put(entries: list[dd.Item[bytes]]) -> list[str]:
    return kv_set(entries)


@dd.composition
def fetch(keys: list[dd.Item[str]]) -> list[dd.Item[bytes]]:
    return kv_get(keys)


@dd.composition
def drop(keys: list[str]) -> list[int]:
    return kv_delete(keys)


def test_set_get_delete_round_trip(redis_url):
    with dd.Runtime(engine="inline", workers=2, io={"redis_url": redis_url}) as rt:
        assert rt.run(put, [dd.Item(b"\x00binary", name="k1"), dd.Item(b"two", name="k2")]) \
            == ["k1", "k2"]
        got = rt.run(fetch, [dd.Item("k2", key=5), dd.Item("nope", key=6),
                             dd.Item("k1", key=7)])
        assert [(i.value, i.name, i.key) for i in got] == [(b"two", "k2", 5),
                                                           (b"\x00binary", "k1", 7)]
        assert rt.run(drop, ["k1", "k1", "zzz"]) == [1, 0, 0]
        assert rt.run(fetch, [dd.Item("k1")]) == []


def test_entry_without_a_name_is_an_error(redis_url):
    with dd.Runtime(engine="inline", io={"redis_url": redis_url}) as rt:
        with pytest.raises(IoError, match="has no name"):
            rt.run(put, [dd.Item(b"v")])


def test_unreachable_redis_is_a_clear_error():
    from tests.io.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    with dd.Runtime(engine="inline", io={"redis_url": url, "timeout": 1}) as rt:
        with pytest.raises(IoError, match="is the Redis server running"):
            rt.run(fetch, [dd.Item("k")])


def test_a_key_names_its_store(redis_url, tmp_path):
    from tests.io.servers import start_redis

    proc, other = start_redis(str(tmp_path))
    try:
        io = {"redis_url": redis_url, "stores": {"two": other}}
        with dd.Runtime(engine="inline", io=io, cache=False) as rt:
            assert rt.run(put, [dd.Item(b"a", name="@two/k"), dd.Item(b"b", name="k")]) \
                == ["@two/k", "k"]
            got = rt.run(fetch, ["@two/k", "k", "@two/missing"])
            assert [(i.value, i.name) for i in got] == [(b"a", "@two/k"), (b"b", "k")]
            with dd.Runtime(engine="inline", io={"redis_url": other}, cache=False) as alone:
                assert [i.value for i in alone.run(fetch, ["k"])] == [b"a"]
            with pytest.raises(IoError, match="names no configured store 'three'"):
                rt.run(fetch, ["@three/k"])
    finally:
        proc.terminate()
        proc.wait()
