"""The dispatcher: runs one plan on a pool of engines.

Every application waits in a pool until all the sets it reads exist; then it becomes
ready, its instances are formed (:mod:`dandelion.runtime.sharding`) and handed to the
engines in batches.  When its last instance returns, its outputs are gathered in instance
order and published, which may make other applications ready.  A function never starts
before its inputs are complete, and results never depend on scheduling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import math
import queue
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import attrs

from dandelion.cache.entry import RESERVE_AFTER
from dandelion.cache.entry import reserve as reserve_entry
from dandelion.cache.run import Lookup, RunCache
from dandelion.errors import BackendError, DandelionError, FunctionError
from dandelion.ir.nodes import Application, FunctionKind, FunctionSpec
from dandelion.planner.cacheable import not_cached_because
from dandelion.planner.plan import Plan
from dandelion.runtime import logs
from dandelion.runtime.backend import bind, initial_sets, signature
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.events import Event, EventKind, Observer, watcher
from dandelion.runtime.fused import FusedUnit, fused_unit, member_watch
from dandelion.runtime.pool import Batch, EnginePool, Watch, first_bad_outputs
from dandelion.runtime.sharding import Input, Instance, Items, gather, instances

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.cache.cache import Cache

log = logging.getLogger("dandelion.cache")

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
    #: per instance, its storage (and flight) key in the cache (``None``: not cached)
    keys: list[str | None] | None = None


def _describe_instance(inst: Instance, n: int) -> str:
    keys = f" (key {', '.join(map(str, inst.keys))})" if inst.keys else ""
    return f"instance {inst.index} of {n}{keys}" if n > 1 else f"its instance{keys}"


def instance_error(spec: FunctionSpec, inst: Instance, n: int, error: BaseException
                   ) -> DandelionError:
    """``error`` re-raised with the function, the instance and its input keys."""
    where = f"{spec.kind} function '{spec.name}', {_describe_instance(inst, n)}"
    if isinstance(error, FunctionError):
        error.logs = logs.plain(error.logs)  # a fused chain's marks: not for the user
        cls: type[FunctionError] = type(error)
        detail = error.message
        if detail.startswith(f"{spec.kind} function '{spec.name}' "):
            detail = detail[len(f"{spec.kind} function '{spec.name}' "):]
        try:
            return cls(f"{where}: {detail}", function=spec.name, instance=inst.index,
                       keys=inst.keys, hint=error.hint, traceback=error.traceback,
                       logs=error.logs)
        except TypeError:  # a subclass with another constructor
            return error
    if isinstance(error, DandelionError):
        return FunctionError(f"{where}: {error.message}", function=spec.name,
                             instance=inst.index, keys=inst.keys, hint=error.hint)
    return FunctionError(f"{where}: raised {type(error).__name__}: {error}",
                         function=spec.name, instance=inst.index, keys=inst.keys)


def user_cause(error: BaseException) -> BaseException:
    """What a run's error names as its cause: the exception the user's function raised when
    the engine's error carries one (the engine's own error would only repeat the message and
    the user's frames between Dandelion's), else the engine's error."""
    cause = error.__cause__
    if isinstance(error, FunctionError) and cause is not None and \
            not isinstance(cause, DandelionError):
        return cause
    return error


def choose_call(spec: FunctionSpec, kinds: frozenset[str], engine_name: str,
                artifacts: Mapping[str, Any], timeout: float | None,
                io_kinds: frozenset[str] | None = None) -> FunctionCall:
    """The first implementation of ``spec`` an engine running ``kinds`` can run (I/O
    functions: one the I/O engine runs), with its loaded artifact.

    Raises:
        BackendError: no I/O engine, no code loaded, or no implementation that runs here.
    """
    if spec.kind is FunctionKind.IO:
        if io_kinds is None:
            raise BackendError(f"I/O function '{spec.name}' needs an I/O engine, and "
                               "this runtime has none")
        kinds = io_kinds
    for impl in spec.implementations:
        if impl.kind in kinds:
            artifact = artifacts.get(impl.digest) if impl.digest else None
            if impl.digest and artifact is None:
                continue
            return FunctionCall(spec, impl, artifact, timeout)
    have = ", ".join(sorted({i.kind for i in spec.implementations})) or "none"
    if any(artifacts.get(i.digest) is None for i in spec.implementations if i.kind in kinds):
        raise BackendError(f"function '{spec.name}' has no code loaded on this worker",
                           hint="run a Program that carries its artifacts, or register "
                                "the function first")
    raise BackendError(f"no implementation of function '{spec.name}' runs on engine "
                       f"'{engine_name}' (it has: {have}; the engine runs: "
                       f"{', '.join(sorted(kinds))})")


class Dispatcher:
    """Runs plans on an :class:`EnginePool`.

    Args:
        pool: the compute engines.
        artifacts: content digest -> loaded artifact.
        timeouts: function name -> seconds (``"*"`` for every function).
        io_engine: runs I/O functions (``None``: plans with I/O functions are refused).
        sub_runner: runs a nested composition for sharded composition calls.
        progress: called with a :class:`Progress` whenever work finishes.
        cache: where the outputs of cacheable instances are looked up and kept
            (``None``: nothing is cached).
        observe: told every instance's start and end, and what the cache did for each
            application (:mod:`dandelion.runtime.events`).
        batch: instances per sandbox invocation for every function (``None``: each
            function's own, else chosen by measurement; ``1``: never batch).  See
            :mod:`dandelion.runtime.batch`.
    """

    def __init__(self, pool: EnginePool, artifacts: Mapping[str, Any], *,
                 timeouts: Mapping[str, float] | None = None, io_engine: Any = None,
                 sub_runner: SubRunner | None = None,
                 progress: ProgressCallback | None = None, cache: Cache | None = None,
                 observe: Observer | None = None, batch: int | None = None) -> None:
        self.pool = pool
        self.batch = batch
        self.progress = progress
        self.cache = cache
        self.observe = observe
        self.artifacts = artifacts
        self.timeouts = dict(timeouts or {})
        self.io_engine = io_engine
        self.sub_runner = sub_runner

    def _timeout(self, name: str) -> float | None:
        return self.timeouts.get(name, self.timeouts.get("*"))

    def call_for(self, spec: FunctionSpec) -> FunctionCall:
        """The implementation of ``spec`` that this dispatcher's engines run, loaded."""
        io_kinds = self.io_engine.kinds if self.io_engine is not None else None
        return choose_call(spec, self.pool.kinds, self.pool.engine_name, self.artifacts,
                           self._timeout(spec.name), io_kinds)

    def run(self, plan: Plan, inputs: Mapping[str, Items]) -> dict[str, Items]:
        """Run ``plan`` on the direct ``inputs`` and return its direct outputs.

        Raises:
            FunctionError: the first failing instance, naming function, instance and keys;
                the rest of the run is cancelled.
        """
        run = _Run(self, plan, inputs)
        try:
            run.begin()
            # it keeps entries: the next one's memory is made while its functions compute,
            # once the worker it woke has had the CPU (RESERVE_AFTER)
            if run.leading and not run.finished.wait(RESERVE_AFTER):
                reserve_entry()
            run.wait()
        finally:
            run.abandon_flights()
        if run.error is not None:
            raise run.error
        return run.outputs()

    def start(self, plan: Plan, inputs: Mapping[str, Items],
              loop: asyncio.AbstractEventLoop | None = None
              ) -> concurrent.futures.Future[dict[str, Items]] | None:
        """Start running ``plan`` without waiting for it: a future of what :meth:`run`
        returns or raises, resolved by whichever thread finishes the run's last piece of
        work (a worker, the I/O engine), so that no thread waits for the run.  Cancelling
        the future cancels the run's instances that have not started.  Called on a running
        event ``loop`` (and given it), the instances that the run starts there are driven
        from the loop, where the engine can (:mod:`dandelion.runtime.handoff`).

        ``None`` where a run needs a waiting thread: time limits on engines that cannot
        stop a function themselves (the waiting thread watches the clock).  The cache's
        lookups happen here, on the calling thread (its stores happen on the workers, or
        on the loop that drives the instances); started on a loop, a run that keeps entries
        reserves the next one's memory on the loop's next turn (as :meth:`run` does while
        it waits: :func:`~dandelion.cache.entry.reserve`).
        """
        if self.timeouts and not self.pool.enforces_timeout:
            return None
        future: concurrent.futures.Future[dict[str, Items]] = concurrent.futures.Future()
        run = _Run(self, plan, inputs, then=functools.partial(_resolve, future), loop=loop)
        future.add_done_callback(run.cancel_with)
        run.begin()
        if run.leading and loop is not None:  # it keeps entries: the next one's memory is
            # made on the loop's next turn, while the function computes, instead of by the
            # keep on the loop after the answer (docs/caching.rst: 112 -> 67 µs after it)
            loop.call_soon(reserve_entry)
        return future


def _resolve(future: concurrent.futures.Future[dict[str, Items]], run: _Run) -> None:
    """Hand the outcome of a started run to its future (unless it was cancelled)."""
    if run.leading:  # a failed run's flights: landed off its lock (they take other runs')
        threading.Thread(target=run.abandon_flights, name="dandelion-flights").start()
    try:
        if run.error is not None:
            future.set_exception(run.error)
        else:
            future.set_result(run.outputs())
    except concurrent.futures.InvalidStateError:
        pass  # cancelled meanwhile: nobody waits for the outcome


class _Run:
    """The state of one run of a plan.

    There is no dispatcher thread: whichever thread finishes a piece of work (a worker, a
    nested run, the I/O engine) takes the lock, publishes the outputs and starts what became
    ready.  A chain of functions therefore runs on one worker without a thread hand-off per
    application; the caller only waits for the end.
    """

    def __init__(self, dispatcher: Dispatcher, plan: Plan, inputs: Mapping[str, Items],
                 then: Callable[[_Run], None] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.d = dispatcher
        #: the event loop that may drive this run's instances (EnginePool.submit)
        self.loop = loop
        #: called once the run finished (lock held), on the thread that finished it
        self.then = then
        self.plan = plan
        self.module, self.comp = plan.module, plan.composition
        comp = self.comp
        self.sets: dict[str, Items] = initial_sets(comp, inputs)
        self.missing: dict[int, set[str]] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        self.ready: list[int] = []
        self.calls: dict[str, FunctionCall] = {}
        self.signatures: dict[str, FunctionSpec] = {}
        #: the applications as this run runs them: a fused chain is one unit, at its head
        self.apps: dict[int, Application] = dict(enumerate(comp.applications))
        #: head index -> its fused chain, with the unit's call
        self.units: dict[int, tuple[FusedUnit, FunctionCall]] = {}
        for chain in plan.chains:
            fused = self._fuse(chain)
            if fused is not None:
                self.units[chain[0]] = fused
                self.apps[chain[0]] = fused[0].app
                for member in chain[1:]:
                    del self.apps[member]
        for i, app in self.apps.items():
            needs = {a.source for a in app.arguments if a.source not in self.sets}
            self.missing[i] = needs
            for name in needs:
                self.consumers[name].append(i)
            if not needs:
                self.ready.append(i)
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.cancelled = threading.Event()
        self.error: BaseException | None = None
        self.running: dict[int, _Running] = {}
        self.nested = {c.name for c in self.module.compositions}
        self.counts = [0, len(self.apps), 0, 0]  # apps done/total, instances too
        self.cache = RunCache(dispatcher.cache) if dispatcher.cache is not None else None
        #: per application still computing, the keys of the flights it leads (it lands them
        #: as it stores their outputs; a failed run abandons what is left)
        self.leading: dict[int, list[str]] = {}
        self.sink = logs.current_sink()  # (read on the caller's thread)

    def _fuse(self, chain: Sequence[int]) -> tuple[FusedUnit, FunctionCall] | None:
        """The unit that runs ``chain`` here, with its call; ``None`` when its members run
        apart here: one has no Python implementation this engine runs, or a time limit
        that this engine cannot enforce inside a chain (it would name the chain, not the
        member), or some have a time limit and others none.  The chain's limit is the sum
        of its members'."""
        d = self.d
        calls = []
        for i in chain:
            spec = self._signature(self.comp.applications[i].function)
            try:
                call = d.call_for(spec)
            except DandelionError:
                return None
            if call.implementation.kind != "python" or call.artifact is None or \
                    (call.timeout and not d.pool.enforces_timeout):
                return None
            calls.append(call)
            self.calls.setdefault(spec.name, call)
        unit = fused_unit(self.plan, chain, [c.artifact for c in calls],
                          [c.implementation for c in calls])
        limits = [c.timeout for c in calls]
        if any(limits) and not all(limits):  # the chain's limit would not be the member's
            return None
        timeout = sum(t for t in limits if t) if all(limits) else None
        return unit, FunctionCall(unit.spec, unit.spec.implementations[0], unit.artifact,
                                  timeout)

    # -- driving ---------------------------------------------------------------------------

    def begin(self) -> None:
        with self.lock:
            self._advance()

    def wait(self) -> None:
        needs_watch = not self.d.pool.enforces_timeout and bool(self.d.timeouts)
        while not self.finished.wait(0.02 if needs_watch else None):
            error = self.d.pool.check_timeouts(self.cancelled)
            if error is not None:
                with self.lock:
                    self._fail(error)

    def _advance(self) -> None:
        """Start everything ready; finish when nothing runs.  Called with the lock held."""
        try:
            while self.ready and self.error is None:
                self._start(self.ready.pop())
        except BaseException as e:
            self._fail(e)
        if self.d.progress is not None and self.error is None:
            self.d.progress(Progress(*self.counts))
        if not self.running or self.error is not None:
            self._finish()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.cancelled.set()
        self._finish()

    def cancel_with(self, future: concurrent.futures.Future[Any]) -> None:
        """End the run once its ``future`` is cancelled: what has not started is skipped."""
        if future.cancelled():
            with self.lock:
                self._fail(concurrent.futures.CancelledError())

    def _finish(self) -> None:
        """The run is over (lock held): wake the waiting thread, or call ``then``."""
        if self.finished.is_set():
            return
        self.finished.set()
        # Let go of ``then``: a started run's holds its future, whose callbacks hold the run
        # (cancel_with), and that cycle kept each request's objects (some 66) for the
        # garbage collector, whose collections then came on the requests' path
        then, self.then = self.then, None
        if then is not None:
            then(self)

    def outputs(self) -> dict[str, Items]:
        """The direct outputs of a run that finished without error."""
        return {d.name: self.sets.get(d.name, ()) for d in self.comp.outputs}

    # -- events from workers, nested runs and the I/O engine --------------------------------

    def on_batch(self, batch: Batch, failure: tuple[Instance, BaseException] | None) -> None:
        """A batch's instances finished: keep their outputs in the cache, then publish them.

        Kept first, on purpose: once published, an output belongs to its consumers and to
        the run's caller, who may change it in place (an ndarray is the caller's own,
        writable array), and a copy taken after that could keep the change under the
        instance's key.  With the outputs published first and kept after, 3 of 200 reruns
        of the matrix on ``process`` were served a change the caller made to the first
        run's result (``sys.setswitchinterval(1e-6)``).  Nor would the caller gain the
        time: keeping one 128 KiB output copies it holding the GIL."""
        index, positions = batch.tag
        self._keep(index, positions, batch.results)
        with self.lock:
            if self.error is not None:
                return
            state = self.running[index]
            name = state.spec.name
            for inst, text in batch.logs:
                logs.forward(logs.FunctionLog(name, inst.index, text), self.sink)
            if failure is not None:
                inst, error = failure
                if index in self.units:  # which member failed: run them one by one
                    self._find_member(index, state, inst, error)
                    return
                if isinstance(error, FunctionError) and error.logs:
                    logs.forward(logs.FunctionLog(name, inst.index, error.logs), self.sink)
                err = instance_error(state.spec, inst, len(state.instances), error)
                err.__cause__ = user_cause(error)
                self._fail(err)
                return
            self._fill(index, state, positions, batch.results)

    def _fill(self, index: int, state: _Running, positions: Sequence[int],
              results: Sequence[Any]) -> None:
        """Outputs of some instances arrived (lock held): publish when the last did."""
        if isinstance(positions, range):
            state.outputs[positions.start:positions.start + len(results)] = results
        else:
            for pos, result in zip(positions, results):
                state.outputs[pos] = result
        self.counts[2] += len(results)
        state.remaining -= 1
        if state.remaining == 0:
            self._publish(index, gather(state.outputs, len(state.spec.results)))
        self._advance()

    def _find_member(self, index: int, state: _Running, inst: Instance,
                     error: BaseException) -> None:
        """A fused chain's instance failed: run it again member by member, each in its own
        sandbox with its own time limit, and fail the run with the error of the member
        that fails (functions are pure: running one again is safe).  Should all succeed
        this time, the chain's own error stands."""
        unit = self.units[index][0]
        n = len(state.instances)
        observe = self.d.observe

        replies: queue.SimpleQueue[tuple[Batch, Any]] = queue.SimpleQueue()

        def done(batch: Batch, failure: tuple[Instance, BaseException] | None) -> None:
            replies.put((batch, failure))

        def run(m: int, member: Instance) -> Sequence[Items] | None:
            i, spec = unit.chain[m], unit.specs[m]
            watch = None if observe is None else \
                self._watch(observe, i, spec.name, self.d.pool.engine_name)
            self.d.pool.submit(Batch(self.calls[spec.name], [member], done,
                                     self.cancelled, watch=watch, per_sandbox=1))
            batch, failure = replies.get()
            if self.cancelled.is_set():
                return None
            for one, text in batch.logs:  # under the member's name: it printed them
                logs.forward(logs.FunctionLog(spec.name, one.index, text), self.sink)
            if failure is not None:
                if isinstance(failure[1], FunctionError) and failure[1].logs:
                    logs.forward(logs.FunctionLog(spec.name, member.index,
                                                  failure[1].logs), self.sink)
                err = instance_error(spec, member, n, failure[1])
                err.__cause__ = user_cause(failure[1])
                with self.lock:
                    self._fail(err)
                return None
            results: Sequence[Items] = batch.results[0]
            return results

        def search() -> None:
            if not unit.run_members(inst, run):
                return
            err = instance_error(unit.spec, inst, n, error)
            err.__cause__ = user_cause(error)
            with self.lock:
                self._fail(err)

        threading.Thread(target=contextvars.copy_context().run, args=(search,),
                         name=f"dandelion-{unit.spec.name}", daemon=True).start()

    # -- the cache -------------------------------------------------------------------------

    def _keep(self, index: int, positions: Sequence[int], results: Sequence[Any]) -> None:
        """Store the outputs of computed instances and land their flights (no lock held:
        a store may be slow, and a follower in this run takes the lock)."""
        state = self.running.get(index)
        if self.cache is None or state is None or state.keys is None:
            return
        keys = state.keys[positions.start:positions.start + len(positions)] \
            if isinstance(positions, range) else [state.keys[p] for p in positions]
        # each key is a flight this run leads: those of followers, whose leader failed, and
        # of uncacheable instances land None (landing is idempotent; should this run have
        # been abandoned and another lead the key since, the entry is as good as theirs)
        self.cache.keep(keys, results, state.spec.name)

    def abandon_flights(self) -> None:
        """Tell whoever waits on this run's flights that they will not land (they compute
        themselves)."""
        if self.cache is not None:
            while self.leading:
                _, flights = self.leading.popitem()
                self.cache.cache.flights.land_all(flights, [None] * len(flights))

    def _lookup(self, index: int, state: _Running, call: FunctionCall) -> Sequence[int]:
        """Serve what the cache has; join identical instances in flight; the positions of
        the instances left to compute (lock held)."""
        assert self.cache is not None
        spec = state.spec
        n = len(state.instances)
        if n == 1 and index not in self.units:  # the whole-run memo's one instance, missed:
            key = self.cache.missed_key(state.app, spec, call)  # it leads, in one step
            if key is not None and self.cache.cache.flights.lead(key):
                state.keys = [key]
                self.leading[index] = [key]
                if self.d.observe is not None:
                    now = time.time()
                    self._report(self.d.observe, index, spec, now, 0, 1, None, 0)
                return range(1)
        members = self.units[index][0].chain if index in self.units else (index,)
        reason = None
        for i in members:
            reason = reason or self._why_not_cached(i)
        observe = self.d.observe
        start = time.time() if observe is not None else 0.0
        if reason is not None:
            if observe is not None:
                self._report(observe, index, spec, start, 0, 0, reason, 0)
            return list(range(n))
        found = self.cache.lookup(state.app, spec, call, state.instances)
        state.keys = found.keys
        cache = self.cache.cache
        todo: list[int] = []
        missed: Sequence[int] = []
        outputs = state.outputs
        if found.hit_count == 0 and found.reason is None:  # all looked up, none hit
            missed = range(n)
        else:
            missed = []
            for pos, (key, hit) in enumerate(zip(found.keys, found.hits)):
                if hit is not None:
                    outputs[pos] = hit
                elif key is None:
                    todo.append(pos)
                else:
                    missed.append(pos)
        hits = n - len(todo) - len(missed)
        if missed:
            flights: list[str] = found.keys if isinstance(missed, range) else \
                [found.keys[pos] for pos in missed]  # type: ignore[assignment,misc]  # keyed
            leads = cache.flights.join_many(
                flights, lambda i: functools.partial(self._landed, index, missed[i]))
            if all(leads) and not todo:  # the common case: nothing of it in flight
                self.leading[index] = flights
                return self._looked_up(index, spec, start, hits, missed, found)
            else:
                led = self.leading[index] = []
                for pos, flight, lead in zip(missed, flights, leads):
                    if lead:
                        led.append(flight)
                        todo.append(pos)
                    else:
                        state.remaining += 1  # a follower: filled when its leader lands
                todo.sort()
        return self._looked_up(index, spec, start, hits, missed, found, todo)

    def _looked_up(self, index: int, spec: FunctionSpec, start: float, hits: int,
                   missed: Sequence[int], found: Lookup, todo: Sequence[int] | None = None
                   ) -> Sequence[int]:
        """Count and report a lookup; the positions to compute (default: ``missed``)."""
        self.counts[2] += hits
        observe = self.d.observe
        if observe is not None:
            self._report(observe, index, spec, start, hits, len(missed), found.reason,
                         found.bytes_served)
        return missed if todo is None else todo

    def _why_not_cached(self, index: int) -> str | None:
        """Why the instances of application ``index`` are not cached (``None``: they
        are; so for an application whose key prefix the whole-run memo made, which it
        makes only where every application is cached: :attr:`Cache.prefixes
        <dandelion.cache.Cache.prefixes>`)."""
        app = self.comp.applications[index]
        prefixes = self.cache.cache.prefixes if self.cache is not None else None
        known = prefixes.get(id(app)) if prefixes is not None else None
        if known is not None and known[0] is app:
            return None
        spec = self._signature(app.function)
        reason = not_cached_because(self.plan, index, spec)
        if reason is not None and spec.name != self.apps[index].function:
            reason = f"'{spec.name}': {reason}"  # a member of a fused chain
        return reason

    def _report(self, observe: Observer, index: int, spec: FunctionSpec, start: float,
                hits: int, misses: int, reason: str | None, served: int) -> None:
        """Tell ``observe`` what the cache did for the application at ``index``."""
        engine = "io" if spec.kind is FunctionKind.IO else self.d.pool.engine_name
        observe(Event(EventKind.CACHED, self.plan.entry, index, spec.name, -1, engine, None,
                      start, time.time(), hits=hits, misses=misses, bytes_served=served,
                      reason=reason))

    def _landed(self, index: int, pos: int, entry: bytes | None) -> None:
        """The leader of an instance this run waits for landed ``entry``."""
        assert self.cache is not None
        outputs = self.cache.adopt(entry) if entry is not None else None
        with self.lock:
            state = self.running.get(index)
            if self.error is not None or state is None:
                return
            if outputs is None:  # the leader failed: compute it here
                assert state.keys is not None
                state.keys[pos] = None
                state.remaining -= 1
                self._submit(index, state, [pos])
                return
            self._fill(index, state, [pos], [outputs])

    def on_whole(self, index: int, outputs: list[Items] | None, error: BaseException | None
                 ) -> None:
        with self.lock:
            if self.error is not None:
                return
            if error is not None:
                self._fail(error)
                return
            self.counts[2] += len(self.running[index].instances)
            self._publish(index, outputs or [])
            self._advance()

    # -- the semantics ---------------------------------------------------------------------

    def _publish(self, index: int, outputs: list[Items]) -> None:
        app = self.apps[index]
        state = self.running.pop(index)
        self.leading.pop(index, None)  # its flights have all landed
        by_result = dict(zip((r.name for r in state.spec.results), outputs))
        for out in app.outputs:
            self.sets[out.target] = by_result.get(out.result, ())
            for consumer in self.consumers.get(out.target, ()):
                needs = self.missing[consumer]
                needs.discard(out.target)
                if not needs:
                    self.ready.append(consumer)
        self.counts[0] += 1

    def _start(self, index: int) -> None:
        d = self.d
        app = self.apps[index]
        spec = self.units[index][0].spec if index in self.units else \
            self._signature(app.function)
        ins = [Input(*bound) for bound in bind(app, spec, self.sets)]
        insts = instances(ins, app.join, d.pool.size)
        state = _Running(app, spec, insts, [None] * len(insts), 0)
        self.running[index] = state
        self.counts[3] += len(insts)
        if not insts:
            self._publish(index, [() for _ in spec.results])
            return
        if app.function in self.nested:
            self._start_nested(index, state)
            return
        call = self._call(index, spec)
        positions: Sequence[int] = range(len(insts))
        if self.cache is not None:
            positions = self._lookup(index, state, call)
            if not positions:  # all served, or waiting for identical instances in flight
                if state.remaining == 0:
                    self._publish(index, gather(state.outputs, len(spec.results)))
                return
        self._submit(index, state, positions)

    def _submit(self, index: int, state: _Running, positions: Sequence[int]) -> None:
        """Compute the instances at ``positions`` (lock held)."""
        call = self._call(index, state.spec)
        if state.spec.kind is FunctionKind.IO:
            state.remaining += 1
            self._start_io(index, state, call, positions)
            return
        n = len(positions)
        size = max(1, math.ceil(n / (self.d.pool.size * BATCHES_PER_WORKER)))
        state.remaining += math.ceil(n / size)
        insts = state.instances
        observe = self.d.observe
        watch = None if observe is None else \
            self._watch(observe, index, state.spec.name, self.d.pool.engine_name)
        if observe is not None and index in self.units:  # each member's instances
            watch = member_watch(observe, self.plan.entry, self.units[index][0],
                                 self.d.pool.engine_name)
        for at in range(0, n, size):
            part = positions[at:at + size]
            self.d.pool.submit(Batch(call, [insts[i] for i in part] if not isinstance(part, range)
                                   else insts[part.start:part.stop], self.on_batch,
                                   self.cancelled, tag=(index, part), watch=watch,
                                   per_sandbox=self.d.batch), self.loop)

    def _watch(self, observe: Observer, index: int, function: str, engine: str) -> Watch:
        """A pool's watch that tells ``observe`` about the instances of one application."""
        return watcher(observe, self.plan.entry, index, function, engine)

    def _call(self, index: int, spec: FunctionSpec) -> FunctionCall:
        """The call that runs application ``index`` (a fused chain's: its unit's)."""
        if index in self.units:
            return self.units[index][1]
        call = self.calls.get(spec.name)
        if call is None:
            call = self.calls[spec.name] = self.d.call_for(spec)
        return call

    def _signature(self, name: str) -> FunctionSpec:
        """The callee's signature, looked up once per run."""
        spec = self.signatures.get(name)
        if spec is None:
            spec = self.signatures[name] = signature(self.module, name)
        return spec

    def _start_nested(self, index: int, state: _Running) -> None:
        runner = self.d.sub_runner
        if runner is None:
            raise BackendError("this runtime cannot run a composition once per shard")
        sub_plan = self.plan.subplan(state.app.function)
        spec = state.spec
        # (an input the call leaves out is not given: the nested run gives it its default)
        given = {a.param for a in state.app.arguments}

        def work() -> None:
            outs: list[list[Items]] = []
            try:
                for inst in state.instances:
                    if self.cancelled.is_set():
                        return
                    sets = {p.name: items for p, items in zip(spec.params, inst.inputs)
                            if p.name in given}
                    result = runner(sub_plan, sets)
                    outs.append([result.get(r.name, ()) for r in spec.results])
            except BaseException as e:
                inst = state.instances[len(outs)]
                self.on_whole(index, None, instance_error(spec, inst, len(state.instances), e))
                return
            self.on_whole(index, gather(outs, len(spec.results)), None)

        # in the caller's context, where a nested run finds where output is collected
        threading.Thread(target=contextvars.copy_context().run, args=(work,),
                         name=f"dandelion-{spec.name}", daemon=True).start()

    def _start_io(self, index: int, state: _Running, call: FunctionCall,
                  positions: Sequence[int]) -> None:
        spec = state.spec
        observe = self.d.observe
        if observe is not None:  # the I/O engine runs them all at once: one span for all
            watch = self._watch(observe, index, spec.name, "io")
            start = time.time()
            for pos in positions:
                watch(state.instances[pos], start, None, None, None, None)

        def done(results: list[Any] | None, failure: tuple[Instance, BaseException] | None
                 ) -> None:
            if failure is None:  # what the I/O engine returned is checked like any output
                bad = first_bad_outputs(spec, results or [])
                if bad is not None:
                    failure = (state.instances[positions[bad[0]]], bad[1])
                    results = (results or [])[:bad[0]]  # those before it are kept
            self._keep(index, positions, results or [])
            if observe is not None:
                end = time.time()
                for n, pos in enumerate(positions):
                    inst = state.instances[pos]
                    failed = failure is not None and failure[0] is inst
                    if n < len(results or []) or failed:
                        watch(inst, start, end, (results or [])[n] if not failed else None,
                              failure[1] if failed and failure is not None else None, None)
            if failure is not None:
                inst, error = failure
                self.on_whole(index, None,
                              instance_error(spec, inst, len(state.instances), error))
                return
            with self.lock:
                if self.error is None:
                    self._fill(index, state, positions, results or [])

        self.d.io_engine.submit(call, [state.instances[i] for i in positions], done,
                                self.cancelled)
