"""Near-storage and locality placement on a Ray cluster, decided as the graph is submitted.

The planner marks applications (:mod:`dandelion.planner.placement`); this module picks their
nodes:

* an I/O application marked ``near_storage`` has its instances cut into contiguous runs
  whose requests address storage near the same node (:func:`near_storage`), each run one
  unit on that node; runs of requests whose storage the topology does not know are spread
  as before (locality's fallback, never an error);
* an application marked ``follow`` gets one unit per part of the set it shards, on the
  node that produced that part (:func:`follow`), unless that would put more than the node's
  share of the application (by CPUs) there: then the unit spills to the least-loaded node,
  and the spill is reported;
* a consumer of whole sets on the node workers goes to the node holding the largest share
  of its input bytes (:func:`most_bytes`: observed where the producers have finished,
  else estimated from the types).  A plain Ray task, which is how the instances of a
  sharded application are formed (a join's, a keyed one's) and how a consumer of whole
  sets runs with ``isolation="none"``, is left to Ray's locality-aware scheduling, which
  sends it to the node holding most of its arguments' bytes as they are when they are
  ready (a test checks both).

Placement is soft (``NodeAffinitySchedulingStrategy(soft=True)`` for tasks, node workers
restarted elsewhere by the recovery): a dead or full node never blocks a run.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from dandelion.backends.ray.place import Node, Placement, Route
from dandelion.errors import TopologyError
from dandelion.planner.topology import Topology
from dandelion.runtime.sharding import Instance


def resolve(topology: Topology | None, nodes: Sequence[Node], strict: bool = True
            ) -> dict[str, Node]:
    """Topology node name -> the alive node it names (with ``strict=False``, a name that
    matches no alive node, one that died since the start, is left out: its storage is then
    unknown, and the requests to it fall back to locality).

    Raises:
        TopologyError: a name matches no alive node, or more than one.
    """
    if topology is None:
        return {}
    out = {}
    known = ", ".join(n.label or n.id[:12] for n in nodes)
    for name in topology.nodes:
        found = [n for n in nodes if n.matches(name)]
        if not found and not strict:
            continue
        if len(found) != 1:
            what = "no alive node" if not found else f"{len(found)} nodes"
            raise TopologyError(f"{topology.source}: node '{name}' matches {what} of the Ray "
                                "cluster", hint=f"name nodes by Ray node id, by their "
                                f"'dandelion-node' label or by a custom resource; nodes: "
                                f"{known}")
        out[name] = found[0]
    return out


def near_node(placement: Placement, entry: str, inst: Instance) -> Node | None:
    """The node near the storage most of the instance's requests address (``None``: none
    the topology knows)."""
    from dandelion.io.stores import target

    topology = placement.topology
    if topology is None:
        return None
    votes: dict[str, int] = {}
    for items in inst.inputs:
        for item in items:
            where = target(entry, placement.io_config, item)
            name = topology.near(*where) if where is not None else None
            if name is not None:
                votes[name] = votes.get(name, 0) + 1
    if not votes:
        return None
    return placement.near_nodes.get(max(votes, key=lambda n: votes[n]))


def near_storage(placement: Placement, entry: str, insts: Sequence[Instance], most: int
                 ) -> list[tuple[list[Instance], Node | None]]:
    """``insts`` cut, in order, into runs whose requests address storage near one node
    (``None``: storage the topology does not know), each run at most ``most`` long."""
    runs: list[tuple[list[Instance], Node | None]] = []
    for inst in insts:
        node = near_node(placement, entry, inst)
        if runs and runs[-1][1] == node and len(runs[-1][0]) < most:
            runs[-1][0].append(inst)
        else:
            runs.append(([inst], node))
    return runs


def follow(placement: Placement, homes: Sequence[Route | None]) -> tuple[list[Route], int]:
    """One route per part: the node that holds it, unless that node already has its share
    of the parts (``parts * cpus / all cpus``, rounded up): then the least-loaded node.
    Returns the routes and how many units spilled."""
    nodes = placement.nodes
    cpus = sum(max(1, n.cpus) for n in nodes) or 1
    share = {n.id: math.ceil(len(homes) * max(1, n.cpus) / cpus) for n in nodes}
    load: dict[str, int] = {n.id: 0 for n in nodes}
    routes, spilled = [], 0
    for home in homes:
        node = home.node if home is not None else None
        if node is None or node.id not in load:
            route = placement.any()
        elif load[node.id] < share[node.id]:
            route = home
        else:
            least = min(nodes, key=lambda n: (load[n.id] / max(1, n.cpus), n.id))
            route = placement.on(least)
            spilled += 1
        assert route is not None
        if route.node is not None and route.node.id in load:
            load[route.node.id] += 1
        routes.append(route)
    return routes, spilled


def most_bytes(placement: Placement, shares: Sequence[tuple[str | None, int]]
               ) -> Route | None:
    """The route onto the alive node that holds the most bytes among ``shares`` (per input
    part: the id of the node that holds it, ``None`` where unknown, and its bytes);
    ``None`` where no part's node is known.  Ties go to the node listed first."""
    held: dict[str, int] = {}
    for node, size in shares:
        if node is not None:
            held[node] = held.get(node, 0) + size
    alive = [n for n in placement.nodes if n.id in held]
    if not alive:
        return None
    return placement.on(max(alive, key=lambda n: held[n.id]))


def io_config(options: Any) -> Any:
    """The I/O options as an :class:`~dandelion.io.IoConfig` (``None`` without the I/O
    library or with options it refuses)."""
    try:
        from dandelion.io.config import IoConfig
    except ImportError:  # pragma: no cover - the I/O library is part of dandelion
        return None
    try:
        return IoConfig.from_options(options if not isinstance(options, Mapping)
                                     else dict(options))
    except (TypeError, ValueError):
        return None
