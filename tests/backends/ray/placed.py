"""Where a run's instances ran, read from its event stream."""

from __future__ import annotations

from typing import Any

import dandelion as dd
from dandelion.runtime.events import Event, EventKind


def run_placed(rt: dd.Runtime, target: Any, *args: Any) -> tuple[Any, dict[int, list[str]]]:
    """Run ``target``; its result and, per application of the entry composition, the node
    of each of its instances (from the run's events)."""
    placements: dict[int, list[str]] = {}

    def observe(event: Event) -> None:
        if event.kind is EventKind.FINISHED and event.composition == target.name:
            assert event.node is not None
            placements.setdefault(event.application, []).append(event.node)

    stop = rt.subscribe(observe)
    try:
        return rt.run(target, *args), placements
    finally:
        stop()
