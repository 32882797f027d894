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
  after the one invocation it serves, like any other.
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
    """Per-function ready sandboxes of one engine: at most one for each of at most ``limit``
    functions (keyed by digest), pushed out in the order they were made ready, and only once
    their function has left the latest invocations.

    Args:
        limit: functions with a ready sandbox at once (0: none is made ready).
        memory_limit: the engine's, as its assignments carry it.
    """

    def __init__(self, limit: int, memory_limit: int) -> None:
        self.limit = max(0, limit)
        self.memory_limit = memory_limit
        self._ready: collections.OrderedDict[str, _Readied] = collections.OrderedDict()
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
        """The sandbox made ready with exactly ``code`` from ``zygote``, counted as running
        (``None``: there is none).  One made ready with other code is ended."""
        if not self._ready:
            return None
        with self._lock:
            readied = self._ready.pop(digest, None)
        if readied is None:
            return None
        if (readied.code is code or readied.code == code) and readied.zygote is zygote \
                and not zygote.closed:
            zygote.resume(readied.sandbox)
            return readied.sandbox
        self._end(readied)
        return None

    def make_ready(self, digest: str, code: bytes, zygote: pool.Zygote) -> None:
        """Hand a generic sandbox of ``zygote`` the code ``code`` (a Python function's
        pickle), to wait for the function's next invocation; nothing if one is ready for
        ``digest`` already, or no generic sandbox is forked now."""
        with self._lock:
            if self._closed or not self.limit:
                return
            if digest in self._ready:
                self._ready.move_to_end(digest)
                return
            if len(self._ready) >= self.limit and next(iter(self._ready)) in self._recent:
                return  # every ready one is for a function still invoked: none pushed out
        sandbox = zygote.take_forked()
        if sandbox is None:
            return
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
            old = self._ready.pop(digest, None)
            self._ready[digest] = readied
            out = [old] if old is not None else []
            while len(self._ready) > (0 if self._closed else self.limit):
                out.append(self._ready.popitem(last=False)[1])
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
            out = list(self._ready.values())
            self._ready.clear()
        for readied in out:
            self._end(readied)


def _kill(zygote: pool.Zygote, sandbox: pool.Sandbox) -> None:
    """End a taken sandbox (counted as running)."""
    try:
        zygote.end(sandbox)
    except BackendError:  # its zygote is gone, and killed its sandboxes with it
        pass
