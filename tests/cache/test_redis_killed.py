"""A Redis server killed while runs use it (SIGKILL, in the middle of a run) fails no run:
its lookups and keeps become misses with one warning, the memory store in front of it still
serves, and every result is right."""

from __future__ import annotations

import threading
import warnings

import pytest

import dandelion as dd
from dandelion.cache import CacheWarning
from dandelion.runtime.events import EventKind
from tests.io.servers import REDIS, start_redis

PROGRAM = """
    import time

    import dandelion as dd

    @dd.compute
    def slow(x: int) -> int:
        time.sleep(0.02)
        return x * 3

    @dd.composition
    def slows(xs: list[int]) -> list[int]:
        return slow(dd.each(xs))
"""


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
@pytest.mark.parametrize("engine", ["inline", "process"])
def test_redis_killed_mid_run_fails_no_run(tmp_path, load, engine):
    mod = load(PROGRAM)
    proc, url = start_redis(str(tmp_path))
    events: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with dd.Runtime(engine=engine, workers=2, cache=["memory", url],
                            observers=[events.append]) as rt:
                assert rt.run(mod.slows, [1, 2, 3]) == [3, 6, 9]
                killer = threading.Timer(0.05, proc.kill)  # while the next run computes
                killer.start()
                assert rt.run(mod.slows, list(range(10, 30))) == [x * 3 for x in range(10, 30)]
                killer.join()
                proc.wait(timeout=10)
                assert rt.run(mod.slows, [4, 5]) == [12, 15]  # Redis gone from the start
                assert rt.run(mod.slows, [1, 2, 3]) == [3, 6, 9]  # the memory store serves
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert [w.category for w in caught] == [CacheWarning]
    assert "redis cache store failed" in str(caught[0].message)
    hits = [e.hits for e in events if e.kind is EventKind.CACHED]
    assert hits[0] == 0 and hits[-1] == 3
