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

import itertools
import threading
from typing import Callable, Hashable, Sequence

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

    def lead(self, key: Hashable) -> bool:
        """Lead ``key`` when nobody computes it (``True``: the caller must :meth:`land`
        it); else ``False``, and nothing changes (the caller may :meth:`join` it then).
        A run of one instance that missed leads its flight in this one call.

        >>> flights = SingleFlight()
        >>> flights.lead(b"k"), flights.lead(b"k")
        (True, False)
        """
        with self._lock:
            waiting = self._waiting
            if key in waiting:
                return False
            waiting[key] = _ALONE
            return True

    def join_many(self, keys: Sequence[Hashable], callback: Callable[[int], Callback]
                  ) -> list[bool]:
        """:meth:`join` for many keys at once; ``callback(i)`` makes the callback of the
        ``i``-th key, called only for those that follow."""
        fresh = dict.fromkeys(keys, _ALONE)
        with self._lock:
            waiting = self._waiting
            if len(fresh) == len(keys):  # no repeats: the common case
                if not waiting:  # nothing in flight: these are all that is
                    self._waiting = fresh
                    return [True] * len(keys)
                if waiting.keys().isdisjoint(fresh):
                    waiting.update(fresh)
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
        self.land_all([key], [entry])

    def land_all(self, keys: Sequence[Hashable], entries: Sequence[bytes | None]) -> None:
        """:meth:`land` each of ``keys`` with the entry at the same place in ``entries``
        (a key that is not in flight, ``None`` included, is skipped)."""
        with self._lock:
            followers = list(map(self._waiting.pop, keys, itertools.repeat(None)))
        if any(followers):  # somebody waits (nobody, usually: one pass over the keys)
            for waiting, entry in zip(followers, entries):
                for callback in waiting or ():
                    callback(entry)
