"""Admission control: how much work a worker takes on before it refuses more.

A worker runs ``slots`` invocations at once (one per engine); the others wait.  Past
saturation a queue without bound only makes every answer late (and, on a small machine,
costs the CPU that the admitted ones need), so a new invocation is refused at once with 503
when

- ``max_waiting`` invocations already wait (a hard bound, whatever the functions cost), or
- more than one per slot waits and the new one's *expected wait* is over ``max_wait``
  seconds: its place in the queue times the measured time between two completions while
  every slot is busy (an exponentially weighted mean, so it follows the functions being
  run and the CPU the worker actually gets), or the time since the last completion if
  that is longer (so a function much slower than those before shows at once).

A queue of one invocation per slot is always admitted: a slow function's next call waits for
it rather than being refused.  Refusing needs only the request's head (the frontend asks
before it reads the body), and the answer says when to retry.

Example (two engines, at most 200 ms of waiting):

    >>> from dandelion.server.admission import Admission
    >>> a = Admission(slots=2, max_waiting=100, max_wait=0.2)
    >>> for _ in range(4):                     # two run, two wait: always admitted
    ...     a.enter(now=0.0)
    >>> a.refusal(now=0.01) is None            # no completion yet, and none due
    True
    >>> a.leave(now=0.05); a.enter(now=0.05)   # all busy: a completion every 50 ms
    >>> round(a.expected_wait(now=0.05), 3)    # the next one is third in line
    0.15
    >>> while a.refusal(now=0.05) is None:
    ...     a.enter(now=0.05)
    >>> a.admitted, round(a.expected_wait(now=0.05), 3)
    (6, 0.25)
    >>> print(a.refusal(now=0.05).message)
    the worker is overloaded: 4 invocations are waiting, about 250 ms of work
    >>> round(a.expected_wait(now=0.15), 3)    # 100 ms without a completion: 5 × 100 ms
    0.5
"""

from __future__ import annotations

import math
import time
from typing import Any

from dandelion.errors import DandelionError

#: Weight of the newest interval between completions in their running mean (about the last
#: 20 count).
WEIGHT = 0.05


class Overloaded(DandelionError):
    """The worker is past its admission bound (503, with ``Retry-After``).

    Attributes:
        reason: ``"queue"`` (``max_waiting`` wait) or ``"wait"`` (the expected wait is over
            ``max_wait``); the label of ``dandelion_refused_total`` in ``/metrics``.
        retry_after: seconds after which a retry should find room.
    """

    def __init__(self, message: str, *, reason: str = "queue", retry_after: int = 1,
                 **kw: Any) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(message, **kw)


class Admission:
    """The invocations a worker admitted, and whether it admits another one.

    Used from one thread (the frontend's event loop): :meth:`refusal` and, if ``None``,
    :meth:`enter` from a request's head (before its body is read), :meth:`leave` when it is
    done.

    Args:
        slots: invocations that run at once (the worker's engines).
        max_waiting: invocations that may wait at most.
        max_wait: seconds a newly admitted invocation may be expected to wait at most.
    """

    def __init__(self, slots: int, max_waiting: int, max_wait: float) -> None:
        self.slots = max(1, slots)
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        #: invocations admitted and not done
        self.admitted = 0
        #: seconds between two completions while every slot is busy (``None``: not yet seen)
        self.interval: float | None = None
        self._since: float | None = None  # the last completion, or when all became busy

    def expected_wait(self, now: float | None = None) -> float:
        """Seconds an invocation admitted at time ``now`` (default: now, on
        :func:`time.monotonic`) is expected to wait for a slot: its place in the queue
        times the interval between completions, or the time since the last one if that is
        longer (a function much slower than those before shows at once)."""
        ahead = self.admitted - self.slots + 1
        if ahead <= 0:
            return 0.0
        interval = self.interval or 0.0
        if self._since is not None:
            interval = max(interval, (time.monotonic() if now is None else now) - self._since)
        return ahead * interval

    def refusal(self, now: float | None = None) -> Overloaded | None:
        """Why a new invocation is refused at time ``now`` (``None``: it is admitted)."""
        waiting = self.admitted - self.slots
        if waiting >= self.max_waiting:
            return Overloaded(f"the worker is overloaded: {waiting} invocations are waiting",
                              reason="queue", hint=_HINT)
        if waiting < self.slots:
            return None
        wait = self.expected_wait(now)
        if wait <= self.max_wait:
            return None
        return Overloaded(f"the worker is overloaded: {waiting} invocations are waiting, "
                          f"about {wait * 1e3:.0f} ms of work", reason="wait", hint=_HINT,
                          retry_after=max(1, math.ceil(wait - self.max_wait)))

    def enter(self, now: float) -> None:
        """An invocation was admitted at time ``now`` (seconds, :func:`time.monotonic`)."""
        self.admitted += 1
        if self.admitted == self.slots:
            self._since = now

    def leave(self, now: float, ran: bool = True) -> None:
        """An admitted invocation is done at time ``now``; ``ran``: it was run (only then
        is its end a completion that tells how fast the slots drain)."""
        if ran and self.admitted >= self.slots and self._since is not None:
            sample = now - self._since
            self.interval = sample if self.interval is None else \
                self.interval + WEIGHT * (sample - self.interval)
            self._since = now
        self.admitted -= 1
        if self.admitted < self.slots:
            self._since = None


_HINT = "retry after the seconds in Retry-After, or add workers"
