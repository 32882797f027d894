"""Sandboxes made ready for one function: given its code ahead of its next invocation.

A hot invocation of a Python function on a generic sandbox spends part of its time in the
sandbox unpickling the function (about 0.1 ms warm, 0.4 ms in a sandbox that has not run
it before).  Once an invocation of a function that repeats has been answered, the engine
hands a generic sandbox, forked and locked down already, that function's code alone (no
context: :func:`_sandboxc.assign` with no descriptor); the sandbox unpickles it under its
filter and waits.  The function's next invocation sends that sandbox only its context, and
the function runs at once.

What stays as it was:

- **A fresh sandbox per invocation.**  The sandbox made ready has run nothing: it exits
  after the one invocation it serves, like any other — or, with ``reuse``, its zygote
  snapshots it before it is given the code and resets it after each invocation that
  succeeded (:meth:`Ahead.reset`), and it is given the same code again: provably as
  fresh, or ended (``docs/isolation.rst``, reusing a sandbox).
- **The same code, provably.**  A ready sandbox serves an invocation only if the code it
  was given is, byte for byte, the code that invocation would send (the same digest and
  equal pickles): a function registered again with new code (or another tenant's function
  of the same digest with other captured values) gets a generic sandbox, and the ready one
  is ended.  A sandbox holds nothing but what unpickling those bytes made, under the same
  filter and limits, so which tenant's request it serves cannot matter.
- **Failures.**  What unpickling raised (or how the sandbox died) is reported by the
  invocation it was made ready for, as if it happened then.

What it costs: each ready sandbox holds one of the zygote's generic sandboxes (they are not
replaced until it exits), for at most ``limit`` functions.  Only a function invoked again
while it is among the functions of the last :data:`RECENT` invocations is made ready (a
one-off request makes none); a ready sandbox is pushed out (ended: the zygote replaces it
with a generic one) only for another function once its own has left those, so that
functions taking turns never push each other's out (which would waste an unpickling per
request); and none is made when no generic sandbox is forked (a burst outran the pool).
A function that is not invoked again keeps its ready sandbox idle until it is pushed out,
which then cost an unpickling for nothing.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from dandelion.backends.engines.process import _sandboxc, pool
from dandelion.backends.engines.process.protocol import ASSIGN, ASSIGN_MAGIC, KIND_PYTHON
from dandelion.errors import BackendError

#: How many of the latest invocations a function must be among to count as repeating.
RECENT = 8
#: How long handing a sandbox its code ahead may wait for room on its channel (it never
#: should: the code is at most the hand-over's bound, and the channel is new).
_SEND_SECONDS = 0.05


class _Readied:
    """A sandbox given a function's code: the code (its exact bytes) and where it runs."""

    __slots__ = ("code", "zygote", "sandbox")

    def __init__(self, code: bytes, zygote: pool.Zygote, sandbox: pool.Sandbox) -> None:
        self.code, self.zygote, self.sandbox = code, zygote, sandbox


class Ahead:
    """Per-function ready sandboxes of one engine, for at most ``limit`` functions (keyed by
    digest): at most one single-use sandbox per function and, with ``reuse``, up to
    ``per_function`` reusable ones; a function's are pushed out together, least recently
    used function first, and only once it has left the latest invocations.

    Args:
        limit: functions with ready sandboxes at once (0: none is made ready).
        memory_limit: the engine's, as its assignments carry it.
        reuse: a sandbox made ready is snapshotted by its zygote first (where the zygote's
            sandboxes can be: :attr:`.pool.Zygote.reuse`) and, after each invocation that
            succeeded, reset and made ready again for the same function (:meth:`reset`)
            rather than ended.
        per_function: reusable sandboxes one function may have alive: each invocation of
            it that overlaps the others (finds none ready) runs on a single-use sandbox,
            and once answered makes another reusable one, up to this many.
    """

    def __init__(self, limit: int, memory_limit: int, reuse: bool = False,
                 per_function: int = 1) -> None:
        self.limit = max(0, limit)
        self.memory_limit = memory_limit
        self.reuse = reuse
        self.per_function = max(1, per_function)
        #: resets that failed (the sandbox discarded) and that were done
        self.discarded = self.resets = 0
        #: digest -> its resets under way
        self._resetting: collections.Counter[str] = collections.Counter()
        #: digest -> its reusable sandboxes alive, being snapshotted, ready, running or
        #: being reset (each snapshot costs its zygote tens of milliseconds: at most
        #: ``per_function`` are made, and one serves up to the zygote's bound of resets)
        self._reusable: dict[str, list[pool.Sandbox]] = {}
        #: digest -> its ready sandboxes, the one to take next last; least recently used
        #: function first
        self._ready: collections.OrderedDict[str, list[_Readied]] = collections.OrderedDict()
        #: digests of the latest invocations, newest last
        self._recent: collections.deque[str] = collections.deque(maxlen=RECENT)
        self._lock = threading.Lock()
        self._closed = False

    def seen(self, digest: str) -> bool:
        """Note an invocation of ``digest``; whether it repeats one of the latest."""
        if not self.limit:
            return False
        with self._lock:
            again = digest in self._recent
            self._recent.append(digest)
            return again

    def take(self, digest: str, code: bytes, zygote: pool.Zygote) -> pool.Sandbox | None:
        """A sandbox made ready with exactly ``code`` from ``zygote`` (a reusable one
        first), counted as running (``None``: there is none).  If those ready hold other
        code (the function was registered again), they are all ended."""
        if not self._ready:
            return None
        with self._lock:
            ready = self._ready.get(digest)
            if not ready:
                return None
            readied = ready[-1]
            same = (readied.code is code or readied.code == code) \
                and readied.zygote is zygote and not zygote.closed
            if same:
                ready.pop()
                self._ready.move_to_end(digest)
                if not ready:
                    del self._ready[digest]
            else:
                out = self._ready.pop(digest)
        if same:
            zygote.resume(readied.sandbox)
            return readied.sandbox
        for gone in out:
            self._end(gone)
        return None

    def make_ready(self, digest: str, code: bytes, zygote: pool.Zygote) -> None:
        """Hand a generic sandbox of ``zygote`` the code ``code`` (a Python function's
        pickle), to wait for the function's next invocation: a reusable one (snapshotted
        first) while ``digest`` has fewer than ``per_function`` and the sandbox can be
        (:attr:`.pool.Sandbox.trackable`), else a single-use one if none is ready or being
        reset for it; nothing if no generic sandbox is forked now."""
        with self._lock:
            if self._closed or not self.limit:
                return
            alive = [s for s in self._reusable.get(digest, ()) if s.channel >= 0]
            self._reusable[digest] = alive
            snap = self.reuse and zygote.reuse and len(alive) < self.per_function
            if digest in self._ready:
                self._ready.move_to_end(digest)
                if not snap:
                    return
            elif not snap and self._resetting[digest]:
                return  # it will be ready again (or make another)
            elif len(self._ready) >= self.limit and next(iter(self._ready)) in self._recent:
                return  # every ready one is for a function still invoked: none pushed out
        # one that can be snapshotted if any (past overlapping invocations the newest
        # ready ones were often forked with warm-ups off), else any, to serve once, and
        # one that can is forked for the next time
        sandbox = zygote.take_forked(trackable=True) if snap else None
        if snap and sandbox is None:
            zygote.want_trackable()
        if sandbox is None:
            sandbox = zygote.take_forked()
        if sandbox is None:
            return
        if snap and sandbox.ready and sandbox.trackable:  # waits, nothing sent to it yet
            with self._lock:
                alive = self._reusable.setdefault(digest, [])
                snap = len(alive) < self.per_function
                if snap:
                    alive.append(sandbox)
            if snap:
                zygote.snapshot(sandbox, lambda done: self._snapped(done, digest, code,
                                                                    zygote, sandbox))
                return
        self._hand(digest, code, zygote, sandbox)

    def _snapped(self, answer: int, digest: str, code: bytes, zygote: pool.Zygote,
                 sandbox: pool.Sandbox) -> None:
        """The zygote's answer to a snapshot of ``sandbox``: hand it the code (it is reset
        after its invocations if the snapshot was taken, else it serves one)."""
        if answer != pool.DONE:
            with self._lock:
                alive = self._reusable.get(digest, [])
                if sandbox in alive:
                    alive.remove(sandbox)
        if answer == pool.KILLED:
            _kill(zygote, sandbox)
            return
        sandbox.reusable = answer == pool.DONE
        if sandbox.reusable:  # it leaves the generic pool for good: fork one in its place
            zygote.refill()
        self._hand(digest, code, zygote, sandbox)

    def reset(self, digest: str, code: bytes, zygote: pool.Zygote, sandbox: pool.Sandbox,
              stopped: Callable[[], None] | None = None) -> None:
        """After a successful invocation on reusable ``sandbox`` (taken, its outputs read):
        have its zygote reset it, and make it ready for ``digest`` again with the same
        ``code``; if that fails (the zygote killed it), make another one ready.
        ``stopped`` is called once the sandbox can no longer reach its invocation's
        context: reset (its memory map is the snapshot's, which holds no context) or
        killed and exited."""
        def answer(answer: int) -> None:
            with self._lock:
                self._resetting[digest] -= 1
                if self._resetting[digest] <= 0:
                    del self._resetting[digest]
            # anything on its channel now was written by the invocation after its report
            if answer == pool.DONE and _sandboxc.ready(sandbox.channel) == 0:
                self.resets += 1
                if stopped is not None:
                    stopped()
                self._hand(digest, code, zygote, sandbox)
                return
            self.discarded += 1
            _kill(zygote, sandbox, stopped)
            self.make_ready(digest, code, zygote)

        with self._lock:
            self._resetting[digest] += 1
        zygote.reset(sandbox, answer)

    def _hand(self, digest: str, code: bytes, zygote: pool.Zygote, sandbox: pool.Sandbox
              ) -> None:
        """Send ``sandbox`` (taken, waiting for work) the code ``code`` and keep it ready
        for ``digest``: a reusable one besides those ready, a single-use one in place of
        the single-use one ready (if any)."""
        header = ASSIGN.pack(ASSIGN_MAGIC, KIND_PYTHON, 0, self.memory_limit, len(code), 0, 0)
        readied = _Readied(code, zygote, sandbox)
        try:
            _sandboxc.assign(sandbox.channel, -1, header, code, _SEND_SECONDS)
        except (OSError, TimeoutError):  # no room on its channel: none made ready
            _kill(zygote, sandbox)
            return
        try:
            zygote.set_aside(sandbox)
        except BackendError:  # its zygote is gone
            self._end(readied)
            return
        with self._lock:
            ready = self._ready.setdefault(digest, [])
            self._ready.move_to_end(digest)
            out = [] if sandbox.reusable else [r for r in ready if not r.sandbox.reusable]
            ready[:] = [r for r in ready if r not in out]
            # taken last-in first-out, the reusable ones last: the sandbox that ran most
            # recently has most of its memory still in the CPU's caches
            ready.insert(len(ready) if sandbox.reusable else 0, readied)
            while len(self._ready) > (0 if self._closed else self.limit):
                out.extend(self._ready.popitem(last=False)[1])
        for gone in out:
            self._end(gone)

    @staticmethod
    def _end(readied: _Readied) -> None:
        readied.zygote.resume(readied.sandbox)
        _kill(readied.zygote, readied.sandbox)

    def close(self) -> None:
        """End every ready sandbox."""
        with self._lock:
            self._closed = True
            out = [r for ready in self._ready.values() for r in ready]
            self._ready.clear()
        for readied in out:
            self._end(readied)


def _kill(zygote: pool.Zygote, sandbox: pool.Sandbox,
          exited: Callable[[], None] | None = None) -> None:
    """End a taken sandbox (counted as running); ``exited`` as for :meth:`.Zygote.end`."""
    try:
        zygote.end(sandbox, exited)
    except BackendError:  # its zygote is gone, and killed its sandboxes with it
        if exited is not None:
            exited()
