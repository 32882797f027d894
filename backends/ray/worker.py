"""What runs on the Ray nodes: the per-node Dandelion worker actor and the plain task.

Both execute *units* of an application: either the single instance of an application whose
inputs are all whole sets (the unit receives the input sets' parts and forms the instance
itself), or a batch of instances formed elsewhere.  A unit returns one object per declared
result (the items of its instances for that result, gathered in instance order) and a
small status ``(instances run, node id, events)`` that the driver waits on (the events
of its instances when the run is observed, else none).

With ``isolation="sandbox"`` units are calls on :class:`NodeWorker`, one actor per node,
which hosts a pool of the configured sandboxing engine (the same
:class:`~dandelion.runtime.pool.EnginePool` as the local backend) and the node's I/O engine.
With ``isolation="none"`` they are plain Ray tasks running :func:`execute_task` with the
``inline`` engine in the Ray worker process.

A unit of a fused chain (:mod:`dandelion.runtime.fused`) whose instance fails runs that
instance again member by member, each member as its own invocation (:func:`blame_member`),
as the local dispatcher does: its error names the member that failed, and what each member
printed is shown under that member's name.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Sequence

import attrs

from dandelion.backends.ray import caching
from dandelion.errors import BackendError, FunctionError, FunctionTimeout
from dandelion.ir.nodes import FunctionKind, Join, ShardingMode
from dandelion.runtime.dispatcher import instance_error, user_cause
from dandelion.runtime.engine import Engine, FunctionCall
from dandelion.runtime.events import Event, items_bytes, watcher
from dandelion.runtime.fused import FusedUnit
from dandelion.runtime.pool import (
    Batch,
    EnginePool,
    Watch,
    first_bad_outputs,
    run_instance,
    run_watched,
    timeout_error,
)
from dandelion.runtime.registry import load_engine
from dandelion.runtime.sharding import Input, Instance, Items, gather, instances

#: How often a waiting unit checks for functions past their timeout (seconds).
TIMEOUT_POLL = 0.02


@attrs.frozen
class UnitSpec:
    """What the driver tells a unit besides its data (small; travels with every call).

    Attributes:
        key: cache key of the function call on the worker (the digest of its pickle).
        function: the function's name (for messages).
        kind: ``compute`` or ``io``.
        n_results: number of declared results.
        batch: whether the unit's data is a batch of formed instances and the
            application's instance count (otherwise it forms its instances).
        params: for a forming unit, per parameter ``(name, mode, optional, parts)``: how
            many of the unit's data arguments are parts of that parameter's set.
        join: the application's join, for a forming unit.
        observe: ``(composition, application, engine)`` when the run is observed: the
            unit then makes an :class:`~dandelion.runtime.events.Event` for each instance's
            start and end, and returns them in its status.
        cache: where the unit looks its instances up and keeps their outputs
            (:mod:`~dandelion.backends.ray.caching`; ``None``: not cached).
    """

    key: str
    function: str
    kind: str
    n_results: int
    batch: bool = False
    params: tuple[tuple[str, ShardingMode, bool, int], ...] = ()
    join: Join | None = None
    observe: tuple[str, int, str] | None = None
    cache: caching.UnitCache | None = None
    #: for a unit that forms the instances of one part of a sharded set (locality), its
    #: part's position among the set's ``n`` parts and the producers' result it is:
    #: ``(position, n, result)``; the last ``n`` data arguments are then the statuses of
    #: the parts' producers, whose item counts give its instances their indices in the
    #: whole application and the application's count
    part: tuple[int, int, int] | None = None


@attrs.frozen
class ChainCalls:
    """What the unit of a fused chain needs to find the member of a failed instance: the
    chain (:class:`~dandelion.runtime.fused.FusedUnit`) and each member's own call."""

    unit: FusedUnit
    calls: tuple[FunctionCall, ...]


#: Where a chain's failure carries what its members printed before it, for the driver to
#: show under their names: ``(function, instance, text)`` triples.
CHAIN_PRINTED = "_dandelion_chain_printed"

#: Runs one member's instance and returns its outputs, adding what it printed to the list;
#: raises the member's error (named with :func:`instance_error`).
RunMember = Callable[[FunctionCall, Instance, list[tuple[Instance, str]]], Any]


def blame_member(chain: ChainCalls, inst: Instance, run: RunMember) -> None:
    """Run the failed chain instance ``inst`` again member by member (``run``: one
    invocation each, with the member's own time limit) and raise the error of the member
    that fails, carrying what the members before it printed (:data:`CHAIN_PRINTED`).
    Returns when every member succeeds this time: the chain's own error then stands.
    Functions are pure, so running them again is safe."""
    printed: list[tuple[str, int, str]] = []

    def one(m: int, member: Instance) -> Any:
        call = chain.calls[m]
        mine: list[tuple[Instance, str]] = []
        try:
            outputs = run(call, member, mine)
        except FunctionError as e:
            setattr(e, CHAIN_PRINTED, tuple(printed))
            raise
        printed.extend((call.spec.name, done.index, text) for done, text in mine)
        return outputs

    chain.unit.run_members(inst, one)


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


class UnitEvents:
    """The events of one observed unit's instances, made on the node that ran them."""

    def __init__(self, composition: str, application: int, function: str, engine: str
                 ) -> None:
        self.events: list[Event] = []
        self.node = _node_id()
        self.watch = watcher(self.events.append, composition, application, function, engine,
                             self.node)


def _events(unit: UnitSpec) -> UnitEvents | None:
    if unit.observe is None:
        return None
    composition, application, engine = unit.observe
    return UnitEvents(composition, application, unit.function, engine)


def concat(parts: Sequence[Items]) -> Items:
    """The set whose parts (each a tuple of items, in order) are ``parts``."""
    return gather(((p,) for p in parts), 1)[0]


def unit_instances(unit: UnitSpec, data: Sequence[Any]) -> tuple[list[Instance], int]:
    """The instances a unit runs and the application's instance count.

    A batch unit receives one argument, its list of instances; a forming unit receives the
    parts of each parameter's set and forms the instances with
    :func:`~dandelion.runtime.sharding.instances`.
    """
    if unit.batch:
        return list(data[0]), int(data[1])
    counts: Sequence[int] = ()
    if unit.part is not None:
        _, n, result = unit.part
        counts = [status[5][result] for status in data[len(data) - n:]]
        data = data[:len(data) - n]
    ins, at = [], 0
    for name, mode, optional, n_parts in unit.params:
        ins.append(Input(name, concat(data[at:at + n_parts]), mode, optional))
        at += n_parts
    insts = instances(ins, unit.join, 1)
    if unit.part is None:
        return insts, len(insts)
    offset = sum(counts[:unit.part[0]])
    return [attrs.evolve(i, index=i.index + offset) for i in insts], sum(counts)



Boxed = tuple[FunctionCall, "ChainCalls | None"]


def _cached_call(cache: dict[str, Boxed], unit: UnitSpec, box: Sequence[Any]) -> Boxed:
    """The unit's call and, for a fused chain, its members' (cached by key)."""
    boxed = cache.get(unit.key)
    if boxed is None:
        import ray
        import ray.cloudpickle

        boxed = cache[unit.key] = ray.cloudpickle.loads(ray.get(box[0]))
    return boxed


def _finish(unit: UnitSpec, per_instance: list[Any], count: int,
            printed: Sequence[tuple[Instance, str]] = (),
            events: UnitEvents | None = None) -> Any:
    """The unit's outputs and its status: the instance count, the node, what the
    instances printed (``(instance index, text)`` pairs, for the driver to forward) and,
    when the run is observed, their events; then the bytes of each output when observed
    (:mod:`~dandelion.backends.ray.traffic`), else ``None``; and each output's item count."""
    outs = gather(per_instance, unit.n_results)
    status: tuple[Any, ...] = (count, _node_id(),
                               tuple((inst.index, text) for inst, text in printed),
                               tuple(events.events) if events is not None else ())
    sizes = None
    if unit.observe is not None:
        sizes = tuple(items_bytes([out]) for out in outs) if outs else (0,) * unit.n_results
    lengths = tuple(len(out) for out in outs) if outs else (0,) * unit.n_results
    status += (sizes, lengths)
    return (*outs, status) if outs else status


def _raise_failure(call: FunctionCall, failure: tuple[Instance, BaseException], total: int
                   ) -> None:
    inst, error = failure
    raise instance_error(call.spec, inst, total, error) from user_cause(error)


def run_io(io_engine: Any, call: FunctionCall, insts: list[Instance], total: int,
           events: UnitEvents | None = None) -> list[Any]:
    """Run I/O instances on ``io_engine`` (the dispatcher's ``submit`` interface); wait.
    They run at once: their events (with ``events``) share one span."""
    if io_engine is None:
        raise BackendError(f"I/O function '{call.spec.name}' needs an I/O engine, and this "
                           "Ray node has none", hint="pass io_engine= (a factory) to the "
                           "ray backend")
    finished = threading.Event()
    box: list[Any] = []

    def done(results: list[Any] | None, failure: tuple[Instance, BaseException] | None
             ) -> None:
        box.append((results, failure))
        finished.set()

    start = time.time()
    if events is not None:
        for inst in insts:
            events.watch(inst, start, None, None, None, None)
    io_engine.submit(call, insts, done, threading.Event())
    finished.wait()
    results, failure = box[0]
    if failure is None:  # what the I/O engine returned is checked like any output
        bad = first_bad_outputs(call.spec, results or [])
        if bad is not None:
            failure = (insts[bad[0]], bad[1])
    if failure is not None:
        _raise_failure(call, failure, total)
    if events is not None:
        end = time.time()
        for inst, outputs in zip(insts, results or []):
            events.watch(inst, start, end, outputs, None, None)
    return list(results or [])


class NodeWorker:
    """The Dandelion worker of one Ray node (a Ray actor; see :func:`node_worker_class`).

    It hosts ``workers`` engines of the configured kind (sandboxed, reused between
    invocations exactly as on the local backend), and the node's I/O engine.

    Args:
        engine: the engine's registry name.
        workers: number of engines (default: the node's CPUs).
        engine_options: passed to the engine's constructor.
        io_engine: a factory of the node's I/O engine (or ``None``).
    """

    def __init__(self, engine: str, workers: int, engine_options: dict[str, Any],
                 io_engine: Callable[[], Any] | None) -> None:
        cls = load_engine(engine)
        self.pool = EnginePool(lambda: cls(**engine_options), max(1, workers))
        self.io_engine = io_engine() if io_engine is not None else None
        self.calls: dict[str, Boxed] = {}

    def node(self) -> tuple[str, int]:
        """This worker's Ray node id and process id."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def execute(self, unit: UnitSpec, box: Sequence[Any], *data: Any) -> Any:
        """Run one unit; return its outputs and status (see the module docstring)."""
        call, chain = _cached_call(self.calls, unit, box)
        insts, total = unit_instances(unit, data)
        if not insts:
            return _finish(unit, [], 0)
        events = _events(unit)
        printed: list[tuple[Instance, str]] = []

        def compute(todo: list[Instance]) -> list[Any]:
            if unit.kind == FunctionKind.IO.value:
                return run_io(self.io_engine, call, todo, total, events)
            return self._compute(call, todo, total, events, printed, chain)

        results = caching.run_cached(unit, call, insts, compute, events)
        return _finish(unit, results, len(insts), printed, events)

    def _compute(self, call: FunctionCall, insts: list[Instance], total: int,
                 events: UnitEvents | None, printed: list[tuple[Instance, str]],
                 chain: ChainCalls | None = None) -> list[Any]:
        """Run compute instances on the node's engines; wait.  A fused chain's failed
        instance is run again member by member (:func:`blame_member`)."""
        finished = threading.Event()
        failures: list[tuple[Instance, BaseException]] = []

        def done(_batch: Batch, failure: tuple[Instance, BaseException] | None) -> None:
            if failure is not None:
                failures.append(failure)
            finished.set()

        cancelled = threading.Event()
        batch = Batch(call, insts, done, cancelled,
                      watch=events.watch if events is not None else None)
        self.pool.submit(batch)
        watch = call.timeout is not None and not self.pool.enforces_timeout
        while not finished.wait(TIMEOUT_POLL if watch else None):
            late = self.pool.check_timeouts(cancelled)
            if late is not None:
                cancelled.set()
                stuck = [i for i in insts if i.index == late.instance]
                if chain is not None and stuck:
                    blame_member(chain, stuck[0], lambda c, i, p: self._compute(
                        c, [i], total, None, p)[0])
                raise late
        if failures:
            if chain is not None:
                blame_member(chain, failures[0][0], lambda c, i, p: self._compute(
                    c, [i], total, None, p)[0])
            _raise_failure(call, failures[0], total)
        printed.extend(batch.logs)
        return list(batch.results)

    def close(self) -> None:
        """Stop the engines."""
        self.pool.close()


class _TaskHost:
    """The engines of one Ray worker process, for ``isolation="none"`` tasks."""

    engine: Engine | None = None
    io_engines: dict[str, Any] = {}  # by the key of the runtime that made them
    calls: dict[str, Boxed] = {}


def _run_with_timeout(engine: Engine, call: FunctionCall, inst: Instance,
                      printed: list[tuple[Instance, str]], watch: Watch | None) -> Any:
    """One instance on a helper thread, given up on at the call's timeout (an unsandboxed
    function cannot be stopped: the thread runs on, as with the local inline engine)."""
    box: list[Any] = []

    def work() -> None:
        try:
            box.append((True, _run(engine, call, inst, printed, watch)))
        except BaseException as e:  # handed to the caller below
            box.append((False, e))

    thread = threading.Thread(target=work, name=f"dandelion-{call.spec.name}", daemon=True)
    thread.start()
    thread.join(call.timeout)
    if not box:
        assert call.timeout is not None  # only called with a timeout
        raise timeout_error(call.spec, inst, call.timeout, "raise the timeout, or use "
                            "isolation='sandbox' with an engine that stops the function")
    ok, value = box[0]
    if not ok:
        raise value
    return value


def execute_task(unit: UnitSpec, box: Sequence[Any],
                 io: tuple[str, Callable[[], Any]] | None, *data: Any) -> Any:
    """A unit as a plain Ray task: the ``inline`` engine in this Ray worker process, and
    for I/O the engine ``io`` (a key naming the runtime's engine and its factory) makes."""
    host = _TaskHost
    call, chain = _cached_call(host.calls, unit, box)
    insts, total = unit_instances(unit, data)
    if not insts:
        return _finish(unit, [], 0)
    events = _events(unit)
    printed: list[tuple[Instance, str]] = []

    def compute(todo: list[Instance]) -> list[Any]:
        if unit.kind == FunctionKind.IO.value:
            io_engine = None
            if io is not None:
                key, factory = io
                io_engine = host.io_engines.get(key)
                if io_engine is None:
                    io_engine = host.io_engines[key] = factory()
            return run_io(io_engine, call, todo, total, events)
        if host.engine is None:
            host.engine = load_engine("inline")()
        engine = host.engine
        watch = events.watch if events is not None else None

        def one(call: FunctionCall, inst: Instance, printed: list[tuple[Instance, str]],
                watch: Watch | None = None) -> Any:
            try:
                return _run_with_timeout(engine, call, inst, printed, watch) \
                    if call.timeout else _run(engine, call, inst, printed, watch)
            except BaseException as e:
                if chain is not None and call is chain_call:
                    blame_member(chain, inst, one)
                if isinstance(e, FunctionTimeout):
                    raise
                _raise_failure(call, (inst, e), total)

        chain_call = call
        return [one(call, inst, printed, watch) for inst in todo]

    results = caching.run_cached(unit, call, insts, compute, events)
    return _finish(unit, results, len(insts), printed, events)


def _run(engine: Engine, call: FunctionCall, inst: Instance,
         printed: list[tuple[Instance, str]], watch: Watch | None) -> Any:
    return run_instance(engine, call, inst, printed) if watch is None else \
        run_watched(engine, call, inst, watch, printed)


def form_batches(params: tuple[tuple[str, ShardingMode, bool, int], ...], join: Join | None,
                 n_batches: int, measure: bool, *parts: Items) -> tuple[Any, ...]:
    """Form an application's instances where its inputs are and cut them into
    ``n_batches`` contiguous batches (some possibly empty); returns the batches, the
    instance count and, last, this node's id and (with ``measure``) each batch's bytes.
    Pure platform code, run as a plain Ray task."""
    ins, at = [], 0
    for name, mode, optional, n_parts in params:
        ins.append(Input(name, concat(parts[at:at + n_parts]), mode, optional))
        at += n_parts
    insts = instances(ins, join, n_batches)
    batches = split(insts, n_batches)
    sizes = tuple(sum(items_bytes(i.inputs) for i in b) for b in batches) if measure else None
    return (*batches, len(insts), (_node_id(), sizes))


def split(insts: list[Instance], n_batches: int) -> list[list[Instance]]:
    """``insts`` cut into ``n_batches`` contiguous batches whose sizes differ by at most one.

    >>> [len(b) for b in split(list(range(5)), 3)]
    [2, 2, 1]
    """
    size, extra = divmod(len(insts), n_batches)
    out, start = [], 0
    for i in range(n_batches):
        end = start + size + (1 if i < extra else 0)
        out.append(insts[start:end])
        start = end
    return out
