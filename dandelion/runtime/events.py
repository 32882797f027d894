"""The event stream of a run: what each function instance did, for whoever observes.

A backend that is given an observer (a callable taking an :class:`Event`) reports every
instance it runs twice: ``started`` and ``finished`` (with its outcome, times and bytes),
and, for every application it looks up in the result cache, one ``cached`` event (its hits,
misses and the bytes served; instances served from the cache do not start or finish).
Benchmarks, tests, the CLI's ``--stats`` and run records subscribe
(``dd.Runtime(observers=[...])`` or :meth:`~dandelion.runtime.api.Runtime.subscribe`)
instead of reading attributes of the product; a run nobody observes builds no event at all.
New kinds are new :class:`EventKind` members: observers ignore kinds they do not know.

>>> from dandelion.runtime.events import Event, EventKind, summarize
>>> e = Event(EventKind.FINISHED, "c", 0, "f", 0, "inline", None, 1.0, 1.5, 8, 8, "ok")
>>> summarize([e, e])[0].mean_seconds, summarize([e, e])[0].bytes_in
(0.5, 16)
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Sequence

import attrs

from dandelion.ir.types import NamedEnum
from dandelion.runtime.pool import Watch
from dandelion.runtime.sharding import Instance


class EventKind(NamedEnum):
    """What happened to an instance (or, for ``cached``, to an application)."""

    STARTED = "started"
    FINISHED = "finished"
    #: the result cache's lookups for the instances of one application
    CACHED = "cached"
    #: the bytes one application's units read from other nodes (``bytes_in``), once per run
    #: on a multi-node backend (:mod:`dandelion.backends.ray.traffic`)
    MOVED = "moved"


@attrs.frozen(slots=True)
class Event:
    """One instance of one application, started or finished; or what the result cache did
    for one application (``cached``).

    Attributes:
        kind: :class:`EventKind`.
        composition: the composition the application belongs to (a nested composition's
            own name for the instances of its applications).
        application: the application's index in that composition.
        function: the function's name.
        instance: the instance's index among the application's instances (``-1`` for
            ``cached``, which is about all of them).
        engine: the engine that ran it (``io`` for I/O functions).
        node: where it ran: a Ray node id, ``None`` for this process.
        start: when it started (seconds since the epoch, :func:`time.time`).
        end: when it finished (``None`` for ``started``; for ``cached``, when the lookups
            were done).
        bytes_in: bytes of its inputs' values, as they are encoded to cross a sandbox
            (``None`` for ``started``).
        bytes_out: bytes of its outputs' values (``None`` unless it finished ``ok``).
        outcome: ``ok`` or ``failed`` for ``finished``, else ``None``.
        function_seconds: the time the function itself ran, where its engine measures it
            apart from the engine's own overhead (the ``process`` engine), else ``None``.
        hits: for ``cached``: the instances the cache served.
        misses: for ``cached``: the instances looked up and not found (computed, or
            waiting for an identical instance in flight).  Instances that are neither hits
            nor misses were not looked up: ``reason`` says why.
        bytes_served: for ``cached``: the size of the entries that hit.
        reason: for ``cached``: why the application, or one of its instances, was not
            looked up (``None`` when all were).
    """

    kind: EventKind
    composition: str
    application: int
    function: str
    instance: int
    engine: str
    node: str | None
    start: float
    end: float | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    outcome: str | None = None
    function_seconds: float | None = None
    hits: int | None = None
    misses: int | None = None
    bytes_served: int | None = None
    reason: str | None = None


#: Something that observes a run: called with each event, from the thread that made it
#: (keep it quick; it must not raise).
Observer = Callable[[Event], None]


def fan_out(observers: Sequence[Observer]) -> Observer | None:
    """One observer calling each of ``observers`` in order (``None`` when there is none)."""
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]
    chosen = tuple(observers)

    def each(event: Event) -> None:
        for observer in chosen:
            observer(event)

    return each


def watcher(observe: Observer, composition: str, application: int, function: str,
            engine: str, node: str | None = None) -> Watch:
    """A pool's :data:`~dandelion.runtime.pool.Watch` that tells ``observe`` about the
    instances of one application (where they run: ``engine`` on ``node``)."""
    def watch(inst: Instance, start: float, end: float | None, outputs: Any,
              error: BaseException | None, seconds: float | None) -> None:
        if end is None:
            observe(Event(EventKind.STARTED, composition, application, function, inst.index,
                          engine, node, start))
            return
        observe(Event(EventKind.FINISHED, composition, application, function, inst.index,
                      engine, node, start, end, items_bytes(inst.inputs),
                      None if error is not None else items_bytes(outputs),
                      "ok" if error is None else "failed", seconds))

    return watch


def value_bytes(value: Any) -> int:
    """The size of ``value`` as encoded for an item (:mod:`dandelion.codec`), worked out
    without encoding it where the size is known (bytes, text, numbers, arrays)."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    try:
        return len(json.dumps(value, separators=(",", ":"), default=str))
    except (TypeError, ValueError):
        return 0


def items_bytes(sets: Iterable[Iterable[Any]]) -> int:
    """The bytes of all items' values in ``sets`` (one iterable of items per set)."""
    return sum(value_bytes(item.value) for items in sets for item in items)


@attrs.define
class Summary:
    """What the instances of one application did in a run (:func:`summarize`)."""

    composition: str
    application: int
    function: str
    engines: set[str] = attrs.field(factory=set)
    nodes: set[str | None] = attrs.field(factory=set)
    instances: int = 0
    failed: int = 0
    seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    hits: int = 0
    misses: int = 0
    bytes_served: int = 0
    reasons: list[str] = attrs.field(factory=list)
    #: bytes its units read from other nodes (``None``: not reported, one node)
    moved: int | None = None
    #: what placement says about the application's units (spills)
    placement: list[str] = attrs.field(factory=list)

    @property
    def mean_seconds(self) -> float:
        """Mean seconds per instance."""
        return self.seconds / self.instances if self.instances else 0.0


def summarize(events: Iterable[Event]) -> list[Summary]:
    """Per application (in order of its first finished instance or cache lookup), the
    totals of its finished instances and of its cache lookups.

    >>> from dandelion.runtime.events import Event, EventKind, summarize
    >>> c = Event(EventKind.CACHED, "c", 0, "f", -1, "inline", None, 1.0, 1.0,
    ...           hits=3, misses=1, bytes_served=96)
    >>> e = Event(EventKind.FINISHED, "c", 0, "f", 3, "inline", None, 1.0, 1.5, 8, 8, "ok")
    >>> s, = summarize([c, e])
    >>> s.instances, s.hits, s.misses, s.bytes_served
    (1, 3, 1, 96)
    """
    out: dict[tuple[str, int], Summary] = {}
    for e in events:
        if e.kind not in (EventKind.FINISHED, EventKind.CACHED, EventKind.MOVED):
            continue
        s = out.get((e.composition, e.application))
        if s is None:
            s = out[e.composition, e.application] = Summary(e.composition, e.application,
                                                            e.function)
        if e.kind is EventKind.MOVED:
            s.moved = (s.moved or 0) + (e.bytes_in or 0)
            if e.reason is not None and e.reason not in s.placement:
                s.placement.append(e.reason)
            continue
        if e.kind is EventKind.CACHED:
            s.hits += e.hits or 0
            s.misses += e.misses or 0
            s.bytes_served += e.bytes_served or 0
            if e.reason is not None and e.reason not in s.reasons:
                s.reasons.append(e.reason)
            continue
        s.engines.add(e.engine)
        s.nodes.add(e.node)
        s.instances += 1
        s.failed += e.outcome != "ok"
        s.seconds += (e.end or e.start) - e.start
        s.bytes_in += e.bytes_in or 0
        s.bytes_out += e.bytes_out or 0
    return list(out.values())


def format_summary(summaries: Sequence[Summary]) -> str:
    """A table of :func:`summarize`'s result, one row per application: the instances that
    ran (those served from the cache did not), then the cache's hits, misses and bytes
    served; on a multi-node backend, the bytes each application read from other nodes and
    their total.

    >>> from dandelion.runtime.events import Event, EventKind, format_summary, summarize
    >>> c = Event(EventKind.CACHED, "c", 0, "f", -1, "inline", None, 1.0, 1.0,
    ...           hits=2, misses=1, bytes_served=64)
    >>> e = Event(EventKind.FINISHED, "c", 0, "f", 0, "inline", None, 1.0, 1.5, 8, 8, "ok")
    >>> print(format_summary(summarize([c, e])))  # doctest: +NORMALIZE_WHITESPACE
    application           instances engine        total s   mean ms   bytes in  bytes out
      hits misses   served
    c[0] f                        1 inline         0.5000   500.000          8          8
         2      1       64
    """
    names = [f"{s.composition}[{s.application}] {s.function}" for s in summaries]
    width = max([21, *map(len, names)])  # a fused chain's names are long
    rows = [f"{'application':<{width}} {'instances':>9} {'engine':<10} {'total s':>10} "
            f"{'mean ms':>9} {'bytes in':>10} {'bytes out':>10} {'hits':>6} {'misses':>6} "
            f"{'served':>8}"]
    for name, s in zip(names, summaries):
        notes = [f"{s.failed} failed"] if s.failed else []
        notes += [f"not cached: {r}" for r in s.reasons]
        if s.moved:
            notes.append(f"{s.moved} bytes from other nodes")
        notes += s.placement
        note = f" ({'; '.join(notes)})" if notes else ""
        rows.append(f"{name:<{width}} {s.instances:>9} {','.join(sorted(s.engines)) or '-':<10} "
                    f"{s.seconds:>10.4f} {s.mean_seconds * 1e3:>9.3f} {s.bytes_in:>10} "
                    f"{s.bytes_out:>10} {s.hits:>6} {s.misses:>6} {s.bytes_served:>8}{note}")
    reported = [s.moved for s in summaries if s.moved is not None]
    if reported:
        rows.append(f"bytes moved between nodes: {sum(reported)}")
    return "\n".join(rows)
