"""The short path of a plan that is one call of a function, started from an event loop.

An HTTP frontend's invocation of a registered function (``POST /v1/functions/f/invoke``)
runs a plan of one application: its inputs go to one instance, its outputs are the
answer.  The dispatcher's general run (:class:`~dandelion.runtime.dispatcher.Dispatcher`)
builds, for every run, the state a graph of applications needs (a ``_Run`` with its sets,
ready list, lock and two ``threading.Event`` s, a ``Future`` that its outcome is handed
through and, for the loop, an ``asyncio`` future wrapping that one), and takes its lock
three times on the way.  For the one call none of it decides anything: :func:`start_here`
hands the one instance to the pool (driven from the loop where the engine can,
:mod:`dandelion.runtime.handoff`) and resolves the loop's own future when it ends.

What the general run does for the call is done here the same way: the implementation is
chosen and its time limit applied as the dispatcher does (:func:`choose_call`), the
outputs are checked by whoever ran the instance, what the instance printed goes to the
caller's collector, an error names the function and its instance
(:func:`~dandelion.runtime.dispatcher.instance_error`), an observer is told the
instance's start and end, and cancelling the future skips an instance that has not
started.  With a result cache (one whose lookups are cheap enough for the loop: the
frontend passes only one in memory) the instance is looked up, its outputs served from the
cache or kept in it, and its flight led and landed, with the same keys and events as the
dispatcher's run, so that either path serves what the other kept.  Everything else takes
the general path: an instance identical to one in flight (the dispatcher's run joins that
flight), a progress callback, more or fewer than one instance (sharded or skipped
inputs), a nested composition, an I/O function, a fused chain, or time limits that the
engines cannot enforce themselves (a waiting thread watches those).
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import attrs

from dandelion import constants
from dandelion.cache.entry import RESERVE_AFTER
from dandelion.cache.entry import reserve as reserve_entry
from dandelion.cache.run import RunCache
from dandelion.errors import DandelionError, FunctionError
from dandelion.ir.nodes import Application, FunctionKind, FunctionSpec
from dandelion.planner.cacheable import not_cached_because
from dandelion.planner.plan import Plan
from dandelion.runtime import logs
from dandelion.runtime.backend import Binding, bindings, bound, initial_sets
from dandelion.runtime.dispatcher import choose_call, instance_error, user_cause
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.events import Event, EventKind, Observer, watcher
from dandelion.runtime.handoff import on_loop
from dandelion.runtime.here import Driven
from dandelion.runtime.pool import Batch
from dandelion.runtime.sharding import Input, Instance, Items, instances

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.cache.cache import Cache
    from dandelion.runtime.pool import EnginePool


def single_call(plan: Plan) -> tuple[Application, FunctionSpec] | None:
    """The application and the compute function of a plan that is one call of it (no
    nested composition, no I/O function, no fused chain); ``None`` for any other plan.

    >>> import dandelion as dd
    >>> from dandelion.planner import make_plan
    >>> from dandelion.program import call_module
    >>> @dd.compute
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> app, spec = single_call(make_plan(call_module(double.spec), "invoke.double"))
    >>> spec.name, app.function
    ('double', 'double')
    """
    if plan.chains:
        return None
    comp = plan.composition
    if len(comp.applications) != 1:
        return None
    app = comp.applications[0]
    spec = plan.module.function(app.function)
    if spec is None or spec.kind is not FunctionKind.COMPUTE:
        return None  # a nested composition, or an I/O function
    return app, spec


@attrs.frozen
class Shape:
    """What a run of a one-call plan takes from the plan, worked out once per plan
    (:func:`shape_of`): the plan's entry, the application and its function, the sets the
    run starts with (the direct inputs, and the constants and empty sets that nothing
    produces: each with its items as text, or ``None`` for none), how each
    parameter is bound (:func:`~dandelion.runtime.backend.bindings`), the outputs, and
    why a result cache does not keep its instance (``None``: it does)."""

    entry: str
    app: Application
    spec: FunctionSpec
    inputs: tuple[str, ...]
    fixed: tuple[tuple[str, str | None], ...]
    params: tuple[Binding, ...]
    outputs: tuple[str, ...]
    uncached: str | None = None

    def answer(self, sets: dict[str, Items], results: Sequence[Items]) -> dict[str, Items]:
        """The plan's direct outputs, its instance having given ``results`` (one sequence
        of items per result of the function)."""
        by_result = dict(zip((r.name for r in self.spec.results), results))
        for out in self.app.outputs:
            sets[out.target] = tuple(by_result.get(out.result, ()))
        return {name: sets.get(name, ()) for name in self.outputs}

    def instances(self, inputs: Mapping[str, Items], parallelism: int
                  ) -> tuple[dict[str, Items], list[Instance]]:
        """The run's sets (as :func:`initial_sets`) and the application's instances."""
        sets = {name: tuple(inputs.get(name, ())) for name in self.inputs}
        for name, value in self.fixed:
            sets[name] = () if value is None else constants.read(value)
        ins = [Input(*b) for b in bound(self.params, sets)]
        return sets, instances(ins, self.app.join, parallelism)


#: plan id -> (a weak reference to the plan, its shape or ``None`` for a plan that is not
#: one call): an entry goes with its plan (its reference's callback), so the shapes are
#: bounded by whoever keeps the plans (a worker: its per-function plans, ``--plan-cache``,
#: and its registrations), and no other plan has a kept plan's id
_SHAPES: dict[int, tuple[weakref.ref[Plan], Shape | None]] = {}


def shape_of(plan: Plan) -> Shape | None:
    """The :class:`Shape` of a plan that is one call (:func:`single_call`), made once per
    plan and kept as long as the plan is, or ``None``.

    >>> import dandelion as dd
    >>> from dandelion.planner import make_plan
    >>> from dandelion.program import call_module
    >>> @dd.compute
    ... def inc(x: int) -> int:
    ...     return x + 1
    >>> plan = make_plan(call_module(inc.spec), "invoke.inc")
    >>> shape = shape_of(plan)
    >>> shape.inputs, shape.outputs, shape_of(plan) is shape
    (('in.x',), ('out.result',), True)
    """
    key = id(plan)
    kept = _SHAPES.get(key)
    if kept is not None and kept[0]() is plan:
        return kept[1]
    found = single_call(plan)
    made = None
    if found is not None:
        app, spec = found
        comp = plan.composition
        template = initial_sets(comp, {})
        inputs = tuple(d.name for d in comp.inputs)
        made = Shape(plan.entry, app, spec, inputs,
                     tuple((name, None if not template[name] else
                            comp.declaration(name).value)  # type: ignore[union-attr]
                           for name in template if name not in inputs),
                     bindings(app, spec),
                     tuple(d.name for d in comp.outputs), not_cached_because(plan, 0, spec))
    _SHAPES[key] = (weakref.ref(plan, functools.partial(_forget, key)), made)
    return made


def _forget(key: int, _gone: weakref.ref[Plan]) -> None:
    _SHAPES.pop(key, None)


def start_here(plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
               pool: EnginePool, loop: asyncio.AbstractEventLoop, *,
               timeouts: Mapping[str, float], observe: Observer | None = None,
               batch: int | None = None, cache: Cache | None = None
               ) -> asyncio.Future[dict[str, Items]] | None:
    """Start a plan that is one call (:func:`single_call`) of one instance on ``pool``
    from the running ``loop``: a future of the plan's direct outputs, resolved on the loop,
    or of the error that names the function and its instance.  ``None`` (nothing started)
    for any other plan or run: then start it with the dispatcher.

    Args:
        plan: the plan.
        inputs: its direct inputs.
        artifacts: the loaded code by digest.
        pool: the compute engines.
        loop: the running event loop of the caller, which awaits the future.
        timeouts: function name -> seconds (``"*"``: every function), as the dispatcher's.
        observe: told the instance's start and end.
        batch: the run's instances per sandbox invocation (see :class:`Batch`).
        cache: where the instance's outputs are looked up and kept (``None``: nowhere).

    Raises:
        BackendError: no implementation of the function runs on the pool's engines.
    """
    shape = shape_of(plan)
    if shape is None or (timeouts and not pool.enforces_timeout) or not on_loop(loop):
        return None
    spec = shape.spec
    sets, insts = shape.instances(inputs, pool.size)
    if len(insts) != 1:  # none (a required input is empty) or sharded: the general path
        return None
    call = _call(spec, pool, artifacts, timeouts)
    run, key = None, None
    if cache is not None:
        looked = _look_up(shape, cache, call, insts[0], observe, pool.engine_name)
        if looked is None:  # an identical instance is in flight: the general run joins it
            return None
        run, key, hit = looked
        if hit is not None:
            served: asyncio.Future[dict[str, Items]] = loop.create_future()
            served.set_result(shape.answer(sets, hit))
            return served
        if key is not None:  # it keeps an entry: its memory is made while the function runs
            loop.call_soon(reserve_entry)
    waiting: asyncio.Future[dict[str, Items]] = loop.create_future()
    sink = logs.current_sink()  # (read on the caller's thread, as the dispatcher does)

    def settle(done: Batch, failure: tuple[Instance, BaseException] | None) -> None:
        if waiting.done():  # cancelled meanwhile: nobody waits for the outcome
            return
        for inst, text in done.logs:
            logs.forward(logs.FunctionLog(spec.name, inst.index, text), sink)
        if failure is not None:
            waiting.set_exception(_failed(spec, *failure, sink))
            return
        waiting.set_result(shape.answer(sets, done.results[0]))

    def ended(done: Batch, failure: tuple[Instance, BaseException] | None) -> None:
        # on the loop where the loop drove the instance; from a worker thread where the
        # engine could not begin it there
        if run is not None and key is not None:
            run.keep([key], done.results[:1] if failure is None else [], spec.name)
        if on_loop(loop):
            settle(done, failure)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(settle, done, failure)

    watch = None if observe is None else watcher(observe, plan.entry, 0, spec.name,
                                                 pool.engine_name)
    pool.submit(Batch(call, insts, ended, _Cancelled(waiting), watch=watch,
                      per_sandbox=batch), loop)
    return waiting


def run_here(plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
             pool: EnginePool, *, timeouts: Mapping[str, float],
             observe: Observer | None = None, cache: Cache | None = None
             ) -> dict[str, Items] | None:
    """Run a plan that is one call (:func:`single_call`) of one instance on the calling
    thread, which begins the instance on an engine lent by ``pool`` and waits for it itself
    (:mod:`dandelion.runtime.here`): the plan's direct outputs.  ``None`` (nothing run) for
    any other plan, where the pool's engines cannot begin a function or none is free, or
    where an identical instance is in flight: then run it with the dispatcher.  Arguments as
    :func:`start_here`'s.

    Raises:
        FunctionError: the function failed (names the function and its instance).
        BackendError: no implementation of the function runs on the pool's engines.
    """
    if not pool.begins:  # (inline: every run takes the dispatcher, at no cost here)
        return None
    shape = shape_of(plan)
    if shape is None:
        return None
    spec = shape.spec
    sets, insts = shape.instances(inputs, pool.size)
    if len(insts) != 1:  # none (a required input is empty) or sharded: the general path
        return None
    inst = insts[0]
    call = _call(spec, pool, artifacts, timeouts)
    engine = pool.lend()  # (before the lookup: a flight it leads is never handed on)
    if engine is None:
        return None
    run, key = None, None
    if cache is not None:
        try:
            looked = _look_up(shape, cache, call, inst, observe, pool.engine_name)
        except BaseException:
            pool.give_back(engine)
            raise
        if looked is None:  # an identical instance is in flight: the dispatcher joins it
            pool.give_back(engine)
            return None
        run, key, hit = looked
        if hit is not None:
            pool.give_back(engine)
            return shape.answer(sets, hit)
    watch = None if observe is None else watcher(observe, plan.entry, 0, spec.name,
                                                 pool.engine_name)
    stamp = time.time()
    if watch is not None:
        watch(inst, stamp, None, None, None, None)
    try:
        driven = Driven.start(pool, engine, call, inst)
        # it keeps an entry: its memory is made while the function runs, once the sandbox
        # has had the CPU (see RESERVE_AFTER)
        outputs = driven.finish(reserve_entry if key is not None else None, RESERVE_AFTER)
    except BaseException as error:
        if run is not None and key is not None:  # nothing kept: its flight lands empty
            run.keep([key], [], spec.name)
        if watch is not None:
            watch(inst, stamp, time.time(), None, error, None)
        if not isinstance(error, DandelionError):  # not the engine's: an interrupt, or
            raise  # what a signal handler raised while this thread waited, as it is
        err = _failed(spec, inst, error, logs.current_sink())
        raise err from err.__cause__
    if driven.logs:
        logs.forward(logs.FunctionLog(spec.name, inst.index, driven.logs), logs.current_sink())
    if run is not None and key is not None:
        run.keep([key], [outputs], spec.name)
    if watch is not None:
        watch(inst, stamp, time.time(), outputs, None, driven.seconds)
    return shape.answer(sets, outputs)


def _call(spec: FunctionSpec, pool: EnginePool, artifacts: Mapping[str, Any],
          timeouts: Mapping[str, float]) -> FunctionCall:
    """The implementation of ``spec`` that ``pool``'s engines run, with its time limit."""
    return choose_call(spec, pool.kinds, pool.engine_name, artifacts,
                       timeouts.get(spec.name, timeouts.get("*")))


def _failed(spec: FunctionSpec, inst: Instance, error: BaseException, sink: Any
            ) -> DandelionError:
    """The error a run of the one instance ``inst`` that failed with ``error`` raises (naming
    the function and the instance, caused by what the user's code raised), what it printed
    forwarded to ``sink`` first, as the dispatcher does."""
    if isinstance(error, FunctionError) and error.logs:
        logs.forward(logs.FunctionLog(spec.name, inst.index, error.logs), sink)
    err = instance_error(spec, inst, 1, error)
    err.__cause__ = user_cause(error)
    return err


class _Cancelled:
    """A one-call run's cancellation as its batch asks for it (``is_set``, from any
    thread): whether the loop's future was cancelled.  No event and no done-callback of the
    future per run (the callback cost a loop turn's handle on every answer)."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self._future = future

    def is_set(self) -> bool:
        return self._future.cancelled()


def _look_up(shape: Shape, cache: Cache, call: FunctionCall, inst: Instance,
             observe: Observer | None, engine: str
             ) -> tuple[RunCache, str | None, Sequence[Items] | None] | None:
    """Look the one instance up in ``cache`` as the dispatcher's run does, and tell
    ``observe`` what the cache did: the run's view of the cache, the instance's key
    (``None``: not kept) and its outputs where the cache has them, the instance's flight
    led where it missed; ``None`` (nothing told) where an identical instance is in flight."""
    start = time.time() if observe is not None else 0.0
    run = RunCache(cache)
    key: str | None = None
    hit: Sequence[Items] | None = None
    reason: str | None = shape.uncached
    served = 0
    if reason is None:
        found = run.lookup(shape.app, shape.spec, call, [inst])
        key, hit, reason, served = found.keys[0], found.hits[0], found.reason, \
            found.bytes_served
        if hit is None and key is not None and not cache.flights.lead(key):
            return None
    if observe is not None:
        observe(Event(EventKind.CACHED, shape.entry, 0, shape.spec.name, -1, engine,
                      None, start, time.time(), hits=int(hit is not None),
                      misses=int(hit is None and key is not None), bytes_served=served,
                      reason=reason))
    return run, key, hit
