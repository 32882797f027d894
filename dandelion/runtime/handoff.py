"""The hand-off from an event loop to an engine: instances started and awaited by the loop
itself, with no thread between the loop and the function.

An HTTP frontend starts a hot invocation from its event loop.  Through a worker thread,
that wakes four times: the loop hands the batch to a worker, the worker to the sandbox, the
sandbox reports to the worker, the worker resolves the loop's future.  Here, for an engine
that can :meth:`~dandelion.runtime.engine.Engine.begin` a function without waiting for it
(the ``process`` engine), the loop places the inputs, hands the function to a sandbox and
watches the sandbox's channel (``loop.add_reader``) for its report: two wake-ups.  The time
limit is a timer of the loop; an outcome that may block (a sandbox that died without a
report, whose zygote is asked how) is read on a thread of its own.

The pool's bound holds: an invocation driven here takes one of the pool's ``size`` engines
while it runs, like a worker thread does; one that finds none free waits in this
:class:`Handoff`'s queue, in order.  When the engine cannot begin the first of them
without blocking because it has nothing ready (no sandbox forked: a burst outran the
pool), the queue waits until the engine wakes the loop
(:meth:`~dandelion.runtime.engine.Engine.wake_when_ready`); what it can never begin from a
loop (code over 64 KiB, another engine) goes to the worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

from dandelion.errors import BackendError
from dandelion.runtime.engine import Context, Invocation, check_outputs

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.runtime.pool import Batch, EnginePool

T = TypeVar("T")

#: Seconds from an invocation's outcome to ending its sandbox and wiping its context, unless
#: another invocation comes first.  The answer is sent meanwhile: with ending at once, the
#: work that ending sets off in other processes (the sandbox's exit, its replacement's fork
#: and warm-up, the next ready sandbox's unpickling) took the CPUs from the answer's reader,
#: and one request at a time on an idle machine took 0.3-0.5 ms longer to arrive
#: (``bench_tail.py --rest``, issue 19).  An invocation that comes sooner ends the wait
#: right after its own hand-over: the pool needs the replacements then (back to back, the
#: wait made requests several milliseconds slower).
RELEASE_AFTER = 0.003


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running ``loop`` (so its callbacks may be added)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def awaitable(future: concurrent.futures.Future[T], loop: asyncio.AbstractEventLoop
              ) -> asyncio.Future[T]:
    """``asyncio.wrap_future(future)`` for a coroutine on ``loop``, without its wake-up
    when ``future`` is resolved on the loop itself (by an instance driven there): the
    outcome is handed over at once, not through the loop's self-pipe and another turn.
    Cancelling the awaitable cancels ``future``."""
    waiting: asyncio.Future[T] = loop.create_future()

    def settle(done: concurrent.futures.Future[T]) -> None:
        if waiting.done():  # cancelled meanwhile
            return
        if done.cancelled():
            waiting.cancel()
        elif done.exception() is not None:
            waiting.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            waiting.set_result(done.result())

    def handed(done: concurrent.futures.Future[T]) -> None:
        if on_loop(loop):
            settle(done)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(settle, done)

    def cancelled(w: asyncio.Future[T]) -> None:
        if w.cancelled():
            future.cancel()

    waiting.add_done_callback(cancelled)
    future.add_done_callback(handed)
    return waiting


class _Driven:
    """One instance under way: its batch, context, invocation and timer."""

    __slots__ = ("batch", "context", "invocation", "timer", "started", "stamp")

    def __init__(self, batch: Batch, context: Context, invocation: Invocation) -> None:
        self.batch = batch
        self.context = context
        self.invocation = invocation
        self.timer: asyncio.TimerHandle | None = None
        self.started = time.perf_counter()
        self.stamp = time.time() if batch.watch is not None else 0.0


class Handoff:
    """Runs a pool's one-instance batches from ``loop``, on an engine of its own.

    Args:
        pool: whose engines (its bound on invocations at once) it shares.
        loop: the event loop that drives the invocations; every method but
            :meth:`wake` and :meth:`close` is called on it.
    """

    def __init__(self, pool: EnginePool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.engine = pool.engine_factory()
        #: batches waiting for a free engine, first come first started
        self.waiting: collections.deque[Batch] = collections.deque()
        self._draining = False
        #: the first waiting batch could not begin yet: the engine wakes the loop when it can
        self._parked = False
        self._closed = False
        #: ended invocations whose sandboxes are ended after RELEASE_AFTER, and their timers
        self._releasing: dict[_Driven, asyncio.TimerHandle] = {}
        #: invocations under way: begun, their reports not read yet
        self._flying: set[_Driven] = set()

    def submit(self, batch: Batch) -> None:
        """Run ``batch`` (one instance) as soon as one of the pool's engines is free."""
        self.waiting.append(batch)
        self.drain()
        if self._releasing:
            # the machine is not at rest: what ending the sandboxes sets off (their
            # replacements forked, a sandbox made ready) is needed now, after this hand-over
            self.loop.call_soon(self.flush)

    def drain(self) -> None:
        """Start the waiting batches that the pool's free engines allow."""
        if self._draining:  # a batch that ended as it started: the loop below goes on
            return
        self._draining = True
        try:
            while self.waiting and not self._parked and self.pool.take_engine(here=True):
                batch = self.waiting.popleft()
                if self._start(batch):
                    continue
                self.pool.give_engine()
                self._parked = True  # until the engine says to try again
                try:
                    later = self.engine.wake_when_ready(batch.call, self._unpark_soon,
                                                        batch.instances[0].inputs)
                except Exception:  # e.g. its zygote is gone: a worker's run says so
                    later = False
                if later:
                    self.waiting.appendleft(batch)  # first again, once it can begin
                else:  # it never can: a worker runs it
                    self._parked = False
                    self.pool.tasks.put(batch)
        finally:
            self._draining = False

    def _unpark_soon(self) -> None:
        """From any thread: the engine may begin what waits now."""
        try:
            self.loop.call_soon_threadsafe(self._unpark)
        except RuntimeError:  # the loop closed: nothing runs there any more
            pass

    def _unpark(self) -> None:
        self._parked = False
        self.drain()

    def wake(self) -> None:
        """From another thread: an engine became free; start what waits (on the loop)."""
        if self.waiting and not self.loop.is_closed() and not on_loop(self.loop):
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop closed meanwhile: nothing runs there any more
                pass

    def _start(self, batch: Batch) -> bool:
        """Begin the batch's instance; ``False`` if the engine cannot without blocking."""
        inst = batch.instances[0]
        # An instance that ends as it starts is reported on the loop's next turn, never
        # from here: the dispatcher submits while it holds its run's lock, which reporting
        # takes (a failure to begin deadlocked the worker's event loop)
        if batch.cancelled.is_set():
            self.loop.call_soon(self._done, batch, None)
            return True
        domain = self.engine.domain
        context = domain.acquire()
        try:
            context.place(inst.inputs)
            invocation = self.engine.begin(context, batch.call)
        except BaseException as e:  # reported to the dispatcher, never lost
            domain.release(context)
            self.loop.call_soon(self._done, batch, e)
            return True
        if invocation is None:
            domain.release(context)
            return False
        driven = _Driven(batch, context, invocation)
        self._flying.add(driven)
        if batch.watch is not None:
            batch.watch(inst, driven.stamp, None, None, None, None)
        self.loop.add_reader(invocation.fd, self._readable, driven)
        if invocation.timeout:
            driven.timer = self.loop.call_later(invocation.timeout, self._expire, driven)
        return True

    def _readable(self, driven: _Driven) -> None:
        invocation = driven.invocation
        if not invocation.feed():
            return
        self._flying.discard(driven)
        self.loop.remove_reader(invocation.fd)
        if driven.timer is not None:
            driven.timer.cancel()
        if invocation.needs_thread():
            threading.Thread(target=self._conclude, args=(driven,), daemon=True,
                             name="dandelion-handoff").start()
        else:
            self._conclude(driven)

    def _expire(self, driven: _Driven) -> None:
        """The instance ran past its time limit: stop it and fail it."""
        invocation = driven.invocation
        self._flying.discard(driven)
        self.loop.remove_reader(invocation.fd)
        invocation.end()
        self._finish(driven, None, invocation.timed_out(), None)

    def _conclude(self, driven: _Driven) -> None:
        """Read the ended invocation's outputs (on the loop, or on a thread of its own)."""
        batch, context = driven.batch, driven.context
        outputs: Any = None
        error: BaseException | None = None
        seconds = None
        try:
            seconds = driven.invocation.outcome()
            outputs = context.extract()
            if context.logs:
                batch.logs.append((batch.instances[0], context.logs))
            check_outputs(batch.call.spec, outputs)
        except BaseException as e:  # reported to the dispatcher, never lost
            error, outputs = e, None
        self._finish(driven, outputs, error, seconds)

    def _finish(self, driven: _Driven, outputs: Any, error: BaseException | None,
                seconds: float | None) -> None:
        batch = driven.batch
        if error is None:
            self.pool.measure(batch.call, 1, time.perf_counter() - driven.started, seconds)
            batch.results.append(outputs)
        if batch.watch is not None:
            batch.watch(batch.instances[0], driven.stamp, time.time(), outputs, error,
                        seconds)
        self._done(batch, error)
        if on_loop(self.loop):
            # Ending the sandbox and wiping the context are off the request's path, and
            # so is what ending it sets off: its exit, the zygote forking a replacement and
            # a sandbox unpickling the function ahead of its next invocation (CPU work in
            # other processes, a few milliseconds of it).  They wait RELEASE_AFTER, so that
            # the answer reaches its reader before that work competes with it for the CPUs.
            self._releasing[driven] = self.loop.call_later(RELEASE_AFTER,
                                                           self._release_later, driven)
        else:
            self._release(driven)

    def _release_later(self, driven: _Driven) -> None:
        """:meth:`_release`, once: from the invocation's timer, or from :meth:`flush` (on
        another thread) if that comes first."""
        if self._releasing.pop(driven, None) is not None:
            self._release(driven)

    def _release(self, driven: _Driven) -> None:
        """End the invocation's sandbox (whatever it reported) and wipe its context (a
        closed engine's contexts are gone already)."""
        driven.invocation.end()
        if not self._closed:
            self.engine.domain.release(driven.context)

    def _done(self, batch: Batch, error: BaseException | None) -> None:
        """Free the engine, tell the batch's owner, start what waits."""
        self.pool.give_engine()
        batch.done(batch, None if error is None else (batch.instances[0], error))
        if on_loop(self.loop):
            self.drain()

    def close(self) -> None:
        """Release the engine (invocations under way still end, on the loop, if it still
        runs: else :meth:`abandon`; those that ended and wait for :data:`RELEASE_AFTER` are
        released now: :meth:`flush`)."""
        self.flush()
        if self.loop.is_closed():
            self.abandon()
        self._closed = True
        self.engine.close()

    def abandon(self) -> None:
        """End what a loop that closed left under way or waiting, which it never will: a
        run that failed ends ``asyncio.run`` while its other instances still run, and each
        of them held a sandbox, a context and one of the pool's engines until the process
        exited.  Their sandboxes are ended, and their batches fail (the run they belong to
        has failed already, or is told its loop is gone).  Called from any thread, once the
        loop is closed (it runs no callback any more)."""
        assert self.loop.is_closed()
        gone = BackendError("the event loop that drove this instance closed before it ended",
                            hint="await every run started on a loop before the loop ends")
        flying, self._flying = list(self._flying), set()
        for driven in flying:
            if driven.timer is not None:
                driven.timer.cancel()
            try:
                driven.invocation.end()
            finally:
                self.engine.domain.release(driven.context)
                self._done(driven.batch, gone)
        while self.waiting:
            batch = self.waiting.popleft()
            batch.done(batch, (batch.instances[0], gone))

    def flush(self) -> None:
        """Release now the ended invocations that wait for :data:`RELEASE_AFTER` (from any
        thread: for a loop that closed, which never runs their timers)."""
        for driven in list(self._releasing):
            handle = self._releasing.get(driven)
            if handle is not None:
                handle.cancel()
            self._release_later(driven)
