"""The result cache on Ray: keys are made and entries looked up on the nodes, in a store
every node reaches (a real Redis server), so what one node kept serves every node."""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import pytest

import dandelion as dd
from dandelion.cache import RedisStore
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
