"""Young garbage collected between invocations, not during them
(``dandelion/server/idle_gc.py``)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import dandelion as dd
from dandelion.server import Server, ServerConfig
from dandelion.server.admission import Admission
from dandelion.server.idle_gc import AFTER, IdleGC

SLOW = '''
import time
import dandelion as dd

@dd.compute
def slow(x: float) -> float:
    time.sleep(x)
    return x
'''

#: a young-generation threshold no test here reaches by itself
THRESHOLD = 20_000


@pytest.fixture
def threshold() -> Iterator[int]:
    old = gc.get_threshold()
    gc.set_threshold(THRESHOLD, old[1], old[2])
    try:
        yield THRESHOLD
    finally:
        gc.set_threshold(*old)


def test_a_collection_put_off_while_an_invocation_runs_comes_after_it(
        tmp_path: Path, threshold: int) -> None:
    """One invocation ends while another runs: nothing is collected then; once the other
    ends too, the young generation (over half its threshold) is collected."""
    config = ServerConfig(port=0, engine="inline", workers=2, state_dir=str(tmp_path))
    with Server(config).start_in_thread() as server, dd.Client(server.url) as client:
        client.register_source(SLOW)
        slow = client.function("slow")
        assert client.invoke(slow, 0.0) == 0.0
        assert server.frontend is not None and server.frontend.idle_gc is not None
        idle = server.frontend.idle_gc
        time.sleep(0.05)
        gc.collect()
        before = idle.collections
        kept = [[] for _ in range(threshold * 3 // 4)]  # young objects that stay
        results: list[Any] = []
        long = threading.Thread(target=lambda: results.append(
            dd.Client(server.url).invoke(slow, 1.0)))
        long.start()
        time.sleep(0.2)
        assert client.invoke(slow, 0.0) == 0.0  # ends while the long one runs
        time.sleep(0.2)
        assert idle.collections == before  # put off: an invocation runs
        assert gc.get_count()[0] >= threshold // 2
        long.join()
        assert results == [1.0]
        time.sleep(0.2)
        assert idle.collections == before + 1  # after the last one ended
        assert gc.get_count()[0] < threshold // 2
        assert len(kept) == threshold * 3 // 4  # collected, not freed: they are alive


def test_nothing_is_collected_below_half_the_threshold(threshold: int) -> None:
    async def main() -> int:
        admission = Admission(slots=1, max_waiting=4, max_wait=1.0)
        idle = IdleGC(asyncio.get_running_loop(), admission)
        gc.collect()
        idle.ended()
        await asyncio.sleep(AFTER * 5)
        return idle.collections

    assert asyncio.run(main()) == 0
