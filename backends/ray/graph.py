"""Submitting a plan to Ray as a graph of units, waiting for it, fetching its outputs.

The whole composition is submitted at once, in dependency order: every set between
functions is a list of Ray object references (its *parts*, in instance order), so a
consumer's unit names its producers' outputs and Ray moves the data between nodes, never
through the driver.  Instance formation is :func:`dandelion.runtime.sharding.instances`,
run where the data is:

* an application whose inputs are all whole sets (``all``) is one unit that receives the
  parts and forms its (zero or one) instance itself;
* a sharded application is formed by a small platform task next to its inputs
  (:func:`~dandelion.backends.ray.worker.form_batches`), which cuts the instances into a
  fixed number of batches, one unit each, spread across the nodes;
* where the driver already holds every input (the composition's direct inputs) it forms the
  instances itself, since the data is there anyway.

Each unit returns one object per result and a tiny status; the driver waits on the
statuses only (:func:`wait`) and fetches the direct outputs at the end (:func:`fetch`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any, Mapping, Sequence

import attrs

from dandelion.backends.ray import caching, locality, traffic, worker
from dandelion.backends.ray.place import Placement, Route
from dandelion.backends.ray.recovery import Call, Recovery, leave, settle
from dandelion.errors import BackendError, DandelionError, FunctionError
from dandelion.ir.nodes import Application, FunctionKind, FunctionSpec, Module, ShardingMode
from dandelion.planner.cacheable import not_cached_because
from dandelion.planner.placement import estimated_bytes
from dandelion.planner.plan import Plan
from dandelion.runtime import logs
from dandelion.runtime.backend import bind, initial_sets, signature
from dandelion.runtime.dispatcher import choose_call, instance_error, user_cause
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.events import Event, Observer, items_bytes
from dandelion.runtime.fused import fused_unit
from dandelion.runtime.sharding import Input, Items, instances
from dandelion.runtime.tracebacks import with_sources

#: A set the driver holds (direct inputs, empty sets) or the parts of a remote one.
SetValue = Any


@attrs.define(eq=False)
class RemoteSet:
    """A set produced on the cluster: object references whose concatenation is the set."""

    parts: list[Any]
    home: Route | None = None
    #: where each part was made (``None`` where unknown)
    routes: list[Route | None] | None = None


@attrs.define(eq=False)
class Submitted:
    """A submitted graph: its sets, its calls and the units the driver waits on."""

    sets: dict[str, SetValue]
    recovery: Recovery
    waited: list[Call]
    outputs: tuple[str, ...]
    #: what the run's accounting of bytes moved needs (observed runs)
    entry: str = ""
    names: tuple[str, ...] = ()
    forms: list[Call] = attrs.field(factory=list)
    put_sizes: dict[Any, int] = attrs.field(factory=dict)
    reports: dict[int, traffic.Report] = attrs.field(factory=dict)
    storage_nodes: dict[tuple[int, int], str] = attrs.field(factory=dict)
    #: application -> bytes its I/O instances read from storage near another node
    remote_reads: dict[int, int] = attrs.field(factory=dict)
    #: application -> units that spilled off the node of their input's part
    spilled: dict[int, int] = attrs.field(factory=dict)


@attrs.frozen
class Settings:
    """How units are made (picklable: nested compositions submit from a Ray task).

    Attributes:
        isolation: ``sandbox`` (calls on the node workers) or ``none`` (plain tasks).
        placement: the cluster's nodes and their workers.
        batches: units per sharded application.
        retries: re-executions of a pure unit whose node or worker died.
        io_factory: makes a node's I/O engine (``None``: no I/O engine).
        io_key: names this runtime's I/O engine in the Ray worker processes that cache it.
        engine: the compute engine's name (for events).
        observe: whether units make events (:mod:`dandelion.runtime.events`).
        cache: how units reopen the result cache (``None``: not cached).
    """

    isolation: str
    placement: Placement
    batches: int
    retries: int
    io_factory: Any = None
    io_key: str = ""
    engine: str = ""
    observe: bool = False
    cache: caching.NodeCache | None = None


@attrs.frozen
class CallBox:
    """A function call put in the object store once per run; workers cache it by key.

    ``unit``: for the call of a fused chain (:mod:`dandelion.runtime.fused`), the unit
    (its application and declaration) that runs in the chain's place.
    """

    key: str
    box: tuple[Any, ...]
    unit: Any = None


def _installed(path: str) -> bool:
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    real = os.path.realpath(path)
    return any(real.startswith(root + os.sep) for root in roots)


def ship_code(obj: Any) -> None:
    """Make the module that defines ``obj`` (an artifact's function, a factory) travel by
    value.

    The nodes can import installed packages, but not a user's own module (a test module, a
    file next to a notebook); pickling that module's functions and classes by value ships
    them with the artifact, as the code bundle of a Python function.
    """
    import ray.cloudpickle

    target = getattr(obj, "fn", obj)
    name = getattr(target, "__module__", None) or type(target).__module__
    module = sys.modules.get(name)
    if module is None or module.__name__ == "__main__" or module.__name__.split(".")[0] in (
            "dandelion", "ray"):
        return
    path = getattr(module, "__file__", None)
    if path and not _installed(path):
        ray.cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call,unused-ignore]


def _box(name: str, call: FunctionCall, unit: Any = None,
         chain: worker.ChainCalls | None = None) -> CallBox:
    import ray
    import ray.cloudpickle

    from dandelion.runtime import pickling  # noqa: F401 - its reducers (cached_property)

    # Workers cache calls by this key, so it must name the content: a code digest covers
    # only the source, and two closures of one factory share it but not their values.
    # The call (with a fused chain's member calls) is pickled once, by the pickler that
    # ships it (its by-value modules included), and the key is that pickle's digest.
    data = ray.cloudpickle.dumps((call, chain))  # type: ignore[no-untyped-call,unused-ignore]
    key = f"{name}:{hashlib.sha256(data).hexdigest()}"
    return CallBox(key, (ray.put(data),), unit)


def unit_key(plan: Plan, head: int) -> str:
    """Under which name the call of the fused chain starting at application ``head`` of
    ``plan``'s entry is boxed."""
    return f"{plan.entry}#{head}"


def prepare_calls(module: Module, artifacts: Mapping[str, Any], engine_kinds: frozenset[str],
                  engine_name: str, io_kinds: frozenset[str] | None,
                  timeouts: Mapping[str, float], plan: Plan | None = None
                  ) -> dict[str, CallBox]:
    """One :class:`CallBox` per function the module's compositions apply, and one per fused
    chain of ``plan`` and its sub-plans (under :func:`unit_key`).

    The implementation is chosen as the local dispatcher chooses it, with the same errors
    for missing code or an engine that runs none of the implementations.  A chain runs
    fused only where the local dispatcher fuses it: every member's chosen implementation
    is Python, and either every member has a time limit (the chain's is their sum) or none.
    """
    names = {a.function for c in module.compositions for a in c.applications}
    boxes = {}
    calls = {}
    for name in sorted(names):
        spec = module.function(name)
        if spec is None:
            continue
        timeout = timeouts.get(name, timeouts.get("*"))
        # the local backend's choice and errors
        call = calls[name] = choose_call(spec, engine_kinds, engine_name, artifacts, timeout,
                                         io_kinds)
        ship_code(call.artifact)
        boxes[name] = _box(name, call)
    todo = [plan] if plan is not None else []
    while todo:
        p = todo.pop()
        todo += p.subplans.values()
        for chain in p.chains:
            members = [calls.get(p.composition.applications[i].function) for i in chain]
            if any(c is None or c.implementation.kind != "python" for c in members):
                continue
            limits = [c.timeout for c in members if c is not None]
            if any(limits) and not all(limits):
                continue
            unit = fused_unit(p, chain, [c.artifact for c in members if c is not None],
                              [c.implementation for c in members if c is not None])
            timeout = sum(t for t in limits if t) if all(limits) else None
            call = FunctionCall(unit.spec, unit.spec.implementations[0], unit.artifact,
                                timeout)
            boxes[unit_key(p, chain[0])] = _box(
                unit.spec.name, call, unit,
                worker.ChainCalls(unit, tuple(c for c in members if c is not None)))
    return boxes


def _remote_task() -> Any:
    import ray

    global _TASK, _FORM, _NESTED
    if _TASK is None:
        _TASK = ray.remote(worker.execute_task)
        _FORM = ray.remote(num_cpus=0)(worker.form_batches)
        _NESTED = ray.remote(num_cpus=0)(run_nested)
    return _TASK


_TASK: Any = None
_FORM: Any = None
_NESTED: Any = None


def _as_list(refs: Any, n: int) -> list[Any]:
    return list(refs) if n > 1 else [refs]


class _Builder:
    """Submits the applications of one composition run."""

    def __init__(self, settings: Settings, plan: Plan, calls: Mapping[str, CallBox]) -> None:
        self.settings = settings
        self.plan = plan
        self.calls = calls
        self.recovery = Recovery(settings.placement)
        self.waited: list[Call] = []
        self._puts: dict[str, Any] = {}
        #: per application, units that did not follow their input's part, its node having
        #: its share already
        self.spilled: dict[int, int] = {}
        #: application index -> the key of its call, where it is not its function's name
        #: (a fused chain's unit, at its head)
        self.keys: dict[int, str] = {}
        #: the forming tasks (their statuses: node and batch sizes)
        self.forms: list[Call] = []
        #: the sets the driver put: ref -> bytes (observed runs)
        self.put_sizes: dict[Any, int] = {}
        #: (application, instance) -> the node near the storage an I/O request addresses
        self.storage_nodes: dict[tuple[int, int], str] = {}
        _remote_task()

    def key(self, index: int, spec: FunctionSpec) -> str:
        """The key of the call that runs application ``index``."""
        return self.keys.get(index, spec.name)

    # -- data ---------------------------------------------------------------------------
    def parts(self, name: str, value: SetValue) -> list[Any]:
        """The object references of a set (a held set is put once)."""
        import ray

        if isinstance(value, RemoteSet):
            return value.parts
        ref = self._puts.get(name)
        if ref is None:
            ref = self._puts[name] = ray.put(tuple(value))
            if self.settings.observe:
                self.put_sizes[ref] = items_bytes([value])
        return [ref]

    def _data(self, bound: list[tuple[str, SetValue, ShardingMode, bool]]
              ) -> tuple[tuple[tuple[str, ShardingMode, bool, int], ...], list[Any]]:
        """A forming unit's ``params`` and the parts of every bound set, in order."""
        params, data = [], []
        for name, value, mode, optional in bound:
            parts = self.parts(name, value)
            params.append((name, mode, optional, len(parts)))
            data += parts
        return tuple(params), data

    # -- units --------------------------------------------------------------------------
    def _unit(self, index: int, spec: FunctionSpec, unit: worker.UnitSpec, route: Route,
              data: Sequence[Any], retries: int) -> list[Any]:
        settings = self.settings
        n = unit.n_results + 1
        box = list(self.calls[self.key(index, spec)].box)
        if settings.observe:
            engine = "io" if spec.kind is FunctionKind.IO else settings.engine
            unit = attrs.evolve(unit, observe=(self.plan.entry, index, engine))
        if settings.cache is not None:
            fused = self.calls[self.key(index, spec)].unit
            if fused is None:
                cache = caching.for_unit(settings.cache, self.plan, index, spec)
            else:  # a fused chain: cached as one, if every member may be
                reasons = [not_cached_because(self.plan, i, s)
                           for i, s in zip(fused.chain, fused.specs)]
                cache = caching.UnitCache(settings.cache, fused.app,
                                          next((r for r in reasons if r), None))
            unit = attrs.evolve(unit, cache=cache)
        io = (settings.io_key, settings.io_factory) if settings.io_factory else None

        def send(route: Route | None, data: tuple[Any, ...]) -> list[Any]:
            assert route is not None  # units always have one
            if settings.isolation == "sandbox":
                method = route.actor.execute.options(num_returns=n, max_task_retries=retries)
                return _as_list(method.remote(unit, box, *data), n)
            return _as_list(_TASK.options(num_returns=n, max_retries=retries,
                                          **route.task_options())
                            .remote(unit, box, io, *data), n)

        call = self.recovery.add(index, spec, retries, send, route, data)
        self.waited.append(call)
        outs: list[Any] = call.refs[:-1]
        return outs

    def _retries(self, index: int, spec: FunctionSpec) -> int:
        if spec.kind is FunctionKind.IO:
            hint = self.plan.hints.get(index, {})
            if not hint.get("idempotent", spec.cacheable):
                return 0
        return self.settings.retries

    # -- applications -------------------------------------------------------------------
    def submit(self, index: int, app: Application, spec: FunctionSpec,
               sets: dict[str, SetValue]) -> list[SetValue]:
        """Submit one application; return its result sets (in result order)."""
        bound = bind(app, spec, sets)
        hint = dict(self.plan.hints.get(index, {}))
        nested = self.plan.module.composition(app.function) is not None
        whole = all(mode is ShardingMode.ALL for _, _, mode, _ in bound)
        held = all(not isinstance(value, RemoteSet) for _, value, _, _ in bound)
        n_results = len(spec.results)
        near = (hint.get("near_storage") and spec.kind is FunctionKind.IO and not nested
                and self.settings.placement.topology is not None)
        if near and not held:  # the requests decide the nodes: the driver reads them
            bound = self._read(bound)
            held = True
        if hint.get("follow") and not held and not nested:
            followed = self._follow(index, app, spec, bound)
            if followed is not None:
                return followed
        if held:
            ins = [Input(name, tuple(value), mode, optional)
                   for name, value, mode, optional in bound]
            insts = instances(ins, app.join, self.settings.batches)
            if not insts:
                return [() for _ in spec.results]
            if self.settings.observe and spec.kind is FunctionKind.IO:
                for inst in insts:  # to count reads of storage near another node as moved
                    node = locality.near_node(self.settings.placement, spec_entry(spec), inst)
                    if node is not None:
                        self.storage_nodes[index, inst.index] = node.id
            if near:
                most = max(1, -(-len(insts) // self.settings.batches))
                runs = locality.near_storage(self.settings.placement, spec_entry(spec),
                                             insts, most)
                routes = [self.settings.placement.on(node) if node is not None else None
                          for _, node in runs]
                return self._batches(index, app, spec, [(r, len(insts)) for r, _ in runs],
                                     hint, routes)
            if whole and not nested:
                batches = [insts]
            else:
                batches = worker.split(insts, min(self.settings.batches, len(insts)))
            return self._batches(index, app, spec, [(b, len(insts)) for b in batches], hint)
        params, data = self._data(bound)
        where = _where(index, spec)
        if whole and not nested:
            unit = worker.UnitSpec(self.calls[self.key(index, spec)].key, spec.name,
                                   spec.kind.value, n_results, params=params, join=app.join)
            route = self.settings.placement.single(hint, [self._most_bytes(bound, spec)],
                                                   where=where)
            outs = self._unit(index, spec, unit, route, data, self._retries(index, spec))
            return [RemoteSet([ref], route) for ref in outs]
        n = self.settings.batches
        retries, join = self.settings.retries, app.join

        measure = self.settings.observe

        def form(route: Route | None, data: tuple[Any, ...]) -> list[Any]:
            options = route.task_options() if route is not None else {}
            return _as_list(_FORM.options(num_returns=n + 2, max_retries=retries, **options)
                            .remote(params, join, n, measure, *data), n + 2)

        # on its partition's node, else where Ray's locality-aware scheduling puts a plain
        # task: on the node holding most of its arguments' bytes, as they are when ready
        named = self.settings.placement.named(hint, where)
        near = self.settings.placement.on(named[0]) if named else None
        forming = self.recovery.add(index, spec, retries, form, near, data)
        self.forms.append(forming)
        formed = forming.refs
        total = formed[-2]
        return self._batches(index, app, spec, [(b, total) for b in formed[:-2]], hint)

    def _most_bytes(self, bound: list[tuple[str, SetValue, ShardingMode, bool]],
                    spec: FunctionSpec) -> Route | None:
        """The route onto the node holding the largest share of the bytes of the remote
        sets in ``bound`` (:func:`~dandelion.backends.ray.locality.most_bytes`): each
        part's size and node as observed where its producer has finished, else its
        planned node and the size its parameter's type suggests
        (:func:`~dandelion.planner.placement.estimated_bytes`, one item per part)."""
        import ray

        types = {p.name: p.type for p in spec.params}
        parts: list[tuple[Any, Route | None, int]] = []
        for name, value, _, _ in bound:
            if isinstance(value, RemoteSet):
                routes = value.routes or [value.home] * len(value.parts)
                guess = estimated_bytes(types[name]) if name in types else 0
                parts += [(ref, route, guess) for ref, route in zip(value.parts, routes)]
        producers = {ref: self.recovery.producer(ref) for ref, _, _ in parts}
        statuses = list({c.status: c for c in producers.values() if c is not None})
        done: dict[Any, Any] = {}
        if statuses:
            ready, _ = ray.wait(statuses, num_returns=len(statuses), timeout=0)
            for ref in ready:
                try:
                    done[ref] = ray.get(ref)
                except Exception:  # a failed producer: wait() reports it, as a run error
                    continue
        shares: list[tuple[str | None, int]] = []
        for ref, route, guess in parts:
            call = producers[ref]
            status = done.get(call.status) if call is not None else None
            node = route.node.id if route is not None and route.node is not None else None
            if isinstance(status, tuple) and len(status) > 5 and call is not None:
                at = call.refs.index(ref)  # a unit's: (count, node, printed, events, ...)
                sizes, lengths = status[4], status[5]
                node = str(status[1])
                guess = sizes[at] if sizes is not None else lengths[at] * guess
            shares.append((node, guess))
        return locality.most_bytes(self.settings.placement, shares)

    def _read(self, bound: list[tuple[str, SetValue, ShardingMode, bool]]
              ) -> list[tuple[str, SetValue, ShardingMode, bool]]:
        """``bound`` with every remote set read into the driver."""
        import ray

        out = []
        for name, value, mode, optional in bound:
            if isinstance(value, RemoteSet):
                parts = [self.recovery.resolve(ref) for ref in value.parts]
                value = worker.concat(ray.get(parts))
            out.append((name, value, mode, optional))
        return out

    def _follow(self, index: int, app: Application, spec: FunctionSpec,
                bound: list[tuple[str, SetValue, ShardingMode, bool]]
                ) -> list[SetValue] | None:
        """One unit per part of the set the application shards, on that part's node
        (:func:`~dandelion.backends.ray.locality.follow`); ``None`` where the parts' nodes
        are not known."""
        each = [v for _, v, mode, _ in bound if mode is ShardingMode.EACH]
        if len(each) != 1 or not isinstance(each[0], RemoteSet) or each[0].routes is None:
            return None
        followed = each[0]
        assert followed.routes is not None
        routes, spilled = locality.follow(self.settings.placement, followed.routes)
        if spilled:
            self.spilled[index] = self.spilled.get(index, 0) + spilled
        statuses, results = [], set()
        for ref in followed.parts:
            producer = self.recovery.producer(ref)
            if producer is None or self.plan.module.composition(producer.spec.name):
                return None  # put by the driver, or made by a nested composition's run
            statuses.append(producer.status)
            results.add(producer.refs.index(ref))
        if len(results) != 1:
            return None
        per_result: list[list[Any]] = [[] for _ in spec.results]
        for at, (part, route) in enumerate(zip(followed.parts, routes)):
            params, data = [], []
            for name, value, mode, optional in bound:
                parts = [part] if value is followed else self.parts(name, value)
                params.append((name, mode, optional, len(parts)))
                data += parts
            data += statuses
            unit = worker.UnitSpec(self.calls[self.key(index, spec)].key, spec.name,
                                   spec.kind.value, len(spec.results), params=tuple(params),
                                   join=app.join,
                                   part=(at, len(statuses), next(iter(results))))
            outs = self._unit(index, spec, unit, route, data, self._retries(index, spec))
            for i, ref in enumerate(outs):
                per_result[i].append(ref)
        return [RemoteSet(parts, None, list(routes)) for parts in per_result]

    def _batches(self, index: int, app: Application, spec: FunctionSpec,
                 batches: list[tuple[Any, Any]], hint: dict[str, Any],
                 chosen: list[Route | None] | None = None) -> list[SetValue]:
        spread = self.settings.placement.spread(hint, len(batches), where=_where(index, spec))
        routes = spread if chosen is None else [c if c is not None else r
                                                for c, r in zip(chosen, spread)]
        per_result: list[list[Any]] = [[] for _ in spec.results]
        nested = self.plan.module.composition(app.function) is not None
        for (batch, total), route in zip(batches, routes):
            if nested:
                outs = self._nested(index, app, spec, batch, total, route)
            else:
                unit = worker.UnitSpec(self.calls[self.key(index, spec)].key, spec.name,
                                       spec.kind.value, len(spec.results), batch=True)
                outs = self._unit(index, spec, unit, route, (batch, total),
                                  self._retries(index, spec))
            for i, ref in enumerate(outs):
                per_result[i].append(ref)
        nodes = {r.node.id if r.node is not None else None for r in routes}
        home = routes[0] if len(nodes) == 1 and None not in nodes else None
        known: list[Route | None] = [r if r.node is not None else None for r in routes]
        return [RemoteSet(parts, home, known) for parts in per_result]

    def _nested(self, index: int, app: Application, spec: FunctionSpec, batch: Any,
                total: Any, route: Route) -> list[Any]:
        sub_plan = self.plan.subplan(app.function)
        n = len(spec.results) + 1
        retries = self.settings.retries if pure(sub_plan.module) else 0
        settings, calls = self.settings, dict(self.calls)
        given = frozenset(a.param for a in app.arguments)  # (the others get their defaults)

        def nest(route: Route | None, data: tuple[Any, ...]) -> list[Any]:
            options = route.task_options() if route is not None else {}
            return _as_list(_NESTED.options(num_returns=n, max_retries=retries, **options)
                            .remote(settings, sub_plan, calls, spec, given, *data), n)

        call = self.recovery.add(index, spec, retries, nest, route, (batch, total))
        self.waited.append(call)
        outs: list[Any] = call.refs[:-1]
        return outs


def spec_entry(spec: FunctionSpec) -> str:
    """The entry of a function's (first) implementation: an I/O function's platform name."""
    return spec.implementations[0].entry if spec.implementations else spec.name


def _where(index: int, spec: FunctionSpec) -> str:
    return f"application {index} ({spec.kind} function '{spec.name}')"


def pure(module: Module) -> bool:
    """Whether every function of ``module`` is a compute function (safe to run again)."""
    return all(f.kind is FunctionKind.COMPUTE for f in module.functions)


def submit(settings: Settings, plan: Plan, calls: Mapping[str, CallBox],
           inputs: Mapping[str, Items]) -> Submitted:
    """Submit every application of ``plan`` in dependency order; return without waiting."""
    comp = plan.composition
    sets: dict[str, SetValue] = dict(initial_sets(comp, inputs))
    builder = _Builder(settings, plan, calls)
    waiting = list(enumerate(comp.applications))
    units: dict[int, Any] = {}  # head -> the unit of a fused chain, run in its place
    for chain in plan.chains:
        box = calls.get(unit_key(plan, chain[0]))
        if box is not None and box.unit is not None:
            units[chain[0]] = box.unit
            builder.keys[chain[0]] = unit_key(plan, chain[0])
            waiting = [(i, box.unit.app if i == chain[0] else a) for i, a in waiting
                       if i not in chain[1:]]
    while waiting:
        progress = []
        for index, app in waiting:
            if any(a.source not in sets for a in app.arguments):
                continue
            spec = units[index].spec if index in units else signature(plan.module,
                                                                        app.function)
            results = builder.submit(index, app, spec, sets)
            by_result = dict(zip((r.name for r in spec.results), results))
            for out in app.outputs:
                sets[out.target] = by_result.get(out.result, ())
            progress.append(index)
        if not progress:  # verify() rejects cycles before a plan exists
            raise BackendError(f"composition '{comp.name}' has applications whose inputs are "
                               "never produced")
        waiting = [(i, a) for i, a in waiting if i not in progress]
    return Submitted(sets, builder.recovery, builder.waited,
                     tuple(d.name for d in comp.outputs), plan.entry,
                     tuple(a.function for a in comp.applications), builder.forms,
                     builder.put_sizes, storage_nodes=builder.storage_nodes,
                     spilled=builder.spilled)


def wait(submitted: Submitted, observe: Observer | None = None) -> None:
    """Wait for every unit, handing the events of each (made on its node when the run is
    observed) to ``observe`` as it completes.

    A unit that fails because a node, a worker or an object was lost is submitted again
    (:mod:`~dandelion.backends.ray.recovery`); its consumers follow with its new outputs.

    Raises:
        FunctionError: a function failed (naming function, instance and keys), or
        BackendError: a unit could not finish on the cluster after its retries.  The
            driver stops waiting at the first failure; units already submitted are left to
            finish (compute units spend only cluster time; an I/O unit on an independent
            branch still does its I/O, unlike on the local backend).  They are not
            cancelled: ``ray.cancel`` on a task that is still resolving its arguments when
            another fails can abort the driver process (a reference-counting check in Ray's
            core worker, seen with Ray 2.60 in this suite).
    """
    recovery = submitted.recovery
    try:
        error = _wait(submitted, recovery, observe)
    except DandelionError as e:  # no node left to run a unit again on
        error = e
    if error is None:
        settle(recovery.spent)
        if observe is not None:
            _account(submitted, observe)
        return
    # read the errors nothing else will read, now or when the calls left running finish,
    # and hold no reference here (Ray prints an error freed unread as "Unhandled error")
    leave([*recovery.spent, *(c.refs for c in recovery.calls)])
    submitted.sets.clear()
    submitted.waited.clear()
    recovery.calls.clear()
    recovery.spent.clear()
    raise error


def _wait(submitted: Submitted, recovery: Recovery, observe: Observer | None
          ) -> DandelionError | None:
    import ray

    pending = {c.status: c for c in submitted.waited}
    sink = logs.current_sink()
    while pending or recovery.waiting:
        for call in recovery.resubmit_due():
            if call in submitted.waited:
                pending[call.status] = call
        if not pending:
            time.sleep(recovery.next_due() or 0.0)
            continue
        refs = list(pending)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        if not ready:
            ready, _ = ray.wait(refs, num_returns=1, timeout=recovery.next_due())
        for ref in ready:
            call = pending.pop(ref)
            if ref != call.status:
                continue  # an older generation of a call submitted again
            try:
                status = ray.get(ref)
                printed, events = status[2], status[3]
                report = traffic.status_report(call, status)
                if report is not None:
                    submitted.reports[call.seq] = report
            except BaseException as e:
                blame = recovery.retry(call, e)
                if blame is not None:
                    error = translate(blame[1], blame[0])
                    # a fused chain's members' output before the one that failed (found
                    # by its unit: worker.blame_member), then the failing one's, each
                    # under the function that printed it
                    for function, instance, text in getattr(error, worker.CHAIN_PRINTED, ()):
                        logs.forward(logs.FunctionLog(function, instance, text), sink)
                    if isinstance(error, FunctionError) and error.logs:
                        logs.forward(logs.FunctionLog(error.function or blame[0].spec.name,
                                                      error.instance, error.logs), sink)
                    return error
                continue
            for instance, text in printed:
                logs.forward(logs.FunctionLog(call.spec.name, instance, text), sink)
            if observe is not None:
                for event in events:
                    traffic.remote_read(submitted.storage_nodes, submitted.remote_reads,
                                        event)
                    observe(event)
    return None


def _account(submitted: Submitted, observe: Observer) -> None:
    """Tell ``observe`` the bytes each application read from other nodes."""
    import ray

    forms = [c for c in submitted.forms if c in submitted.recovery.calls]
    for call, (node, sizes) in zip(forms, ray.get([c.status for c in forms])):
        submitted.reports[call.seq] = (node, sizes)
    driver = str(ray.get_runtime_context().get_node_id())
    sources = {ref: (driver, size) for ref, size in submitted.put_sizes.items()}
    per_application = traffic.moved(submitted.recovery, submitted.reports, sources, driver)
    for index, size in submitted.remote_reads.items():
        per_application[index] = per_application.get(index, 0) + size
    traffic.report_moved(observe, submitted.entry, submitted.names, per_application,
                         submitted.spilled)


def translate(error: BaseException, call: Call) -> DandelionError:
    """A Ray failure as the Dandelion error it stands for."""
    import ray.exceptions as rex

    if isinstance(error, rex.RayTaskError):
        cause = error.cause
        if isinstance(cause, FunctionError):
            cause.set_traceback(with_sources(cause.traceback))  # the driver has the files
        if isinstance(cause, DandelionError):
            return cause
        if isinstance(cause, rex.RayError):
            error = cause
        else:
            spec = call.spec
            return FunctionError(f"{spec.kind} function '{spec.name}' failed on the Ray "
                                 f"cluster: {type(cause).__name__}: {cause}",
                                 function=spec.name)
    spec = call.spec
    retried = (f"after {max(0, call.failures - 1)} retries" if call.retries else
               "and was not retried (an I/O function that is not idempotent)"
               if spec.kind is FunctionKind.IO else "and was not retried")
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return BackendError(f"{spec.kind} function '{spec.name}' (application {call.index}) "
                        f"could not finish on the Ray cluster {retried}: "
                        f"{type(error).__name__}: {first}",
                        hint="check that the cluster's nodes are alive; raise retries= for "
                             "flaky nodes")


def fetch(submitted: Submitted) -> dict[str, Items]:
    """The direct outputs' items (the only data the driver ever reads)."""
    import ray

    out: dict[str, Items] = {}
    for name in submitted.outputs:
        value = submitted.sets.get(name, ())
        if isinstance(value, RemoteSet):
            parts = [submitted.recovery.resolve(ref) for ref in value.parts]
            out[name] = worker.concat(ray.get(parts))
        else:
            out[name] = tuple(value)
    return out


def run_graph(settings: Settings, plan: Plan, calls: Mapping[str, CallBox],
              inputs: Mapping[str, Items], observe: Observer | None = None
              ) -> dict[str, Items]:
    """Submit, wait (events to ``observe``), fetch: the direct outputs."""
    submitted = submit(settings, plan, calls, inputs)
    wait(submitted, observe)
    return fetch(submitted)


def run_nested(settings: Settings, plan: Plan, calls: dict[str, CallBox], spec: FunctionSpec,
               given: frozenset[str], batch: list[Any], total: int) -> Any:
    """A batch of instances of a composition applied to sharded inputs (a Ray task).

    Each instance's sets of the parameters the call gives become the sub-composition's
    direct inputs (one it leaves out holds its default); its graph is submitted from
    here, so its data still never passes through the driver.
    """
    import ray

    from dandelion.runtime.sharding import gather

    per_instance = []
    events: list[Event] = []  # of the instances' own units, passed on to the driver
    for inst in batch:
        sets = {p.name: items for p, items in zip(spec.params, inst.inputs)
                if p.name in given}
        try:
            outputs = run_graph(settings, plan, calls, sets,
                                events.append if settings.observe else None)
        except BaseException as e:
            raise instance_error(spec, inst, total, e) from user_cause(e)
        per_instance.append([outputs.get(r.name, ()) for r in spec.results])
    outs = gather(per_instance, len(spec.results))
    status = (len(batch), ray.get_runtime_context().get_node_id(), (), tuple(events))
    return (*outs, status) if outs else status
