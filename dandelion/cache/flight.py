"""Single-flight: identical instances in flight at once are computed once.

The first to :meth:`SingleFlight.join` a key leads: it computes and then
:meth:`~SingleFlight.land` s the entry (or ``None`` when it failed or was cancelled).  Those
who join while it is in flight are called back with what it landed, and compute themselves
when that is ``None``.  Nobody blocks a thread while waiting.

>>> flights, got = SingleFlight(), []
>>> flights.join(b"k", got.append), flights.join(b"k", got.append)
(True, False)
>>> flights.land(b"k", b"entry"); got
[b'entry']
"""

from __future__ import annotations

import threading
from typing import Callable, Hashable, Iterable, Sequence

Callback = Callable[[bytes | None], None]

#: a flight in progress that nobody waits for yet
_ALONE: list[Callback] = []


class SingleFlight:
    """The keys being computed in this process, and who waits for each."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[Callback]] = {}
        self._lock = threading.Lock()

    def join(self, key: Hashable, callback: Callback) -> bool:
        """``True``: nobody computes ``key``, the caller now leads and must :meth:`land` it;
        ``False``: ``callback`` will receive what the leader lands."""
        return self.join_many([key], lambda _i: callback)[0]

    def join_many(self, keys: Sequence[Hashable], callback: Callable[[int], Callback]
                  ) -> list[bool]:
        """:meth:`join` for many keys at once; ``callback(i)`` makes the callback of the
        ``i``-th key, called only for those that follow."""
        fresh = dict.fromkeys(keys, _ALONE)
        with self._lock:
            waiting = self._waiting
            if len(fresh) == len(keys) and waiting.keys().isdisjoint(fresh):
                waiting.update(fresh)  # the common case: nothing in flight, no repeats
                return [True] * len(keys)
            out = []
            for i, key in enumerate(keys):
                followers = waiting.get(key)
                if followers is None:
                    waiting[key] = _ALONE
                    out.append(True)
                else:
                    if followers is _ALONE:
                        followers = waiting[key] = []
                    followers.append(callback(i))
                    out.append(False)
        return out

    def land(self, key: Hashable, entry: bytes | None) -> None:
        """The leader's result for ``key`` (``None``: it has none); wakes the followers."""
        self.land_many([(key, entry)])

    def land_many(self, landings: Iterable[tuple[Hashable, bytes | None]]) -> None:
        """:meth:`land` for many ``(key, entry)`` at once."""
        woken = []
        with self._lock:
            pop = self._waiting.pop
            for key, entry in landings:
                waiting = pop(key, None)
                if waiting:
                    woken.append((waiting, entry))
        for waiting, entry in woken:
            for callback in waiting:
                callback(entry)
