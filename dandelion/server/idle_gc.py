"""The garbage collector's young generation collected between invocations, not during them.

Python collects its youngest generation whenever the objects allocated since the last
collection outnumber those freed by a threshold (700 by default): in the middle of
whichever request makes the count cross it.  A started worker's heap is frozen
(:func:`.server.freeze_heap`), so these collections are short, but a cold invocation leaves
some objects behind (its decoded function, its identity), and over 300-400 cold requests at
rest the young generation was collected 13-17 times during one, 0.2-0.3 ms each, and the
next generation once (``benchmarks/bench_tail.py --cold``; issue 19).

:class:`IdleGC` moves that work off the path: when an invocation ends and, :data:`AFTER`
seconds later (its answer sent), none is admitted, it collects the young generation if it
holds half its threshold or more (and the next generation with it when that is due, as the
collector itself would; the oldest is left to the collector).  A collection that comes
while an invocation runs is put off to the end of the next one; nothing is ever skipped
for good (the collector's own threshold still applies), so memory is freed as before.

    >>> import asyncio, gc
    >>> from dandelion.server.admission import Admission
    >>> from dandelion.server.idle_gc import AFTER, IdleGC
    >>> async def main() -> int:
    ...     admission = Admission(slots=2, max_waiting=8, max_wait=1.0)
    ...     idle = IdleGC(asyncio.get_running_loop(), admission)
    ...     gc.collect()
    ...     kept = [[] for _ in range(gc.get_threshold()[0] * 3 // 4)]  # young, and they stay
    ...     idle.ended()  # no invocation admitted: collected after AFTER seconds
    ...     await asyncio.sleep(AFTER * 5)
    ...     return idle.collections
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

import asyncio
import gc

from dandelion.server.admission import Admission

#: Seconds from an invocation's end to collecting, if no invocation is admitted by then:
#: its answer is written meanwhile (as the sandbox's end waits,
#: :data:`dandelion.runtime.handoff.RELEASE_AFTER`).
AFTER = 0.003


class IdleGC:
    """Collects the young generation of the worker's garbage collector when no invocation
    is admitted (see the module).

    Args:
        loop: the frontend's event loop (every method is called on it).
        admission: the frontend's admitted invocations.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, admission: Admission) -> None:
        self.loop = loop
        self.admission = admission
        #: young-generation collections made here
        self.collections = 0
        self._timer: asyncio.TimerHandle | None = None

    def ended(self) -> None:
        """An invocation ended: collect :data:`AFTER` seconds from now if none is admitted
        then (else at the end of a later one)."""
        if self._timer is None:
            self._timer = self.loop.call_later(AFTER, self._collect)

    def _collect(self) -> None:
        self._timer = None
        if self.admission.admitted or not gc.isenabled():
            return  # an invocation runs: its own end tries again
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[1] > thresholds[1]:  # the next generation is due too, as gc would
            gc.collect(1)
        elif counts[0] >= thresholds[0] // 2:
            gc.collect(0)
        else:
            return
        self.collections += 1

    def close(self) -> None:
        """Cancel a collection still waiting."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
