"""The ``ray`` backend: the same plans, with the same semantics, on a Ray cluster.

Each Ray node hosts a Dandelion worker (:class:`~dandelion.backends.ray.worker.NodeWorker`,
a Ray actor) with a pool of the configured sandboxing engine and the node's I/O engine, so
compute functions keep their isolation on Ray (``isolation="sandbox"``, the default);
``isolation="none"`` runs them as plain Ray tasks, for trusted code.  Sets travel between
nodes as Ray object references, never through the driver, which reads only the
composition's direct outputs (:mod:`dandelion.backends.ray.graph`).  A pure function whose
node dies is run again elsewhere (Ray re-executes the lost work from its lineage); an I/O
function only if it is idempotent.  Placement hints are documented in
:mod:`dandelion.backends.ray.place`.

Example:
    >>> import dandelion as dd                                   # doctest: +SKIP
    >>> with dd.Runtime(backend="ray", num_cpus=2) as rt:        # doctest: +SKIP
    ...     rt.run(my_composition, [1, 2, 3])
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
import uuid
from typing import Any, Mapping

import attrs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dandelion.backends.ray import caching, graph, locality, worker
from dandelion.backends.ray.place import NODE_LABEL, Node, Placement
from dandelion.cache.cache import Cache
from dandelion.errors import BackendError
from dandelion.planner.plan import Plan
from dandelion.runtime.backend import Backend as BackendBase
from dandelion.runtime.backend import ComputeOptions
from dandelion.runtime.events import Event, EventKind, Observer
from dandelion.runtime.sharding import Items

#: Units per sharded application, per CPU of the cluster.
BATCHES_PER_CPU = 4
#: Isolation modes: node worker actors with sandboxing engines, or plain Ray tasks.
ISOLATIONS = ("sandbox", "none")
#: Object store of a Ray instance this backend starts itself (bytes).
DEFAULT_OBJECT_STORE = 256 * 1024 * 1024
#: Memory (bytes) the node worker actor reserves.  It reserves no CPU, so that plain tasks
#: of whole CPUs still fit beside it, but not nothing: Ray ignores a soft node affinity for
#: actors that need no resource at all at times.
WORKER_MEMORY = 64 * 1024 * 1024
_PLAIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _custom_resources(resources: Mapping[str, float]) -> frozenset[str]:
    return frozenset(r for r in resources if r not in _PLAIN_RESOURCES
                     and not r.startswith(("node:", "accelerator_type:")))


class _IoFactory:
    """Makes the default I/O engine (:class:`dandelion.io.IoEngine`) on each node."""

    def __init__(self, cls: Any, options: Any) -> None:
        self.cls = cls
        self.options = options
        self.kinds = cls.kinds

    def __call__(self) -> Any:
        return self.cls(self.options)


def default_io_engine(options: Any = None) -> Any:
    """A factory of the platform's I/O engine, or ``None`` where the I/O library is absent."""
    try:
        from dandelion.io.engine import IoEngine  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return _IoFactory(IoEngine, options)


class _Given:
    """A factory that returns (a copy of) an engine object given directly."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.kinds = engine.kinds

    def __call__(self) -> Any:
        return self.engine


class RayBackend(BackendBase):
    """Runs plans on a Ray cluster.

    Args:
        address: ``None`` to use the Ray instance this process is connected to, or start a
            small local one; ``"auto"`` for the cluster of this machine (``ray start``);
            ``"ray://host:port"`` for a remote cluster through Ray Client.
        isolation: ``"sandbox"`` (functions run on each node's Dandelion worker, in the
            configured engine) or ``"none"`` (plain Ray tasks, trusted code only).
        engine: the node workers' compute engine (default: the local backend's).
        workers: engines per node worker (default: the node's CPUs).
        timeout: seconds any function may run (``None``: no limit).
        timeouts: per-function limits, by function name.
        engine_options: passed to the engine's constructor on every node.
        io_engine: the nodes' I/O engine: a factory (a class or function, with a
            ``kinds`` attribute) called once per node, or an engine object to copy there
            (default: the platform's :class:`dandelion.io.IoEngine`, made from ``io``).
        io: options of the default I/O engine (as for the local backend).
        retries: how often a pure unit is run again after its node or worker died.
        batches: units per sharded application (default: 4 per CPU of the cluster).
        num_cpus: CPUs of a local Ray instance this backend starts.
        object_store_memory: object store bytes of such an instance.
        init_options: more keyword arguments for :func:`ray.init`.
        topology: which node is near which storage (:mod:`dandelion.planner.topology`:
            a :class:`~dandelion.planner.topology.Topology`, its data or a JSON file;
            default: the file ``$DANDELION_TOPOLOGY`` names, if set); see
            ``docs/placement.rst``.

    Raises:
        BackendError: an unknown isolation or engine, or an engine with ``isolation="none"``.
        TopologyError: the topology is malformed or names a node the cluster lacks.
    """

    name = "ray"
    capabilities = frozenset({"compute", "io", "nested", "timeouts", "placement", "cache"})

    def __init__(self, address: str | None = None, isolation: str = "sandbox",
                 engine: str | None = None, workers: int | None = None,
                 timeout: float | None = None, timeouts: Mapping[str, float] | None = None,
                 engine_options: Mapping[str, Any] | None = None, io_engine: Any = None,
                 retries: int = 3, batches: int | None = None, num_cpus: int | None = None,
                 object_store_memory: int | None = None,
                 init_options: Mapping[str, Any] | None = None, io: Any = None,
                 topology: Any = None) -> None:
        from dandelion.planner.topology import topology as read_topology

        self.topology = read_topology(topology)
        if isolation not in ISOLATIONS:
            raise BackendError(f"unknown isolation {isolation!r} for the ray backend",
                               hint=f"use one of: {', '.join(ISOLATIONS)}")
        if isolation == "none" and engine not in (None, "inline"):
            raise BackendError(f"isolation='none' runs functions as plain Ray tasks, not on "
                               f"engine '{engine}'", hint="drop engine=, or use "
                               "isolation='sandbox' to keep the engine's isolation")
        compute = ComputeOptions.read(engine if isolation == "sandbox" else "inline", timeout,
                                      timeouts, engine_options)
        self.isolation = isolation
        self.engine_name = compute.engine_name
        self.engine_kinds = compute.engine_kinds
        self.engine_options = compute.engine_options
        self.workers = workers
        self.timeouts = compute.timeouts
        self.io_factory = (self._io_factory(io_engine) if io_engine is not None
                           else default_io_engine(io))
        self.io_config = locality.io_config(io)
        self.retries = max(0, int(retries))
        self.batches = batches
        self._owns_ray = False
        self._connect(address, num_cpus, object_store_memory, dict(init_options or {}))
        self._actors: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._io_key = uuid.uuid4().hex
        self.closed = False
        locality.resolve(self.topology, self.nodes())  # a bad topology fails here, at start

    @staticmethod
    def _io_factory(io_engine: Any) -> Any:
        if io_engine is None:
            return None
        if getattr(io_engine, "kinds", None) is None:
            raise BackendError("io_engine must declare the implementation kinds it runs "
                               "('kinds')", hint="pass the I/O engine's class or an instance")
        graph.ship_code(io_engine)
        if hasattr(io_engine, "submit") and not isinstance(io_engine, type):
            return _Given(io_engine)
        return io_engine

    def _connect(self, address: str | None, num_cpus: int | None, store: int | None,
                 options: dict[str, Any]) -> None:
        if ray.is_initialized():
            return
        if address is None and not os.environ.get("RAY_ADDRESS"):  # ray.init reads it
            # "local": a new instance, never a cluster a stale /tmp/ray file points to
            options.setdefault("address", "local")
            options.setdefault("num_cpus", num_cpus)
            options.setdefault("object_store_memory", store or DEFAULT_OBJECT_STORE)
            options.setdefault("include_dashboard", False)
        else:
            options["address"] = address
        options.setdefault("log_to_driver", True)
        try:
            ray.init(**options)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise BackendError(f"cannot connect to the Ray cluster at {address!r}: {e}",
                               hint="start one with 'ray start --head', or pass address=None "
                                    "for a local instance") from e
        self._owns_ray = True

    # -- the cluster --------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """The alive nodes of the cluster (starting a worker on each new one)."""
        with self._lock:
            return self._discover()

    def node_cpus(self) -> dict[str, int]:
        """The alive nodes by their ``dandelion-node`` label (else their id), with their
        CPUs: the nodes the ``partition`` pass splits a composition over."""
        return {n.label or n.id: n.cpus for n in self.nodes()}

    def _discover(self) -> list[Node]:
        nodes = []
        for info in ray.nodes():  # type: ignore[no-untyped-call,unused-ignore]
            if not info.get("Alive"):
                continue
            resources = info.get("Resources", {})
            labels = info.get("Labels", {}) or {}
            nodes.append(Node(info["NodeID"], labels.get(NODE_LABEL),
                              _custom_resources(resources), int(resources.get("CPU", 0))))
        nodes.sort(key=lambda n: (n.label or "", n.id))
        if self.isolation == "sandbox":
            self._sync_workers(nodes)
        return nodes

    def _sync_workers(self, nodes: list[Node]) -> None:
        alive = {n.id for n in nodes}
        for node_id in [k for k in self._actors if k not in alive]:
            # Ray restarts the worker of a dead node on another node, beside that node's own
            # worker: stop it (units it ran whose outputs are lost are run again on the
            # surviving workers, by the driver)
            _stop(self._actors.pop(node_id))
        new = [n for n in nodes if n.id not in self._actors]
        for attempt in range(5):
            started = {n.id: self._start_worker(n) for n in new}
            placed = ray.get([a.node.remote() for a in started.values()])
            misplaced = []
            for (node_id, actor), (where, _pid) in zip(started.items(), placed):
                if where == node_id:
                    self._actors[node_id] = actor
                else:  # a node that had just joined was not schedulable yet
                    ray.kill(actor, no_restart=True)
                    misplaced.append(next(n for n in new if n.id == node_id))
            new = misplaced
            if not new:
                return
            time.sleep(0.2 * (attempt + 1))
        raise BackendError(f"could not start a Dandelion worker on node(s) "
                           f"{', '.join(n.id[:12] for n in new)}")

    def _start_worker(self, node: Node) -> Any:
        cls = ray.remote(worker.NodeWorker)
        concurrency = 2 * max(1, self.workers or node.cpus) + 2
        return cls.options(
            num_cpus=0, memory=WORKER_MEMORY, max_restarts=-1, max_concurrency=concurrency,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=True),
        ).remote(self.engine_name, self.workers or max(1, node.cpus), self.engine_options,
                 self.io_factory)

    # -- running ------------------------------------------------------------------------
    def run(self, plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
            observe: Observer | None = None, cache: Cache | None = None) -> dict[str, Items]:
        """Run ``plan`` on the cluster; only the direct outputs come back to this process
        (and, with ``observe``, the events of every instance, its node included, as the
        units finish).  With ``cache``, the units look their instances up in it and keep
        their outputs, on their nodes (:mod:`~dandelion.backends.ray.caching`).

        Raises:
            FunctionError: a function failed (naming function, instance and keys).
            BackendError: a unit could not finish on the cluster after its retries, or a
                placement hint names no node.
        """
        if self.closed:
            raise BackendError("this ray backend is closed")
        nodes = self.nodes()
        cpus = sum(n.cpus for n in nodes) or 1
        placement = Placement(tuple(nodes), dict(self._actors)
                              if self.isolation == "sandbox" else None, self.topology,
                              locality.resolve(self.topology, nodes, strict=False),
                              self.io_config)
        io_kinds = frozenset(self.io_factory.kinds) if self.io_factory is not None else None
        calls = graph.prepare_calls(plan.module, artifacts, self.engine_kinds,
                                    self.engine_name, io_kinds, self.timeouts, plan)
        settings = graph.Settings(self.isolation, placement,
                                  self.batches or BATCHES_PER_CPU * cpus, self.retries,
                                  self.io_factory, self._io_key, self.engine_name,
                                  observe is not None,
                                  cache=caching.node_cache(cache) if cache is not None else None)
        if observe is not None and any(box.unit is not None for box in calls.values()):
            observe = member_events(observe, calls)
        # a fused chain's failed instance is run again member by member by its unit, whose
        # error then names the member (worker.blame_member)
        outputs: dict[str, Items] = graph.run_graph(settings, plan, calls, inputs, observe)
        return outputs

    def start(self, plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
              observe: Observer | None = None, loop: asyncio.AbstractEventLoop | None = None,
              cache: Cache | None = None
              ) -> concurrent.futures.Future[dict[str, Items]] | None:
        """``None``: a run on Ray needs a thread that waits for its units (:meth:`run`)."""
        return None

    def close(self) -> None:
        """Stop the node workers, and the Ray instance if this backend started it."""
        if self.closed:
            return
        self.closed = True
        if ray.is_initialized():
            for actor in self._actors.values():
                _stop(actor)
        self._actors.clear()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()


def member_events(observe: Observer, calls: Mapping[str, graph.CallBox]) -> Observer:
    """``observe`` told of each member's instance where a fused chain's unit reports one
    (:func:`dandelion.runtime.fused.member_watch` does the same for the local backend)."""
    chains = {}
    for key, box in calls.items():
        if box.unit is not None:
            composition, _, head = key.rpartition("#")
            chains[(composition, int(head))] = box.unit

    def tell(event: Event) -> None:
        unit = chains.get((event.composition, event.application))
        if unit is None or event.function != unit.spec.name or \
                event.kind is EventKind.CACHED:
            observe(event)
            return
        last = len(unit.chain) - 1
        each = None if event.function_seconds is None else \
            event.function_seconds / len(unit.chain)
        for m, (i, spec) in enumerate(zip(unit.chain, unit.specs)):
            observe(attrs.evolve(event, application=i, function=spec.name,
                                 bytes_in=event.bytes_in if m == 0 else 0,
                                 bytes_out=event.bytes_out if m == last or
                                 event.bytes_out is None else 0,
                                 function_seconds=each))

    return tell


def _stop(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # its node is gone already
        pass


Backend = RayBackend
