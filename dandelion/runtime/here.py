"""Driving an instance from the calling thread: no worker thread between a run and its sandbox.

A run whose caller then only waits for it (``Runtime.run``, ``dd.run``, ``dandelion run``)
used to hand its instance to a worker thread of the pool, which ran it in a generic sandbox
(the code sent and unpickled on every run) and then woke the caller: two thread wake-ups
per run, and none of the sandboxes made ready ahead that an event loop's invocations get
(:meth:`Engine.begin <dandelion.runtime.engine.Engine.begin>`, :mod:`.handoff`).  For a
plan that is one call of one instance (:func:`~dandelion.runtime.one_call.run_here`), where
the engine can begin a function without waiting for it (``process``), the calling thread
now does it all itself: it borrows one of the pool's engines
(:meth:`EnginePool.lend <dandelion.runtime.pool.EnginePool.lend>`, within the pool's bound
on invocations at once), places the inputs, begins the invocation (:meth:`Driven.start`),
waits on the sandbox's channel with the GIL released (:func:`wait`), and reads the outputs
(:meth:`Driven.finish`).  Where the engine cannot begin it without blocking (no sandbox
forked yet, code over 64 KiB) the same thread runs it with the engine's blocking
:meth:`~dandelion.runtime.engine.Engine.run`.

Measured with ``benchmarks/bench_here.py`` (both paths in one process, taking turns), see
``docs/performance.rst``.  A cached run looks its instance up *before* the hand-over: one
that begins first and hashes while the sandbox computes gained nothing on a machine of two
CPUs, because whatever the caller does then delays the sandbox (``docs/caching.rst``).
"""

from __future__ import annotations

import math
import select
import time
from typing import TYPE_CHECKING, Any, Callable

from dandelion.runtime.engine import Context, Engine, Invocation, check_outputs

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.runtime.engine import FunctionCall
    from dandelion.runtime.pool import EnginePool
    from dandelion.runtime.sharding import Instance


class Driven:
    """One instance begun on the calling thread (:meth:`start`): wait for it with
    :meth:`finish`, which releases what it holds (the sandbox ended, the context and the
    engine given back) whatever happens.

    Attributes:
        seconds: the time the function itself ran (where the engine measures it), once
            finished.
        logs: what the function printed, once finished.
    """

    __slots__ = ("pool", "engine", "call", "context", "invocation", "started", "seconds",
                 "logs")

    def __init__(self, pool: EnginePool, engine: Engine, call: FunctionCall,
                 context: Context, invocation: Invocation | None) -> None:
        self.pool, self.engine, self.call = pool, engine, call
        self.context, self.invocation = context, invocation
        self.started = time.perf_counter()
        self.seconds: float | None = None
        self.logs = ""

    @classmethod
    def start(cls, pool: EnginePool, engine: Engine, call: FunctionCall, inst: Instance
              ) -> Driven:
        """Begin ``inst`` of ``call`` on ``engine``, lent by ``pool`` (:meth:`EnginePool.lend
        <dandelion.runtime.pool.EnginePool.lend>`), which the instance gives back when it
        has ended.

        Raises:
            DandelionError: placing the inputs or handing them over failed (the engine is
                given back).
        """
        domain = engine.domain
        try:
            context = domain.acquire()
        except BaseException:
            pool.give_back(engine)
            raise
        try:
            context.place(inst.inputs)
            invocation = engine.begin(context, call)
        except BaseException:
            domain.release(context)
            pool.give_back(engine)
            raise
        # None: the engine cannot begin it without blocking (no sandbox forked yet, code
        # too large): it runs in finish(), on this thread all the same
        return cls(pool, engine, call, context, invocation)

    def finish(self, meanwhile: Callable[[], object] | None = None, after: float = 0.0
               ) -> Any:
        """Wait for the instance to end; its outputs, checked against the function's
        declaration.  ``meanwhile`` is called once, ``after`` seconds from now, if the
        instance is still under way then (where the engine began it; else never).

        Raises:
            DandelionError: the function failed, or ran past its time limit.
        """
        invocation = self.invocation
        try:
            if invocation is None:
                self.seconds = self.engine.run(self.context, self.call)
            else:
                self.seconds = wait(invocation, meanwhile, after)
            outputs = self.context.extract()
            self.logs = self.context.logs
            check_outputs(self.call.spec, outputs)
        finally:  # the sandbox ended (whatever it reported), the context and engine back
            try:
                if invocation is not None:
                    invocation.end()
            finally:
                self.engine.domain.release(self.context)
                self.pool.give_back(self.engine)
        self.pool.measure(self.call, 1, time.perf_counter() - self.started, self.seconds)
        return outputs


def wait(invocation: Invocation, meanwhile: Callable[[], object] | None = None,
         after: float = 0.0) -> float | None:
    """Wait on the calling thread (the GIL released) for ``invocation`` to end; its
    outcome (:meth:`Invocation.outcome <dandelion.runtime.engine.Invocation.outcome>`).
    ``meanwhile`` is called once if it has not ended ``after`` seconds from now.

    Raises:
        DandelionError: the function failed, or ran past its time limit (then it is
            ended).
    """
    limit = invocation.timeout
    now = time.monotonic()
    deadline = now + limit if limit else None
    due = now + after if meanwhile is not None else None
    fd = invocation.fd
    while True:  # (its channel may block: read only once it is readable)
        wake = min(t for t in (deadline, due) if t is not None) \
            if deadline is not None or due is not None else None
        if _readable(fd, None if wake is None else max(0.0, wake - now)):
            if invocation.feed():
                return invocation.outcome()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            invocation.end()
            raise invocation.timed_out()
        if due is not None and now >= due:
            assert meanwhile is not None
            due = None
            meanwhile()
            now = time.monotonic()


def _readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` became readable within ``timeout`` seconds (``None``: no limit), to
    the microsecond where the descriptor fits ``select`` (else to the millisecond)."""
    if fd < _SELECT_MAX:
        return bool(select.select((fd,), (), (), timeout)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))


#: descriptors below this fit a ``select`` set (FD_SETSIZE)
_SELECT_MAX = 1024
