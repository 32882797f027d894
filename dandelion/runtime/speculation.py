"""Speculation: an all-miss run of one array computes while its input is hashed.

A cached run must hash its input before it can look it up, and only then, on a miss, hands
its function to the engine: for the paper's matrix (128×128 int64 on ``process``) the hash
and the lookups are some 100 µs of the run's 3 ms, all on its path.  A compute function is
pure, so running it before the lookup is always safe: where a program's recent runs missed,
:meth:`Speculation.run` hands the instance to the engine *first* (an uncached start,
:meth:`Backend.start <dandelion.runtime.backend.Backend.start>`), then hashes the input and
looks it up while the sandbox computes (the hash releases the GIL, so the worker hands the
instance over meanwhile; the machine has another CPU for it):

- on a miss it leads the instance's flight, reserves the entry's memory
  (:func:`~dandelion.cache.entry.reserve`), waits for the answer, keeps it under the key and
  lands the flight, as the dispatcher would have;
- on a hit it returns the cached outputs at once and cancels the speculative run, whose
  answer, when it comes, is dropped: nothing is kept twice, and no cache event is told
  (speculation happens only where nothing observes the run: a watched run goes through the
  dispatcher, which reports each application's hits and instances);
- a function that raises is not kept, and its flight lands empty (its followers compute).

It is done only where it cannot change an answer and where it pays:

- the backend gives the function a copy of its inputs (:attr:`Backend.inputs_copied
  <dandelion.runtime.backend.Backend.inputs_copied>`, the isolated engines): the caller's
  array is hashed while the function runs, so a function that wrote into the array it was
  given (the ``inline`` engine passes the caller's own) would have it keyed by what it
  wrote;
- the input is large enough for its hash to matter (:data:`LEAST_BYTES`), and its key is
  not known without hashing it (:meth:`ArrayRerun.known
  <dandelion.runtime.array_rerun.ArrayRerun.known>`: a frozen input seen last);
- the program's last :data:`MISSES` runs missed (a guess, as a branch predictor makes one:
  a hit sets it back);
- no other run of the program is in flight on this runtime: single-flight holds.  A run
  that cannot know its key before computing cannot join a flight it leads itself; so a
  speculation starts only alone, and a run of the program that missed while one computes
  waits until it has led its flight (it takes a hash's time) before it leads its own, so
  that an identical run follows it and is handed its entry.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Mapping

from dandelion.cache.entry import reserve as reserve_entry
from dandelion.cache.run import RunCache

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.cache.cache import Cache, KnownPrefix
    from dandelion.planner.plan import Plan
    from dandelion.program import Program
    from dandelion.runtime.array_rerun import ArrayRerun
    from dandelion.runtime.backend import Backend
    from dandelion.runtime.sharding import Items

#: Misses in a row after which a program's next run speculates.
MISSES = 2

#: The least input (bytes) whose run speculates: below it the hash costs less than the
#: uncached start's future (a hash of 16 KiB takes about 5 µs with BLAKE3 here).
LEAST_BYTES = 16384

#: Seconds a speculation waits for its instance to start on a worker before it hashes
#: the input anyway (a pool whose workers are all busy).
HANDED_WITHIN = 0.001

#: what :meth:`Speculation.run` answers when it started nothing
NOT_STARTED: Any = object()


class Speculation:
    """Whether, and how, the runs of one program (of an :class:`~dandelion.runtime.
    array_rerun.ArrayRerun`) on one runtime speculate (see the module's documentation)."""

    __slots__ = ("misses", "_lock", "_running", "_keying")

    def __init__(self) -> None:
        #: the program's misses in a row (a hit sets it to 0); negative: never speculate
        #: (the backend cannot start a run without a waiting thread)
        self.misses = 0
        self._lock = threading.Lock()
        #: the runs of the program that missed and are in flight
        self._running = 0
        #: set once the speculation in flight has led its flight (or found none to lead)
        self._keying: threading.Event | None = None

    def guess(self, value: Any) -> bool:
        """Whether a run on ``value`` should speculate: the program's last runs missed,
        ``value`` is large and no run of the program is in flight."""
        return self.misses >= MISSES and self._running == 0 and \
            getattr(value, "nbytes", 0) >= LEAST_BYTES

    def enter(self) -> None:
        """A run of the program that missed is about to lead its flight: counted as in
        flight (no speculation starts meanwhile) after the speculation in flight, if any,
        has led its own.  Pair with :meth:`leave`."""
        self.misses += 1
        with self._lock:
            self._running += 1
            keying = self._keying
        if keying is not None:
            keying.wait()

    def leave(self) -> None:
        """The run that :meth:`enter` ed has ended."""
        with self._lock:
            self._running -= 1

    def run(self, backend: Backend, program: Program, plan: Plan, sets: Mapping[str, Items],
            rerun: ArrayRerun, cache: Cache, value: Any) -> Any:
        """Run ``program`` on the bound ``sets`` (its one input ``value``) speculatively
        with ``cache`` (see the module's documentation): what :meth:`Runtime.run
        <dandelion.runtime.api.Runtime.run>` returns, or :data:`NOT_STARTED` where another
        run of the program is in flight or ``backend`` cannot start the run (then run it
        the usual way).

        Raises:
            FunctionError: the function failed (nothing is kept).
        """
        with self._lock:
            if self._running:
                return NOT_STARTED
            self._running += 1
            keying = self._keying = threading.Event()
        try:
            handed = threading.Event()  # set as the instance starts (told by its watch)
            future = backend.start(plan, sets, program.artifacts,
                                   observe=lambda _event: handed.set())
            if future is None:  # it needs a waiting thread: never again on this runtime
                self.misses = -1 << 62
                return NOT_STARTED
            # the worker it woke takes the CPU first (the caller hashing on it delayed the
            # hand-over to the sandbox by as much as the hash), and the GIL is released
            # while hashing, so that the worker hands the instance over meanwhile
            handed.wait(HANDED_WITHIN)
            return self._settle(future, program, sets, rerun, cache, value, keying)
        finally:
            with self._lock:
                self._running -= 1
                if self._keying is keying:
                    self._keying = None
            keying.set()

    def _settle(self, future: Any, program: Program, sets: Mapping[str, Items],
                rerun: ArrayRerun, cache: Cache, value: Any, keying: threading.Event) -> Any:
        """Key and look up the run while ``future`` computes it; then serve the hit, or
        keep what it computed."""
        memo = rerun.memo
        prefixes: dict[int, KnownPrefix] = {}
        made = rerun.key(cache, value, prefixes)
        key = made[0] if made is not None else memo.storage_key(cache, sets, {}, prefixes)
        leads = False
        if key is not None:
            if made is not None:
                output, data = rerun.serve(cache, key)
                if output is not None:  # a hit, in C
                    self.misses = 0
                    future.cancel()
                    return output
                served, _seen = memo.read(cache, key, data)
            else:
                served, _seen = memo.serve(cache, key)
            if served is not None:  # a hit
                self.misses = 0
                future.cancel()
                rerun.learn(served)
                return program.unbind(served)
            leads = cache.flights.lead(key)  # (not: another path computes it; this run's
        self.misses += 1  # own answer is returned, and theirs kept)
        keying.set()
        if not leads:
            return program.unbind(future.result())
        outputs: dict[str, Items] | None = None
        try:
            reserve_entry()  # the entry's memory, made while the function computes
            outputs = future.result()
        finally:
            results = memo.results(outputs) if outputs is not None else None
            RunCache(cache).keep([key], [results] if results is not None else [],
                                 memo.plan.composition.applications[0].function)
        return program.unbind(outputs)
