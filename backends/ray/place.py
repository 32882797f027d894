"""Placement on a Ray cluster: the planner's per-application hints as Ray scheduling.

A plan may carry, per application index, a plain dict of hints (``Plan.hints``).  The Ray
backend reads these keys (others are left to other backends):

``node``
    run the application's units on one node, named by its Ray node id (or a unique prefix
    of at least 6 hex digits), by the value of its ``dandelion-node`` label, or by a custom
    resource only that node (or those nodes) have.  A preference, not a pin: if the node
    dies, a pure function is retried elsewhere.
``placement``
    ``"spread"`` (the units go round-robin over all nodes, weighted by their CPUs; the
    default for sharded applications) or ``"pack"`` (all units on one node: the node that
    produced the application's input; the default for single-instance applications).
``idempotent``
    for an I/O function: whether it may be run again after its node died (default: the
    function's ``cacheable`` flag).
``near_storage``, ``follow``
    set by the planner's placement passes (:mod:`dandelion.planner.placement`), followed by
    :mod:`dandelion.backends.ray.locality`.
``partition``
    set by the ``partition`` pass (:mod:`dandelion.planner.partition`): a node, as for
    ``node``, but a node that is gone is no error (the units go where they would without
    the hint).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs

from dandelion.errors import BackendError

#: The Ray node label that names a node for ``{"node": ...}`` hints.
NODE_LABEL = "dandelion-node"
#: Values of the ``placement`` hint.
PLACEMENTS = ("spread", "pack")


@attrs.frozen
class Node:
    """One alive node of the cluster, as the backend sees it."""

    id: str
    label: str | None = None
    resources: frozenset[str] = frozenset()
    cpus: int = 1

    def matches(self, name: str) -> bool:
        """Whether the hint value ``name`` designates this node."""
        if name == self.id or name == self.label or name in self.resources:
            return True
        return len(name) >= 6 and self.id.startswith(name)


@attrs.define(eq=False)
class Route:
    """Where one unit runs: a node worker actor (sandbox) or Ray task options (none)."""

    node: Node | None = None
    actor: Any = None
    strategy: Any = "DEFAULT"

    def task_options(self) -> dict[str, Any]:
        """``.options(...)`` for a plain Ray task following this route."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self.node is not None:
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(self.node.id,
                                                                          soft=True)}
        return {"scheduling_strategy": self.strategy}


@attrs.define(eq=False)
class Placement:
    """Chooses routes for units from hints, producers' nodes and the cluster's nodes.

    Args:
        nodes: the alive nodes.
        actors: node id -> that node's worker actor (``None`` for plain tasks).
    """

    nodes: tuple[Node, ...]
    actors: Mapping[str, Any] | None = None
    #: the topology (:mod:`dandelion.planner.topology`) and the nodes its names designate
    topology: Any = None
    near_nodes: Mapping[str, Node] = attrs.field(factory=dict)
    #: the I/O options, to tell which storage a request addresses
    io_config: Any = None
    _turn: int = 0
    _nodes_cycle: list[Node] | None = None

    def _route(self, node: Node) -> Route:
        actor = self.actors.get(node.id) if self.actors is not None else None
        return Route(node, actor)

    def _cycle(self) -> list[Node]:
        """Each node once per CPU, interleaved (built once: the nodes are fixed)."""
        if self._nodes_cycle is None:
            most = max((n.cpus for n in self.nodes), default=1)
            self._nodes_cycle = [n for k in range(most) for n in self.nodes if n.cpus > k]
        return self._nodes_cycle

    def _next(self) -> Node:
        cycle = self._cycle()
        if not cycle:
            raise BackendError("the Ray cluster has no alive node to run on")
        node = cycle[self._turn % len(cycle)]
        self._turn += 1
        return node

    def named(self, hint: Mapping[str, Any], where: str) -> list[Node] | None:
        """The nodes a ``node`` hint designates, else those a ``partition`` hint does
        (``None`` without either, or where the partition's node is gone)."""
        name = hint.get("node")
        if name is None:
            soft = hint.get("partition")
            found = [n for n in self.nodes if soft is not None and n.matches(str(soft))]
            return found or None
        found = [n for n in self.nodes if n.matches(str(name))]
        if not found:
            known = ", ".join(n.label or n.id[:12] for n in self.nodes)
            raise BackendError(f"{where}: placement hint node={name!r} matches no alive "
                               f"node of the Ray cluster", hint=f"nodes: {known}")
        return found

    def _mode(self, hint: Mapping[str, Any], where: str, default: str) -> str:
        mode = hint.get("placement", default)
        if mode not in PLACEMENTS:
            raise BackendError(f"{where}: unknown placement hint {mode!r}",
                               hint=f"use one of: {', '.join(PLACEMENTS)}")
        return str(mode)

    def single(self, hint: Mapping[str, Any], homes: Sequence[Route | None], where: str
               ) -> Route:
        """The route of a single-instance unit: hinted node, else its producer's node."""
        mode = self._mode(hint, where, "pack")
        named = self.named(hint, where)
        if named is not None:
            return self._route(named[self._bump() % len(named)])
        if mode == "spread":
            return self._route(self._next())
        if self.actors is None:
            return Route()  # Ray's own scheduling follows the data
        for home in homes:
            if home is not None and home.node is not None and home.node in self.nodes:
                return home
        return self._route(self._next())

    def spread(self, hint: Mapping[str, Any], n: int, where: str) -> list[Route]:
        """The routes of ``n`` batch units of one application."""
        mode = self._mode(hint, where, "spread")
        named = self.named(hint, where)
        if named is not None:
            return [self._route(named[(self._bump()) % len(named)]) for _ in range(n)]
        if mode == "pack":
            one = self._route(self._next())
            return [one] * n
        # round-robin, weighted by CPUs (Ray's own SPREAD is best-effort and may skip nodes)
        return [self._route(self._next()) for _ in range(n)]

    def keep(self, alive: set[str]) -> None:
        """Forget the nodes (and their workers) whose ids are not in ``alive``."""
        self.nodes = tuple(n for n in self.nodes if n.id in alive)
        if self.actors is not None:
            self.actors = {k: a for k, a in self.actors.items() if k in alive}
        self._nodes_cycle = None

    def on(self, node: Node) -> Route:
        """The route onto ``node``."""
        return self._route(node)

    def any(self) -> Route:
        """A route on the next node in turn (a unit whose node died goes there)."""
        return self._route(self._next())

    def _bump(self) -> int:
        self._turn += 1
        return self._turn - 1
