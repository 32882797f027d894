"""Bytes moved between nodes in one run, from the sizes of the objects and where they were
made and read.

Every call of an observed run reports the node it ran on and the size of each of its
outputs (a unit: the bytes of each result set's values; a forming task: of each batch's
instances); the driver knows the sizes of the sets it put.  An argument of a call is
*moved* when it was made on another node than the one the call ran on: its bytes count
once per node that reads it (Ray pulls an object to a node once, and the calls on that node
share the copy).  An I/O instance whose request addresses storage that the topology puts
near another node moves its output's bytes from there (:func:`remote_read`).  The result
is one ``moved`` event per application (:class:`~dandelion.runtime.events.EventKind`),
whose ``bytes_in`` are the bytes its calls received from other nodes (``dandelion run
--stats`` shows them).
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from dandelion.backends.ray.recovery import Call, Recovery
from dandelion.runtime.events import Event, EventKind, Observer, items_bytes

#: Per call: the node it ran on and its outputs' sizes (``None`` where not reported).
Report = tuple[str, Sequence[int] | None]


def moved(recovery: Recovery, reports: Mapping[int, Report],
          sources: Mapping[Any, tuple[str, int]], driver: str) -> dict[int, int]:
    """Application index -> bytes its calls read from other nodes.

    Args:
        recovery: the run's calls (their newest generations).
        reports: per call (by ``seq``), its node and output sizes.
        sources: objects the driver put: ref -> (node, size).
        driver: the driver's node (a batch of instances it formed travels from there).
    """
    made: dict[Any, tuple[str, int]] = dict(sources)
    for call in recovery.calls:
        report = reports.get(call.seq)
        if report is None or report[1] is None:
            continue
        node, sizes = report
        assert sizes is not None
        for ref, size in zip(call.refs, sizes):
            made[ref] = (node, size)
    out: dict[int, int] = {}
    pulled: set[tuple[Any, str]] = set()
    for call in recovery.calls:
        report = reports.get(call.seq)
        if report is None:
            continue
        node = report[0]
        for ref in call.data:
            if isinstance(ref, list):  # a batch the driver formed, sent with the call
                source: tuple[str, int] | None = (driver, sum(items_bytes(i.inputs)
                                                              for i in ref))
                ref = id(ref)
            else:
                source = made.get(recovery.resolve(ref)) if _hashable(ref) else None
            if source is None or source[0] == node or (ref, node) in pulled:
                continue
            pulled.add((ref, node))
            out[call.index] = out.get(call.index, 0) + source[1]
    return out


def remote_read(storage_nodes: Mapping[tuple[int, int], str], out: dict[int, int],
                event: Event) -> None:
    """Add to ``out`` the bytes of a finished I/O instance that ran on another node than
    the one near the storage its request addresses (``storage_nodes``)."""
    if event.kind is not EventKind.FINISHED or event.engine != "io":
        return
    near = storage_nodes.get((event.application, event.instance))
    if near is not None and event.node != near:
        out[event.application] = out.get(event.application, 0) + (event.bytes_out or 0)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def report_moved(observe: Observer, composition: str, names: Sequence[str],
                 per_application: Mapping[int, int], spilled: Mapping[int, int]) -> None:
    """One ``moved`` event per application of ``composition`` (zero bytes included); its
    ``reason`` says how many units spilled off the node of their input
    (:func:`~dandelion.backends.ray.locality.follow`)."""
    now = time.time()
    for index, name in enumerate(names):
        n = spilled.get(index, 0)
        reason = (f"{n} unit(s) spilled to the least-loaded node: the node of their input "
                  "had its share of the application's units") if n else None
        observe(Event(EventKind.MOVED, composition, index, name, -1, "ray", None, now, now,
                      bytes_in=per_application.get(index, 0), reason=reason))


def status_report(call: Call, status: Any) -> Report | None:
    """A unit's node and output sizes from its status (``None``: a nested composition's
    status, which has no sizes)."""
    if isinstance(status, tuple) and len(status) > 4 and status[4] is not None:
        return str(status[1]), status[4]
    return None
