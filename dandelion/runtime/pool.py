"""A pool of worker threads, each owning one engine, that run batches of instances."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Sequence

import attrs

from dandelion.errors import DandelionError, FunctionTimeout
from dandelion.ir.nodes import FunctionSpec
from dandelion.runtime.engine import Engine, FunctionCall, check_outputs
from dandelion.runtime.sharding import Instance

#: Told when an instance starts (``end`` is ``None``) and when it ends:
#: ``watch(instance, start, end, outputs, error, function_seconds)`` with :func:`time.time`
#: stamps, the outputs (``None`` if it failed), its error, and the time the function itself
#: ran where the engine measures it.
Watch = Callable[[Instance, float, "float | None", Any, "BaseException | None",
                  "float | None"], None]


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
    cancelled: threading.Event
    results: list[Any] = attrs.field(factory=list)
    tag: Any = None
    logs: list[tuple[Instance, str]] = attrs.field(factory=list)
    watch: Watch | None = None


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
    domain = engine.domain
    context = domain.acquire()
    try:
        context.place(inst.inputs)
        engine.run(context, call)
        outputs = context.extract()
        if context.logs and logs is not None:
            logs.append((inst, context.logs))
    finally:
        domain.release(context)
    check_outputs(call.spec, outputs)
    return outputs


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
    start = time.time()
    watch(inst, start, None, None, None, None)
    try:
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
    except BaseException as e:
        watch(inst, start, time.time(), None, e, None)
        raise
    watch(inst, start, time.time(), outputs, None, seconds)
    return outputs


class Worker(threading.Thread):
    """One thread, one engine."""

    def __init__(self, pool: EnginePool, index: int) -> None:
        super().__init__(name=f"dandelion-worker-{index}", daemon=True)
        self.pool = pool
        self.engine = pool.engine_factory()
        self.abandoned = False
        #: (batch, instance, start time) while an instance runs; read by the dispatcher.
        self.current: tuple[Batch, Instance, float] | None = None

    def run(self) -> None:
        tasks = self.pool.tasks
        engine = self.engine
        while not self.abandoned:
            batch = tasks.get()
            if batch is None:
                break
            failure = None
            results = batch.results
            watch = batch.watch
            for inst in batch.instances:
                if batch.cancelled.is_set():
                    break
                self.current = (batch, inst, time.monotonic())
                try:
                    results.append(
                        run_instance(engine, batch.call, inst, batch.logs) if watch is None
                        else run_watched(engine, batch.call, inst, watch, batch.logs))
                except BaseException as e:  # reported to the dispatcher, never lost
                    failure = (inst, e)
                    break
            self.current = None
            if not self.abandoned:
                batch.done(batch, failure)
        engine.close()


class EnginePool:
    """``size`` workers sharing one queue of :class:`Batch` s."""

    def __init__(self, engine_factory: Callable[[], Engine], size: int) -> None:
        self.engine_factory = engine_factory
        self.size = size
        self.tasks: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.workers: list[Worker] = []
        for i in range(size):
            self._spawn(i)
        probe = self.workers[0].engine
        self.kinds = probe.kinds
        self.enforces_timeout = probe.enforces_timeout
        self.engine_name = probe.name

    def _spawn(self, index: int) -> None:
        worker = Worker(self, index)
        self.workers.append(worker)
        worker.start()

    def submit(self, batch: Batch) -> None:
        """Queue a batch for the next free worker."""
        self.tasks.put(batch)

    def abandon(self, worker: Worker) -> None:
        """Give up on a worker stuck in a function past its timeout; start a replacement."""
        with self._lock:
            if worker.abandoned or worker not in self.workers:
                return
            worker.abandoned = True
            self.workers.remove(worker)
            self._spawn(len(self.workers) + 1)

    def check_timeouts(self, cancelled: threading.Event) -> FunctionTimeout | None:
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
        for _ in self.workers:
            self.tasks.put(None)
        for w in self.workers:
            w.join(timeout=5)
