"""The result cache on Ray: keys are made and entries looked up on the nodes, in a store
every node reaches (a real Redis server), so what one node kept serves every node."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import Any

import attrs
import pytest

import dandelion as dd
from dandelion.cache import DiskStore, RedisStore
from dandelion.planner.flatten import flatten
from dandelion.runtime.events import Event, EventKind

pytestmark = pytest.mark.ray

SQUARES = """
    import dandelion as dd

    SCALE = 3

    def scaled(x):
        return x * SCALE

    @dd.compute
    def square(x: int) -> int:
        return scaled(x) * x

    @dd.composition
    def squares(xs: list[int]) -> list[int]:
        return square(dd.each(xs))
"""


def on_node(label: str) -> list[Any]:
    """Planner passes that put the entry's application 0 on the node labelled ``label``."""
    def pin(plan: Any, context: Any) -> tuple[Any, list[Any]]:
        return attrs.evolve(plan, hints={0: {"node": label}}), []

    return [flatten, pin]


@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_an_entry_kept_on_one_node_serves_another_node(ray_cluster, redis_url, load,
                                                       isolation):
    mod = load(SQUARES, f"squares_{isolation}")
    store = RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex}:")
    runs: list[list[Event]] = []
    for label in ("n1", "n2"):
        events: list[Event] = []
        with dd.Runtime(backend="ray", isolation=isolation, cache=store,
                        passes=on_node(label), observers=[events.append]) as rt:
            assert rt.run(mod.squares, [1, 2, 3, 4]) == [3, 12, 27, 48]
        runs.append(events)
    first, second = runs
    computed_on = {e.node for e in first if e.kind is EventKind.FINISHED}
    cached = [e for e in second if e.kind is EventKind.CACHED]
    served_on = {e.node for e in cached}
    assert len(computed_on) == 1 and len(served_on) == 1 and computed_on != served_on
    assert sum(e.hits or 0 for e in cached) == 4
    assert not [e for e in second if e.kind is EventKind.FINISHED]  # nothing ran again


SLOW = """
    import os
    import time
    import dandelion as dd

    FLAG = {flag!r}

    @dd.compute
    def slow(x: int) -> int:
        time.sleep(1.0)
        while os.path.exists(FLAG):  # (isolation="none": the test holds it here)
            time.sleep(0.05)
        return x * 10

    @dd.composition
    def slows(xs: list[int]) -> list[int]:
        return slow(dd.each(xs))
"""


@pytest.mark.parametrize("kind", ["redis", "disk"])
def test_identical_instances_in_flight_on_two_nodes_are_computed_once(ray_cluster, redis_url,
                                                                      load, tmp_path, kind):
    # leases in Redis, or lock files in a directory the nodes share
    mod = load(SLOW.format(flag=str(tmp_path / "none")), f"slow_two_nodes_{kind}")
    store = RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex}:") if kind == "redis" \
        else DiskStore(tmp_path / "shared")
    events: dict[str, list[Event]] = {"n1": [], "n2": []}
    results: dict[str, Any] = {}

    def run(label: str) -> None:
        with dd.Runtime(backend="ray", isolation="none", cache=store,
                        passes=on_node(label), observers=[events[label].append]) as rt:
            results[label] = rt.run(mod.slows, [1, 2, 3])

    threads = [threading.Thread(target=run, args=(label,)) for label in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"n1": [10, 20, 30], "n2": [10, 20, 30]}
    finished = [e for run in events.values() for e in run if e.kind is EventKind.FINISHED]
    assert sorted(e.instance for e in finished) == [0, 1, 2]  # each computed once
    cached = [e for run in events.values() for e in run if e.kind is EventKind.CACHED]
    assert sum(e.hits or 0 for e in cached) == 0  # in flight at once: the waiters missed


def test_a_lease_whose_holder_was_killed_expires_and_a_waiter_computes(ray_cluster,
                                                                       redis_url, load,
                                                                       tmp_path):
    flag = tmp_path / "hold"
    flag.touch()
    mod = load(SLOW.format(flag=str(flag)), "slow_killed")
    prefix = f"test-{uuid.uuid4().hex}:"
    store = RedisStore(redis_url, prefix=prefix, lease_seconds=1.0)
    client = store.client
    outcome: dict[str, Any] = {}

    def run(label: str) -> None:
        try:
            with dd.Runtime(backend="ray", isolation="none", cache=store,
                            passes=on_node(label)) as rt:
                outcome[label] = rt.run(mod.slows, [7])
        except dd.DandelionError as e:  # the holder's own run may fail with its worker
            outcome[label] = e

    holder = threading.Thread(target=run, args=("n1",), daemon=True)
    holder.start()
    deadline = time.monotonic() + 60
    leases: list[bytes] = []
    while not leases and time.monotonic() < deadline:
        leases = client.keys(prefix + "lease:*")
        time.sleep(0.05)
    assert leases, "the holder never leased its instance"
    token = client.get(leases[0]).decode()
    os.kill(int(token.split(":")[1]), signal.SIGKILL)  # the holder dies, lease and all
    flag.unlink()  # from now on slow(7) is quick: whoever computes it next finishes

    waiter = threading.Thread(target=run, args=("n2",), daemon=True)
    waiter.start()
    waiter.join(60)
    assert not waiter.is_alive(), "the waiter was blocked by a dead holder's lease"
    assert outcome["n2"] == [70]
    holder.join(60)
    assert not holder.is_alive()
    assert outcome["n1"] == [70] or isinstance(outcome["n1"], dd.DandelionError)


TOTALS = """
    import dandelion as dd

    @dd.compute
    def total(xs: list[int]) -> int:
        return sum(xs)

    @dd.composition
    def summed(xs: list[int]) -> int:
        return total(xs)
"""


def test_a_run_of_one_instance_shares_its_entry_with_watched_and_local_runs(ray_cluster,
                                                                           redis_url, load):
    # a plan of one application run as one instance: its run key is the instance's key
    # on Ray too, so an unwatched Ray run, a watched Ray run and a local run hit each
    # other's entries (one store, one namespace), and a changed input misses
    mod = load(TOTALS, "totals_one_instance")
    store = RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex}:")
    events: list[Event] = []

    def hits() -> list[tuple[int | None, int | None]]:
        made = [(e.hits, e.misses) for e in events if e.kind is EventKind.CACHED]
        events.clear()
        return made

    with dd.Runtime(backend="ray", isolation="none", cache=store) as rt, \
            dd.Runtime(backend="ray", isolation="none", cache=store,
                       observers=[events.append]) as watched, \
            dd.Runtime(engine="inline", workers=1, cache=store,
                       observers=[events.append]) as local:
        assert rt.run(mod.summed, [1, 2, 3]) == 6  # through the memo, kept
        assert watched.run(mod.summed, [1, 2, 3]) == 6
        assert local.run(mod.summed, [1, 2, 3]) == 6
        assert hits() == [(1, 0), (1, 0)]
        assert local.run(mod.summed, [4, 5]) == 9  # kept by a watched local run
        assert hits() == [(0, 1)]
        entries = store.info()["entries"]
        assert rt.run(mod.summed, [4, 5]) == 9  # served through the memo: nothing kept
        assert store.info()["entries"] == entries
        assert rt.run(mod.summed, [4, 6]) == 10  # another input: computed, kept
        assert store.info()["entries"] == entries + 1
        assert watched.run(mod.summed, [4, 6]) == 10
        assert hits() == [(1, 0)]
