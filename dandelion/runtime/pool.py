"""A pool of worker threads, each owning one engine, that run batches of instances."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Callable, Protocol, Sequence

import attrs

from dandelion.errors import DandelionError, FunctionError, FunctionTimeout
from dandelion.ir.nodes import FunctionSpec
from dandelion.runtime.batch import Failed, batch_size
from dandelion.runtime.engine import Engine, FunctionCall, check_outputs
from dandelion.runtime.handoff import Handoff, on_loop
from dandelion.runtime.sharding import Instance

#: Told when an instance starts (``end`` is ``None``) and when it ends:
#: ``watch(instance, start, end, outputs, error, function_seconds)`` with :func:`time.time`
#: stamps, the outputs (``None`` if it failed), its error, and the time the function itself
#: ran where the engine measures it.
Watch = Callable[[Instance, float, "float | None", Any, "BaseException | None",
                  "float | None"], None]


class Cancellation(Protocol):
    """Whether the run a batch belongs to was cancelled, asked from any thread: a
    :class:`threading.Event`, or for a one-call run the loop's own future
    (:mod:`dandelion.runtime.one_call`)."""

    def is_set(self) -> bool:
        """Whether it was cancelled."""
        ...  # pragma: no cover


@attrs.define(eq=False)
class Batch:
    """A batch of instances of one application, run in order by one worker.

    ``results[i]`` receives the outputs of ``instances[i]``, ``logs`` what instances
    printed; when the batch is done (or one instance fails) the worker calls
    ``done(batch, failure)``.  With ``watch`` the worker reports each instance's start and
    end to it (no watch, no clock read).
    """

    call: FunctionCall
    instances: list[Instance]
    done: Callable[[Batch, tuple[Instance, BaseException] | None], None]
    cancelled: Cancellation
    results: list[Any] = attrs.field(factory=list)
    tag: Any = None
    logs: list[tuple[Instance, str]] = attrs.field(factory=list)
    watch: Watch | None = None
    #: the run's instances per sandbox invocation (``None``: the function's own, else
    #: chosen by measurement; :mod:`dandelion.runtime.batch`)
    per_sandbox: int | None = None


def timeout_error(spec: FunctionSpec, inst: Instance, limit: float, hint: str
                  ) -> FunctionTimeout:
    """The error of an instance that ran past its time limit."""
    return FunctionTimeout(
        f"{spec.kind} function '{spec.name}', instance {inst.index}: ran past its timeout of "
        f"{limit:g} s", function=spec.name, instance=inst.index, keys=inst.keys, hint=hint)


def run_instance(engine: Engine, call: FunctionCall, inst: Instance,
                 logs: list[tuple[Instance, str]] | None = None) -> Any:
    """Run one instance on ``engine`` in a context of its memory domain; its outputs,
    checked against the function's declaration (:func:`check_outputs`).  What it printed
    is added to ``logs`` (or, if it fails, is its error's ``logs``)."""
    return invoke(engine, call, inst, logs)[0]


def invoke(engine: Engine, call: FunctionCall, inst: Instance,
           logs: list[tuple[Instance, str]] | None = None) -> tuple[Any, float | None]:
    """:func:`run_instance`, with the time the function itself ran (where the engine
    measures it)."""
    domain = engine.domain
    context = domain.acquire()
    try:
        context.place(inst.inputs)
        seconds = engine.run(context, call)
        outputs = context.extract()
        if context.logs and logs is not None:
            logs.append((inst, context.logs))
    finally:
        domain.release(context)
    check_outputs(call.spec, outputs)
    return outputs, seconds


def first_bad_outputs(spec: FunctionSpec, per_instance: Sequence[Any]
                      ) -> tuple[int, DandelionError] | None:
    """The position of the first of several instances' outputs (run elsewhere, e.g. by an
    I/O engine) that fail :func:`check_outputs`, with the error; ``None`` when all pass."""
    for position, outputs in enumerate(per_instance):
        try:
            check_outputs(spec, outputs)
        except DandelionError as e:
            return position, e
    return None


def run_watched(engine: Engine, call: FunctionCall, inst: Instance, watch: Watch,
                logs: list[tuple[Instance, str]] | None = None) -> Any:
    """:func:`run_instance`, telling ``watch`` when the instance starts and ends."""
    return _watched(engine, call, inst, watch, logs)[0]


def _watched(engine: Engine, call: FunctionCall, inst: Instance, watch: Watch | None,
             logs: list[tuple[Instance, str]] | None) -> tuple[Any, float | None]:
    if watch is None:
        return invoke(engine, call, inst, logs)
    start = time.time()
    watch(inst, start, None, None, None, None)
    try:
        outputs, seconds = invoke(engine, call, inst, logs)
    except BaseException as e:
        watch(inst, start, time.time(), None, e, None)
        raise
    watch(inst, start, time.time(), outputs, None, seconds)
    return outputs, seconds


class Worker(threading.Thread):
    """One thread, one engine."""

    def __init__(self, pool: EnginePool, index: int) -> None:
        super().__init__(name=f"dandelion-worker-{index}", daemon=True)
        self.pool = pool
        self.engine = pool.engine_factory()
        self.abandoned = False
        #: whether it holds one of the pool's engines (:meth:`EnginePool.take_engine`)
        self.holds_engine = False
        #: (batch, instance, start time) while an instance runs; read by the dispatcher.
        self.current: tuple[Batch, Instance, float] | None = None

    def run(self) -> None:
        tasks = self.pool.tasks
        engine = self.engine
        while not self.abandoned:
            batch = tasks.get()
            if batch is None:
                break
            self.pool.take_engine()
            self.holds_engine = True
            try:
                failure = self._run_batch(batch)
                self.current = None
                if not self.abandoned:
                    batch.done(batch, failure)
            finally:
                self.pool.give_engine(self)
        engine.close()

    def _run_batch(self, batch: Batch) -> tuple[Instance, BaseException] | None:
        """Run the batch's instances in order, ``k`` per sandbox invocation where that pays
        (:func:`~dandelion.runtime.batch.batch_size`); the first failure, if any."""
        engine, call, insts, results = self.engine, batch.call, batch.instances, batch.results
        watch = batch.watch
        at = 0
        while at < len(insts):
            if batch.cancelled.is_set():
                return None
            k = self.pool.batch_size(call, len(insts) - at, batch.per_sandbox)
            chunk = insts[at:at + k]
            self.current = (batch, chunk[0], time.monotonic())
            started, stamp = time.perf_counter(), time.time()
            if watch is not None and k > 1:
                for inst in chunk:
                    watch(inst, stamp, None, None, None, None)
            run = engine.run_batch(call, [i.inputs for i in chunk]) if k > 1 else None
            if run is not None:
                outcomes = run.outcomes
                self.pool.measure(call, k, time.perf_counter() - started, run.seconds)
                if watch is not None:
                    end, each = time.time(), run.seconds / k if run.seconds else None
                    for inst, (out, _) in zip(chunk, outcomes):
                        failed = isinstance(out, Failed)
                        watch(inst, stamp, end, None if failed else out,
                              out.error if failed else None, each)
            else:  # one by one (after a batch that crashed or timed out: finds the culprit)
                outcomes = []
                for inst in chunk:
                    if batch.cancelled.is_set():
                        return None
                    self.current = (batch, inst, time.monotonic())
                    started = time.perf_counter()
                    try:
                        outputs, seconds = _watched(engine, call, inst, watch, batch.logs)
                    except BaseException as e:  # reported to the dispatcher, never lost
                        outcomes.append((Failed(e), ""))
                        break
                    outcomes.append((outputs, ""))
                    self.pool.measure(call, 1, time.perf_counter() - started, seconds)
            for inst, (outcome, printed) in zip(chunk, outcomes):
                if isinstance(outcome, Failed):
                    error = outcome.error
                    if printed and isinstance(error, FunctionError) and not error.logs:
                        error.logs = printed
                    return inst, error
                if printed:
                    batch.logs.append((inst, printed))
                try:
                    check_outputs(call.spec, outcome)
                except BaseException as e:
                    return inst, e
                results.append(outcome)
            at += k
        return None


class EnginePool:
    """``size`` workers sharing one queue of :class:`Batch` s."""

    def __init__(self, engine_factory: Callable[[], Engine], size: int) -> None:
        self.engine_factory = engine_factory
        self.size = size
        #: implementation digest -> (sandbox seconds per invocation, function seconds per
        #: instance), as measured (a moving average)
        self.costs: dict[str, tuple[float, float]] = {}
        self.tasks: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        #: engines free to run a batch (of ``size``): a worker thread takes one for each
        #: batch, and so does an invocation driven from an event loop (:meth:`submit`)
        self._free = size
        self._engines = threading.Condition()
        self._threads_waiting = 0
        #: per event loop that submitted batches, what drives them there
        self._handoffs: dict[asyncio.AbstractEventLoop, Handoff] = {}
        self.workers: list[Worker] = []
        for i in range(size):
            self._spawn(i)
        probe = self.workers[0].engine
        self.kinds = probe.kinds
        self.enforces_timeout = probe.enforces_timeout
        self.engine_name = probe.name
        #: whether its engines can begin a function without waiting for it (then a thread
        #: that only waits for a run drives its instance itself: :mod:`.here`)
        self.begins = type(probe).begin is not Engine.begin
        #: engines made to be lent to threads that drive an instance themselves (:meth:`lend`):
        #: those free now, and all of them
        self._lendable: list[Engine] = []
        self._made: list[Engine] = []

    def _spawn(self, index: int) -> None:
        worker = Worker(self, index)
        self.workers.append(worker)
        worker.start()

    def batch_size(self, call: FunctionCall, pending: int, override: int | None) -> int:
        """Instances of ``call`` to run in the next sandbox invocation, of ``pending`` left
        in a batch: the run's ``override``, else the function's, else from the measured
        costs."""
        if override is None:
            override = getattr(call.artifact, "batch", None)
        cost = self.costs.get(call.implementation.digest)
        return batch_size(pending, cost[0] if cost else None, cost[1] if cost else None,
                          override, getattr(call.artifact, "vectorised", None) is not None)

    def measure(self, call: FunctionCall, k: int, wall: float, inside: float | None) -> None:
        """Remember what one invocation of ``k`` instances cost, ``inside`` the function
        (engines that do not measure it: a sandbox costs nothing there)."""
        if inside is None or k < 1:
            return
        sample = (max(wall - inside, 0.0), inside / k)
        digest = call.implementation.digest
        old = self.costs.get(digest)
        self.costs[digest] = sample if old is None else (
            0.7 * old[0] + 0.3 * sample[0], 0.7 * old[1] + 0.3 * sample[1])

    def submit(self, batch: Batch, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Queue a batch for the next free worker; or, submitted from a running event
        ``loop``, run a one-instance batch from the loop itself where the engine can
        (:mod:`dandelion.runtime.handoff`), with no thread in between."""
        if loop is not None and len(batch.instances) == 1 and on_loop(loop):
            handoff = self._handoffs.get(loop)
            if handoff is None:
                with self._lock:
                    handoff = self._handoffs.get(loop)
                    gone = []
                    if handoff is None:
                        handoff = self._handoffs[loop] = Handoff(self, loop)
                        # a loop that closed never runs the timers that release what its
                        # last invocations used, nor reads those it left under way (a
                        # program calling asyncio.run again): its hand-off closes now
                        gone = [old for other, old in self._handoffs.items()
                                if other.is_closed()]
                        for old in gone:
                            del self._handoffs[old.loop]
                for old in gone:  # (outside the lock: their runs are told, with theirs)
                    old.close()
            handoff.submit(batch)
            return
        self.tasks.put(batch)

    def take_engine(self, here: bool = False) -> bool:
        """Take one of the ``size`` engines for a batch: a worker thread waits until one
        is free; a batch driven from an event loop (``here``) does not wait, and lets the
        worker threads that wait go first (``False``: none for it now)."""
        with self._engines:
            if here:
                if self._free <= 0 or self._threads_waiting:
                    return False
            else:
                self._threads_waiting += 1
                while self._free <= 0:
                    self._engines.wait()
                self._threads_waiting -= 1
            self._free -= 1
            return True

    def give_engine(self, worker: Worker | None = None) -> None:
        """An engine taken with :meth:`take_engine` is free again (``worker``: the one
        that worker holds, if it still does)."""
        with self._engines:
            if worker is not None:
                if not worker.holds_engine:
                    return
                worker.holds_engine = False
            self._free += 1
            self._engines.notify()
            handoffs = list(self._handoffs.values()) if not self._threads_waiting else []
        for handoff in handoffs:
            handoff.wake()

    def lend(self) -> Engine | None:
        """One of the pool's ``size`` engines for the calling thread to begin an instance
        on and wait for it itself (:mod:`dandelion.runtime.here`), if one is free and the
        engines can begin a function; give it back with :meth:`give_back`."""
        if not self.begins or self._closed or not self.take_engine(here=True):
            return None
        with self._lock:
            if self._lendable:
                return self._lendable.pop()
        try:
            engine = self.engine_factory()
        except BaseException:
            self.give_engine()
            raise
        with self._lock:
            self._made.append(engine)
        return engine

    def give_back(self, engine: Engine) -> None:
        """An engine from :meth:`lend` is free again."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._lendable.append(engine)
        self.give_engine()

    def abandon(self, worker: Worker) -> None:
        """Give up on a worker stuck in a function past its timeout; start a replacement."""
        with self._lock:
            if worker.abandoned or worker not in self.workers:
                return
            worker.abandoned = True
            self.workers.remove(worker)
            self._spawn(len(self.workers) + 1)
        self.give_engine(worker)  # its replacement runs in its place

    def check_timeouts(self, cancelled: Cancellation) -> FunctionTimeout | None:
        """A timeout error for an instance of the run that ``cancelled`` belongs to, stuck
        past its limit, if any.

        Only for engines that cannot stop a function themselves: the worker running it is
        abandoned and replaced, so the pool keeps its size.
        """
        now = time.monotonic()
        for worker in list(self.workers):
            current = worker.current
            if current is None:
                continue
            batch, inst, started = current
            limit = batch.call.timeout
            if batch.cancelled is cancelled and limit and now - started > limit:
                self.abandon(worker)
                return timeout_error(batch.call.spec, inst, limit, "raise the timeout, or use "
                                     "the process engine, which stops the function")
        return None

    def close(self) -> None:
        """Stop all workers once their current batch is done."""
        with self._lock:
            self._closed = True
            made, self._made, self._lendable = self._made, [], []
        for engine in made:
            engine.close()
        for _ in self.workers:
            self.tasks.put(None)
        for w in self.workers:
            w.join(timeout=5)
        for handoff in self._handoffs.values():
            handoff.close()
