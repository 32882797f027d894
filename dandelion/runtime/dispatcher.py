"""The dispatcher: runs one plan on a pool of engines (DESIGN.md §4).

Every application waits in a pool until all the sets it reads exist; then it becomes
ready, its instances are formed (:mod:`dandelion.runtime.sharding`) and handed to the
engines in batches.  When its last instance returns, its outputs are gathered in instance
order and published, which may make other applications ready.  A function never starts
before its inputs are complete, and results never depend on scheduling.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Mapping

import attrs

from dandelion.errors import BackendError, DandelionError, FunctionError, FunctionTimeout
from dandelion.ir.nodes import Application, FunctionKind, FunctionSpec, Module
from dandelion.items import Item
from dandelion.planner.plan import Plan
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.pool import EnginePool, Job
from dandelion.runtime.sharding import Input, Instance, Items, gather, instances

#: Instances per batch are chosen so that each worker gets about this many batches.
BATCHES_PER_WORKER = 4

SubRunner = Callable[[Plan, Mapping[str, Items]], Mapping[str, Items]]


@attrs.frozen
class Progress:
    """How far a run is: applications and instances finished, of those known so far."""

    applications_done: int
    applications: int
    instances_done: int
    instances: int


ProgressCallback = Callable[[Progress], None]


@attrs.define(eq=False)
class _Running:
    app: Application
    spec: FunctionSpec
    instances: list[Instance]
    outputs: list[Any]
    remaining: int


def _describe_instance(inst: Instance, n: int) -> str:
    keys = f" (key {', '.join(map(str, inst.keys))})" if inst.keys else ""
    return f"instance {inst.index} of {n}{keys}" if n > 1 else f"its instance{keys}"


def instance_error(spec: FunctionSpec, inst: Instance, n: int, error: BaseException
                   ) -> DandelionError:
    """``error`` re-raised with the function, the instance and its input keys."""
    where = f"{spec.kind} function '{spec.name}', {_describe_instance(inst, n)}"
    if isinstance(error, FunctionError):
        cls: type[FunctionError] = type(error)
        detail = error.message
        if detail.startswith(f"{spec.kind} function '{spec.name}' "):
            detail = detail[len(f"{spec.kind} function '{spec.name}' "):]
        try:
            return cls(f"{where}: {detail}", function=spec.name, instance=inst.index,
                       keys=inst.keys, hint=error.hint)
        except TypeError:  # a subclass with another constructor
            return error
    if isinstance(error, DandelionError):
        return FunctionError(f"{where}: {error.message}", function=spec.name,
                             instance=inst.index, keys=inst.keys, hint=error.hint)
    return FunctionError(f"{where}: raised {type(error).__name__}: {error}",
                         function=spec.name, instance=inst.index, keys=inst.keys)


class Dispatcher:
    """Runs plans on an :class:`EnginePool`.

    Args:
        pool: the compute engines.
        artifacts: content digest -> loaded artifact.
        timeouts: function name -> seconds (``"*"`` for every function).
        io_engine: runs I/O functions (``None``: plans with I/O functions are refused).
        sub_runner: runs a nested composition for sharded composition calls.
        progress: called with a :class:`Progress` whenever work finishes.
    """

    def __init__(self, pool: EnginePool, artifacts: Mapping[str, Any], *,
                 timeouts: Mapping[str, float] | None = None, io_engine: Any = None,
                 sub_runner: SubRunner | None = None,
                 progress: ProgressCallback | None = None) -> None:
        self.pool = pool
        self.progress = progress
        self.artifacts = artifacts
        self.timeouts = dict(timeouts or {})
        self.io_engine = io_engine
        self.sub_runner = sub_runner

    def _timeout(self, name: str) -> float | None:
        return self.timeouts.get(name, self.timeouts.get("*"))

    def _call(self, module: Module, spec: FunctionSpec) -> FunctionCall:
        kinds = self.pool.kinds
        if spec.kind is FunctionKind.IO:
            if self.io_engine is None:
                raise BackendError(f"I/O function '{spec.name}' needs an I/O engine, and "
                                   "this runtime has none")
            kinds = self.io_engine.kinds
        for impl in spec.implementations:
            if impl.kind in kinds:
                artifact = self.artifacts.get(impl.digest) if impl.digest else None
                if impl.digest and artifact is None:
                    continue
                return FunctionCall(spec, impl, artifact, self._timeout(spec.name))
        have = ", ".join(sorted({i.kind for i in spec.implementations})) or "none"
        if any(self.artifacts.get(i.digest) is None for i in spec.implementations
               if i.kind in kinds):
            raise BackendError(f"function '{spec.name}' has no code loaded on this worker",
                               hint="run a Program that carries its artifacts, or register "
                                    "the function first")
        raise BackendError(f"no implementation of function '{spec.name}' runs on engine "
                           f"'{self.pool.engine_name}' (it has: {have}; the engine runs: "
                           f"{', '.join(sorted(kinds))})")

    def run(self, plan: Plan, inputs: Mapping[str, Items]) -> dict[str, Items]:
        """Run ``plan`` on the direct ``inputs`` and return its direct outputs.

        Raises:
            FunctionError: the first failing instance, naming function, instance and keys;
                the rest of the run is cancelled.
        """
        module, comp = plan.module, plan.composition
        sets: dict[str, Items] = {}
        for decl in comp.inputs:
            sets[decl.name] = tuple(inputs.get(decl.name, ()))
        produced = {o.target for app in comp.applications for o in app.outputs}
        for decl in comp.declarations():
            if decl.name not in produced and decl.name not in sets:
                sets[decl.name] = ()
        missing: dict[int, set[str]] = {}
        consumers: dict[str, list[int]] = defaultdict(list)
        ready: list[int] = []
        for i, app in enumerate(comp.applications):
            needs = {a.source for a in app.arguments if a.source not in sets}
            missing[i] = needs
            for name in needs:
                consumers[name].append(i)
            if not needs:
                ready.append(i)
        events: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        cancelled = threading.Event()
        running: dict[int, _Running] = {}
        calls: dict[str, FunctionCall] = {}
        parallelism = self.pool.size
        counts = [0, len(comp.applications), 0, 0]  # apps done/total, instances done/total

        def publish(index: int, outputs: list[Items]) -> None:
            app = comp.applications[index]
            spec = running[index].spec if index in running else None
            results = [r.name for r in spec.results] if spec else []
            by_result = dict(zip(results, outputs))
            for out in app.outputs:
                sets[out.target] = by_result.get(out.result, ())
                for consumer in consumers.get(out.target, ()):
                    needs = missing[consumer]
                    needs.discard(out.target)
                    if not needs:
                        ready.append(consumer)
            running.pop(index, None)
            counts[0] += 1

        def start(index: int) -> None:
            app = comp.applications[index]
            spec = _signature(module, app.function)
            args = {a.param: a for a in app.arguments}
            ins = []
            for p in spec.params:
                a = args.get(p.name)
                ins.append(Input(p.name, sets[a.source], a.mode, a.optional) if a
                           else Input(p.name, (), optional=True))
            insts = instances(ins, app.join, parallelism)
            state = _Running(app, spec, insts, [None] * len(insts), 0)
            running[index] = state
            counts[3] += len(insts)
            if not insts:
                publish(index, [() for _ in spec.results])
                return
            if module.composition(app.function) is not None:
                self._start_nested(plan, index, state, events)
                return
            call = calls.get(spec.name)
            if call is None:
                call = calls[spec.name] = self._call(module, spec)
            if spec.kind is FunctionKind.IO:
                self._start_io(index, state, call, events, cancelled)
                return
            n = len(insts)
            size = max(1, math.ceil(n / (self.pool.size * BATCHES_PER_WORKER)))
            state.remaining = math.ceil(n / size)
            for start_at in range(0, n, size):
                batch = insts[start_at:start_at + size]
                job = Job(call, batch, lambda j, f: events.put((0, (j, f))), cancelled,
                          tag=(index, start_at))
                self.pool.submit(job)

        try:
            while True:
                while ready:
                    start(ready.pop())
                if not running:
                    break
                kind, payload = self._next_event(events, running, calls)
                if kind == 0:
                    job, failure = payload
                    index, offset = job.tag
                    state = running[index]
                    if failure is not None:
                        inst, error = failure
                        raise instance_error(state.spec, inst, len(state.instances),
                                             error) from error
                    state.outputs[offset:offset + len(job.results)] = job.results
                    counts[2] += len(job.results)
                    state.remaining -= 1
                    if state.remaining == 0:
                        publish(index, gather(state.outputs, len(state.spec.results)))
                else:  # a nested composition or an I/O application finished whole
                    index, outputs, error = payload
                    if error is not None:
                        raise error
                    counts[2] += len(running[index].instances)
                    publish(index, outputs)
                if self.progress is not None:
                    self.progress(Progress(*counts))
        finally:
            cancelled.set()
        return {d.name: sets.get(d.name, ()) for d in comp.outputs}

    def _next_event(self, events: queue.SimpleQueue[tuple[int, Any]],
                    running: dict[int, _Running], calls: dict[str, FunctionCall]
                    ) -> tuple[int, Any]:
        if self.pool.enforces_timeout or not any(c.timeout for c in calls.values()):
            return events.get()
        while True:
            try:
                return events.get(timeout=0.02)
            except queue.Empty:
                self._check_timeouts()

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for worker in list(self.pool.workers):
            current = worker.current
            if current is None:
                continue
            job, inst, started = current
            limit = job.call.timeout
            if limit and now - started > limit and not job.cancelled.is_set():
                self.pool.abandon(worker)
                spec = job.call.spec
                raise FunctionTimeout(
                    f"{spec.kind} function '{spec.name}', instance {inst.index}: ran past its "
                    f"timeout of {limit:g} s", function=spec.name, instance=inst.index,
                    keys=inst.keys, hint="raise the timeout, or use the process engine, which "
                    "stops the function")

    def _start_nested(self, plan: Plan, index: int, state: _Running,
                      events: queue.SimpleQueue[tuple[int, Any]]) -> None:
        if self.sub_runner is None:
            raise BackendError("this runtime cannot run a composition once per shard")
        from dandelion.planner import make_plan

        sub_plan = make_plan(plan.module, state.app.function)
        spec = state.spec
        runner = self.sub_runner

        def work() -> None:
            outs: list[list[Items]] = []
            try:
                for inst in state.instances:
                    sets = {p.name: items for p, items in zip(spec.params, inst.inputs)}
                    result = runner(sub_plan, sets)
                    outs.append([result.get(r.name, ()) for r in spec.results])
                events.put((1, (index, gather(outs, len(spec.results)), None)))
            except BaseException as e:
                inst = state.instances[len(outs)]
                events.put((1, (index, None, instance_error(spec, inst, len(state.instances),
                                                            e))))

        threading.Thread(target=work, name=f"dandelion-{spec.name}", daemon=True).start()

    def _start_io(self, index: int, state: _Running, call: FunctionCall,
                  events: queue.SimpleQueue[tuple[int, Any]], cancelled: threading.Event
                  ) -> None:
        spec = state.spec

        def done(results: list[Any] | None, failure: tuple[Instance, BaseException] | None
                 ) -> None:
            if failure is not None:
                inst, error = failure
                events.put((1, (index, None, instance_error(spec, inst, len(state.instances),
                                                            error))))
            else:
                events.put((1, (index, gather(results or [], len(spec.results)), None)))

        self.io_engine.submit(call, state.instances, done, cancelled)


def _signature(module: Module, name: str) -> FunctionSpec:
    from dandelion.ir.verify import callee_signature

    spec = callee_signature(module, name)
    if spec is None:  # verify() rejects this before a plan exists
        raise BackendError(f"function '{name}' is not declared")
    return spec


def item_sets(values: Mapping[str, Any]) -> dict[str, tuple[Item[Any], ...]]:
    """Normalize a mapping of name -> items (any iterable) to tuples."""
    return {k: tuple(v) for k, v in values.items()}
