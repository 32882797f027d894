"""The one-call path (:mod:`dandelion.runtime.one_call`), started from a coroutine on its
loop as the server starts it (:meth:`dandelion.Runtime.start_here`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import dandelion as dd


@dd.compute
def busy(x: int) -> int:
    end = time.perf_counter() + 0.3  # (a sandbox may read the clock, not sleep)
    while time.perf_counter() < end:
        pass
    return x


@dd.compute
def noted(x: int) -> int:
    return x + 1


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_call_cancelled_before_its_instance_starts_never_runs(engine: str) -> None:
    """Cancelling the future of a call whose instance waits for the pool's one engine skips
    the instance (the worker thread, or the loop's hand-off, finds it cancelled); the call
    ahead of it is answered, and the engine serves the next call."""
    events: list[Any] = []

    async def main(rt: dd.Runtime) -> tuple[int, int]:
        loop = asyncio.get_running_loop()

        def start(f: Any, x: int) -> tuple[asyncio.Future[Any], Any]:
            program = f.program
            started = rt.start_here(rt.plan(f), program.bind((x,), {}), program.artifacts,
                                    None, events.append, loop)
            assert started is not None  # the one-call path takes it
            return started, program

        (ahead, program), (behind, _) = start(busy, 1), start(noted, 2)
        behind.cancel()
        first = program.unbind(await ahead)
        await asyncio.sleep(0.1)  # (what the engine does next: nothing of the cancelled)
        after, program = start(noted, 5)
        return first, program.unbind(await after)

    with dd.Runtime(engine=engine, workers=1) as rt:
        assert asyncio.run(main(rt)) == (1, 6)
    # noted started once: the call after; the cancelled one never began
    assert [(e.function, e.kind.value) for e in events if e.function == "noted"] == [
        ("noted", "started"), ("noted", "finished")]
