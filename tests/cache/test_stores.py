"""The stores: bounded memory, checked disk, real Redis, stacks, and failures as misses."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dandelion as dd
from dandelion.cache import (
    CacheWarning,
    DiskStore,
    GuardedStore,
    MemoryStore,
    RedisStore,
    StackStore,
    open_cache,
)
from dandelion.cache.cache import Cache
from dandelion.cache.disk import default_cache_dir
from dandelion.runtime.events import EventKind
from tests.cache.conftest import SQUARES as PROGRAM

KEY = "ns/" + "ab" * 32


def test_memory_store_evicts_the_least_recently_used_beyond_its_bound():
    store = MemoryStore(max_bytes=30)
    for k in "abc":
        store.put(f"ns/{k}", b"x" * 10)
    assert store.get("ns/a") == b"x" * 10  # a is now the most recently used
    store.put("ns/d", b"y" * 10)
    assert store.get("ns/b") is None and store.get("ns/a") is not None
    assert store.info()["bytes"] <= 30
    store.put("ns/huge", b"z" * 31)  # larger than the bound: not kept
    assert store.get("ns/huge") is None


def test_memory_store_over_its_bound_drops_the_least_recently_used_to_15_16_of_it():
    store = MemoryStore(max_bytes=160)
    keys = [f"ns/{i:02}" for i in range(16)]
    store.put_all(keys, [bytes(10)] * 16)  # full
    store.get_many(keys[:3])  # 0, 1 and 2 are now the most recently used
    store.put("ns/new", bytes(10))  # 170: down to 150
    assert store.info()["bytes"] == 150
    assert [k for k, v in zip(keys, store.get_many(keys)) if v is None] == keys[3:5]


def test_the_garbage_collector_does_not_visit_a_memory_store_s_entries():
    # each full collection of the process would visit them all (21 ms at 300,000 entries)
    store = MemoryStore()
    keys = [f"ns/{i}" for i in range(1000)]
    values = [f"entry {i}".encode() for i in range(1000)]
    store.put_all(keys, values)
    store.get_many(keys[:10])
    store.put("ns/one more", b"entry")
    gc.collect()
    assert gc.get_referrers(values[500]) == [values]  # only this test's list holds it


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 40)), max_size=40))
def test_memory_store_never_holds_more_than_its_bound(puts):
    store = MemoryStore(max_bytes=64)
    for key, size in puts:
        store.put(f"ns/{key}", bytes(size))
        assert store.info()["bytes"] <= 64
    last = {k: size for k, size in puts}
    for key, size in last.items():
        value = store.get(f"ns/{key}")
        assert value is None or value == bytes(size)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 40)),
                         max_size=6), max_size=8))
def test_put_all_keeps_what_put_many_keeps(batches):
    apart, paired = MemoryStore(max_bytes=64), MemoryStore(max_bytes=64)
    for batch in batches:
        entries = [(f"ns/{key}", bytes(size)) for key, size in batch]
        apart.put_all([k for k, _ in entries], [v for _, v in entries])
        paired.put_many(entries)
        assert apart.info() == paired.info() and apart.info()["bytes"] <= 64
    keys = [f"ns/{k}" for k in "abcdefgh"]
    assert apart.get_many(keys) == paired.get_many(keys)


def test_a_run_s_cache_is_the_same_cache_knowing_what_the_run_knows():
    # Cache.knowing sets the fields itself (no constructor, for speed): every field must be
    # this cache's or the run's, as attrs.evolve makes them
    import attrs

    cache = open_cache(MemoryStore(), "tenant-a")
    assert cache is not None
    cache = cache.refreshing()
    known = ({1: (None, b"id")}, {2: None}, [("k", b"mark")], {3: "k"})
    run = cache.knowing(*known)
    evolved = attrs.evolve(cache, ids=known[0], prefixes=known[1], marks=known[2],
                           missed=known[3])
    assert type(run) is Cache
    for field in attrs.fields(Cache):
        assert getattr(run, field.name) is getattr(evolved, field.name), field.name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        run.namespace = "other"  # type: ignore[misc]


def test_disk_store_round_trips_and_survives_a_new_store_object(tmp_path):
    DiskStore(tmp_path).put(KEY, b"entry")
    assert DiskStore(tmp_path).get(KEY) == b"entry"
    assert not list(tmp_path.rglob(".tmp-*"))  # the temporary file was renamed


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_corrupt_or_truncated_disk_entry_is_a_miss_and_is_removed(tmp_path, damage):
    store = DiskStore(tmp_path)
    store.put(KEY, b"entry" * 100)
    (path,) = [p for p in tmp_path.rglob("*") if p.is_file()]
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-7], "flip": data[:-1] + bytes([data[-1] ^ 1]),
                      "empty": b""}[damage])
    assert store.get(KEY) is None
    assert not path.exists()


def test_disk_store_evicts_least_recently_used_entries_beyond_its_bound(tmp_path):
    store = DiskStore(tmp_path, max_bytes=10_000)
    for i in range(30):
        store.put(f"ns/{i:064x}", bytes(1000))
        os.utime(next(tmp_path.rglob(f"{i:064x}")), (i, i))  # an older use each
        store.get(f"ns/{0:064x}")  # keeps the first one recently used
    assert store.info()["bytes"] <= 10_000
    assert store.get(f"ns/{0:064x}") is not None
    assert store.get(f"ns/{1:064x}") is None


def test_clearing_one_namespace_keeps_the_others(tmp_path):
    for store in (MemoryStore(), DiskStore(tmp_path)):
        store.put("a/" + "00" * 32, b"1")
        store.put("b/" + "00" * 32, b"2")
        assert store.clear("a") == 1
        assert store.get("a/" + "00" * 32) is None and store.get("b/" + "00" * 32) == b"2"


def test_the_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DANDELION_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("DANDELION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == tmp_path / "xdg" / "dandelion"


@pytest.mark.redis
def test_redis_store_round_trips_in_batches_and_clears_a_namespace(redis_url):
    store = RedisStore(redis_url, prefix="test-store:")
    store.put("a/k1", b"one")
    store.put("b/k1", b"two")
    assert store.get_many(["a/k1", "a/k2", "b/k1"]) == [b"one", None, b"two"]
    assert store.clear("a") == 1
    assert store.get("a/k1") is None and store.get("b/k1") == b"two"
    store.close()


def test_a_stack_fills_the_stores_in_front_of_a_hit(tmp_path):
    front, back = MemoryStore(), DiskStore(tmp_path)
    stack = StackStore([front, back])
    back.put(KEY, b"entry")
    assert stack.get_many([KEY, "ns/" + "cd" * 32]) == [b"entry", None]
    assert front.get(KEY) == b"entry"
    stack.put("ns/" + "ef" * 32, b"both")
    assert back.get("ns/" + "ef" * 32) == b"both"


def test_a_failing_store_is_a_miss_with_one_warning(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory should be")
    store = GuardedStore(DiskStore(blocked / "cache"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.put(KEY, b"entry")
        store.put(KEY, b"entry")
        assert store.get(KEY) is None
    assert [w.category for w in caught] == [CacheWarning]
    assert "disk cache store failed" in str(caught[0].message)


RUN = """
import sys
sys.path.insert(0, sys.argv[1])
import dandelion as dd
import prog
events = []
with dd.Runtime(engine=sys.argv[3], workers=2, cache=sys.argv[2],
                observers=[events.append]) as rt:
    print(rt.run(prog.squares, [1, 2, 3]), sum(e.hits or 0 for e in events))
"""


def _run_in_new_process(tmp_path: Path, cache: str, engine: str) -> str:
    out = subprocess.run([sys.executable, "-c", RUN, str(tmp_path), cache, engine],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_new_process_hits_the_disk_store(tmp_path, engine):
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM))
    cache = str(tmp_path / "cache")
    assert _run_in_new_process(tmp_path, cache, engine) == "[1, 4, 9] 0"
    assert _run_in_new_process(tmp_path, cache, engine) == "[1, 4, 9] 3"


@pytest.mark.redis
def leasing_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                  lease_seconds: float) -> RedisStore | DiskStore:
    """A fresh store of ``kind`` that has leases: Redis (a real server) or a directory."""
    if kind == "redis":
        return RedisStore(request.getfixturevalue("redis_url"), lease_seconds=lease_seconds,
                          prefix=f"test-lease-{uuid.uuid4().hex}:")
    return DiskStore(tmp_path / "shared", lease_seconds=lease_seconds)


@pytest.mark.parametrize("kind", ["redis", "disk"])
def test_a_lease_has_one_holder_until_released_or_expired(kind, request, tmp_path):
    store = leasing_store(kind, request, tmp_path, lease_seconds=0.3)
    assert store.lease(["ns/a", "ns/b"], "alice") == [True, True]
    assert store.lease(["ns/a", "ns/c"], "bob") == [False, True]
    store.release(["ns/a", "ns/c"], "bob")  # bob's release leaves alice's lease
    assert store.lease(["ns/a", "ns/c"], "carol") == [False, True]
    store.release(["ns/a"], "alice")
    assert store.lease(["ns/a"], "bob") == [True]
    for _ in range(3):  # renewed by its holder, alice's lease of b outlives lease_seconds
        time.sleep(0.15)
        store.renew(["ns/b"], "alice")
        store.renew(["ns/b"], "bob")  # (not bob's: no effect)
    assert store.lease(["ns/b"], "bob") == [False]
    time.sleep(0.4)  # no longer renewed: it expires
    assert store.lease(["ns/b"], "bob") == [True]


HOLD = """
import sys, time
from dandelion.cache import DiskStore, RedisStore
kind, where = sys.argv[1], sys.argv[2]
store = RedisStore(where, prefix=sys.argv[3], lease_seconds=0.5) if kind == "redis" else \\
    DiskStore(where, lease_seconds=0.5)
assert store.lease(["ns/k"], "doomed") == [True]
print("held", flush=True)
while True:  # renews until killed
    store.renew(["ns/k"], "doomed")
    time.sleep(0.1)
"""


@pytest.mark.parametrize("kind", ["redis", "disk"])
def test_the_lease_of_a_killed_holder_expires(kind, request, tmp_path):
    store = leasing_store(kind, request, tmp_path, lease_seconds=0.5)
    where = store.url if isinstance(store, RedisStore) else str(store.root)
    prefix = store.prefix if isinstance(store, RedisStore) else ""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, kind, where, prefix],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        time.sleep(1.0)  # twice lease_seconds: renewed, it still holds
        assert store.lease(["ns/k"], "waiter") == [False]
    finally:
        holder.kill()  # SIGKILL: it releases nothing
        holder.wait()
    deadline = time.monotonic() + 10
    while store.lease(["ns/k"], "waiter") != [True]:
        assert time.monotonic() < deadline, "a dead holder's lease never expired"
        time.sleep(0.05)


def test_stores_without_leases_and_stacks_lease_in_their_shared_store(redis_url):
    assert MemoryStore().lease(["ns/a"], "alice") is None
    shared = RedisStore(redis_url, prefix=f"test-lease-{uuid.uuid4().hex}:")
    stack = open_cache(["memory", shared]).store
    assert stack.lease(["ns/a"], "alice") == [True]
    assert shared.lease(["ns/a"], "bob") == [False]
    stack.release(["ns/a"], "alice")
    assert shared.lease(["ns/a"], "bob") == [True]


def test_a_new_process_hits_the_redis_store(tmp_path, redis_url):
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM))
    RedisStore(redis_url).clear()
    assert _run_in_new_process(tmp_path, redis_url, "inline") == "[1, 4, 9] 0"
    assert _run_in_new_process(tmp_path, redis_url, "process") == "[1, 4, 9] 3"


def test_a_run_goes_on_when_redis_is_down(load):
    from tests.io.servers import free_port

    mod = load(PROGRAM)
    down = f"redis://127.0.0.1:{free_port()}/0"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dd.Runtime(engine="inline", cache=["memory", down]) as rt:
            assert rt.run(mod.squares, [2, 3]) == [4, 9]
            assert rt.run(mod.squares, [2, 3]) == [4, 9]  # served by memory
    assert [w.category for w in caught] == [CacheWarning]


def test_a_corrupt_disk_entry_is_recomputed_in_a_run(load, tmp_path):
    mod = load(PROGRAM)
    events: list = []
    cache = open_cache(tmp_path / "cache")
    with dd.Runtime(engine="inline", cache=cache, observers=[events.append]) as rt:
        rt.run(mod.squares, [5])
        for path in (tmp_path / "cache").rglob("*"):
            if path.is_file():
                path.write_bytes(path.read_bytes()[:-3])
        assert rt.run(mod.squares, [5]) == [25]
        assert rt.run(mod.squares, [5]) == [25]
    assert [e.hits for e in events if e.kind is EventKind.CACHED] == [0, 0, 1]


def test_a_store_reopened_in_another_process_sees_the_same_entries(tmp_path, redis_url):
    import pickle

    stack = open_cache(["memory", str(tmp_path / "disk"), redis_url]).store
    stack.clear()
    stack.put(KEY, b"entry")
    opener = stack.reopener()
    assert opener is not None
    again = pickle.loads(pickle.dumps(opener))()  # as a Ray node unpickles it
    kinds = [s.kind for s in again.stores]
    assert kinds == ["memory", "disk", "redis"] and again.get(KEY) == b"entry"
    assert again.stores[0].get(KEY) == b"entry"  # copied into the new memory store
    memory = MemoryStore(max_bytes=99)
    memory.put(KEY, b"entry")
    fresh = memory.reopener()()
    assert fresh.get(KEY) is None and fresh.max_bytes == 99  # a memory store of its own
    stack.clear()
