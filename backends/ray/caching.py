"""The result cache on Ray: keys made, entries looked up and kept where a unit runs.

The driver gives each unit of a cacheable application a :class:`UnitCache`: how to open
the runtime's store again in the unit's process (:meth:`~dandelion.cache.store.Store.reopener`:
the same Redis server or directory, with a memory store of that process in front), the run's
namespace, and the application.  The unit computes its instances' keys from their contents
on the node, serves what the store has, runs the rest and keeps their outputs.  Served
outputs become the unit's outputs like computed ones, objects on that node: a hit travels
through the driver only when it is a direct output of the composition.  An entry kept by a
unit on one node serves units on every node that reaches the same store (Redis, or a
directory the nodes share).

Identical instances in flight on different units at once, on any node, are computed once
when the store is shared and has leases (Redis, a directory the nodes share): a unit leases
the keys it misses (:meth:`~dandelion.cache.store.Store.lease`), computes those it holds
while renewing their leases, and waits for the entries of the others, polling the store with
a doubling pause; a lease whose holder died expires after the store's ``lease_seconds``, and
the waiter computes the instance itself.  With a store that has no leases every unit
computes its misses.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

import attrs

from dandelion.cache.cache import Cache
from dandelion.cache.memory import MemoryStore
from dandelion.cache.run import RunCache
from dandelion.cache.store import GuardedStore, StackStore, Store
from dandelion.ir.nodes import Application, FunctionSpec
from dandelion.planner.cacheable import not_cached_because
from dandelion.planner.plan import Plan
from dandelion.runtime.events import Event, EventKind

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.backends.ray.worker import UnitEvents, UnitSpec
    from dandelion.runtime.engine import FunctionCall
    from dandelion.runtime.sharding import Instance

log = logging.getLogger("dandelion.cache")


@attrs.frozen
class NodeCache:
    """The runtime's cache as the units of one run reopen it (picklable).

    Attributes:
        opener: opens the store in a unit's process.
        key: names the store among those a process has opened.
        namespace: the run's namespace.
        refresh: lookups all miss (everything is computed and kept again).
    """

    opener: Callable[[], Store]
    key: str
    namespace: str
    refresh: bool = False


def node_cache(cache: Cache) -> NodeCache | None:
    """How units reopen ``cache`` (``None``, with a warning, when its store cannot be
    opened in another process: then the run is not cached)."""
    opener = cache.store.reopener()
    if opener is None:
        log.warning("the cache's store cannot be opened on the Ray nodes: not caching")
        return None
    key = hashlib.sha256(pickle.dumps(opener)).hexdigest()
    return NodeCache(opener, key, cache.namespace, cache.refresh)


@attrs.frozen
class UnitCache:
    """What a unit needs of the cache: the store, the application its instances are of
    (their sharding enters the key), and why it is not cached, if it is not (the unit
    then only says so in its ``cached`` event)."""

    node: NodeCache
    app: Application
    reason: str | None = None


def for_unit(node: NodeCache | None, plan: Plan, index: int, spec: FunctionSpec
             ) -> UnitCache | None:
    """The :class:`UnitCache` of the units of application ``index`` (``None``: the run
    is not cached)."""
    if node is None:
        return None
    return UnitCache(node, plan.composition.applications[index],
                     not_cached_because(plan, index, spec))


_stores: dict[str, Store] = {}
_lock = threading.Lock()


def _open(node: NodeCache) -> Cache:
    """The cache of ``node`` in this process (its store opened once per process)."""
    with _lock:
        store = _stores.get(node.key)
        if store is None:
            store = node.opener()
            front = store.stores[0] if isinstance(store, StackStore) else store
            if not isinstance(getattr(front, "store", front), MemoryStore):
                store = StackStore([GuardedStore(MemoryStore()), store])
            store = _stores[node.key] = store
    return Cache(store, node.namespace, node.refresh)


Compute = Callable[[list["Instance"]], list[Any]]

#: seconds between a waiter's first looks for an entry another unit computes; doubling up to
FIRST_POLL = 0.005
#: seconds
MAX_POLL = 0.25


def run_cached(unit: UnitSpec, call: FunctionCall, insts: Sequence[Instance],
               compute: Compute, events: UnitEvents | None) -> list[Any]:
    """The outputs of ``insts``: served by the cache where it has them, else from
    ``compute`` (given the instances left, in order), and then kept.  With ``events``, one
    ``cached`` event says what the cache did."""
    cache = unit.cache
    if cache is None:
        return compute(list(insts))
    start = time.time()
    if cache.reason is not None:
        outputs = compute(list(insts))
        _report(unit, events, start, 0, 0, 0, cache.reason)
        return outputs
    run = RunCache(_open(cache.node))
    found = run.lookup(cache.app, call.spec, call, insts)
    outputs = list(found.hits)
    todo = [i for i, hit in enumerate(found.hits) if hit is None]
    misses = sum(found.keys[i] is not None for i in todo)
    if todo:
        if cache.node.refresh:  # everything is computed again: nobody waits for anyone
            _compute_and_keep(run, call, insts, todo, found.keys, outputs, compute)
        else:
            _single_flight(run, call, insts, todo, found.keys, outputs, compute)
    _report(unit, events, start, len(insts) - len(todo), misses, found.bytes_served,
            found.reason)
    return outputs


def _compute_and_keep(run: RunCache, call: FunctionCall, insts: Sequence[Instance],
                      todo: Sequence[int], keys: Sequence[str | None], outputs: list[Any],
                      compute: Compute) -> None:
    """Compute the instances at positions ``todo`` into ``outputs`` and keep them."""
    for i, out in zip(todo, compute([insts[i] for i in todo])):
        outputs[i] = out
    try:
        run.store([keys[i] for i in todo], [outputs[i] for i in todo])
    except Exception as e:  # the cache never fails a run
        log.warning("could not cache instances of '%s': %s", call.spec.name, e)


def _single_flight(run: RunCache, call: FunctionCall, insts: Sequence[Instance],
                   todo: Sequence[int], keys: Sequence[str | None], outputs: list[Any],
                   compute: Compute) -> None:
    """Compute the instances at positions ``todo`` once across the cluster: lease their
    keys in the shared store, compute and keep those this unit holds, and wait for the
    entries of those another unit holds, computing any whose lease ends without one (its
    holder failed or died).  A store without leases (memory only): compute them all."""
    store = run.cache.store
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    waiting = [i for i in todo if keys[i] is not None]
    mine = [i for i in todo if keys[i] is None]  # uncacheable: nobody else computes them
    pause = FIRST_POLL
    while True:
        held = store.lease([keys[i] for i in waiting], holder) if waiting else []  # type: ignore[misc]
        if held is None:  # no leases: compute them all
            mine += waiting
            waiting = []
        else:
            mine += [i for i, h in zip(waiting, held) if h]
            waiting = [i for i, h in zip(waiting, held) if not h]
        if mine:
            _compute_held(run, call, insts, sorted(mine), keys, outputs, compute, holder)
            mine = []
            pause = FIRST_POLL
        if not waiting:
            return
        time.sleep(pause)
        pause = min(2 * pause, MAX_POLL)
        entries = store.get_many([keys[i] for i in waiting])  # type: ignore[misc]
        still = []
        for i, data in zip(waiting, entries):
            served = run.adopt(data) if data is not None else None
            if served is None:
                still.append(i)
            else:
                outputs[i] = served
        waiting = still


def _compute_held(run: RunCache, call: FunctionCall, insts: Sequence[Instance],
                  todo: Sequence[int], keys: Sequence[str | None], outputs: list[Any],
                  compute: Compute, holder: str) -> None:
    """Compute and keep the instances at ``todo``, renewing this unit's leases of their keys
    while they run, and release them (kept or failed: waiters then take over)."""
    store = run.cache.store
    leased = [k for i in todo if (k := keys[i]) is not None]
    done = threading.Event()

    def renew() -> None:
        while not done.wait(store.lease_seconds / 3):
            store.renew(leased, holder)

    renewer = threading.Thread(target=renew, name="dandelion-lease", daemon=True)
    if leased:
        renewer.start()
    try:
        _compute_and_keep(run, call, insts, todo, keys, outputs, compute)
    finally:
        done.set()
        if leased:
            store.release(leased, holder)


def _report(unit: UnitSpec, events: UnitEvents | None, start: float, hits: int, misses: int,
            served: int, reason: str | None) -> None:
    """The unit's ``cached`` event, when its run is observed."""
    if events is None or unit.observe is None:
        return
    composition, application, engine = unit.observe
    events.events.append(Event(EventKind.CACHED, composition, application, unit.function, -1,
                               engine, events.node, start, time.time(), hits=hits,
                               misses=misses, bytes_served=served, reason=reason))
