"""Pass ``partition``: a wide composition split across nodes, cutting no large edge.

The placement passes (:mod:`dandelion.planner.placement`) place what the data decides:
I/O near its storage, a function applied to each item of a set where the set's parts
are, and, at run time, a consumer of whole sets where most of its input bytes are.  What
they leave is every application that reads no set such an application made: the
composition's own branches, fed from its direct inputs.  On its own the backend spreads
each of those over all nodes, so a function that reads a whole set gathers it from every
node.  ``partition`` keeps such sets on one node:

1. an edge (a set from one application to another) is *large* when one item of its type
   is estimated at ``partition_min_bytes`` or more
   (:func:`~dandelion.planner.placement.estimated_bytes`; default 64 KiB: bytes and
   arrays, not numbers or strings);
2. the *groups* are the connected components of the free applications joined by large
   edges, and a group is worth a node when one of its large edges gathers (its consumer
   reads the set whole, or forms instances from it, rather than following its parts);
3. with two or more such groups, each goes whole to one node, largest first onto the node
   with the fewest applications per CPU (longest-processing-time first); the cut is then
   only small edges.  The hint ``{"partition": NODE}`` is soft: a backend runs the group
   elsewhere if that node is gone.

Why this heuristic and not a general min-cut (Kernighan–Lin): a composition has tens of
applications, and its large edges are known by type before it runs; cutting none of them
is optimal for bytes moved, so the only choice left is balance, which
longest-processing-time first keeps within 4/3 of the best (Graham).  A single group is
left spread: putting it on one node would save its gather but idle the other nodes' CPUs.

The nodes and their CPUs come from the backend (``PassContext.nodes``), else from the
topology's node names, one CPU each; with fewer than two nodes the pass decides nothing.

>>> from dandelion.ir import *
>>> from dandelion.planner import Plan, PassContext
>>> from dandelion.planner.partition import partition
>>> t = DataType.parse
>>> fns = [FunctionSpec("blob", [Param("x", t("item[int]"))], [Param("b", t("set[bytes]"))]),
...        FunctionSpec("size", [Param("bs", t("set[bytes]"))], [Param("n", t("item[int]"))]),
...        FunctionSpec("both", [Param("l", t("item[int]")), Param("r", t("item[int]"))],
...                     [Param("n", t("item[int]"))])]
>>> apps = [Application("blob", [Argument("x", "xs", "each")], [Output("b", "bl")]),
...         Application("size", [Argument("bs", "bl")], [Output("n", "sl")]),
...         Application("blob", [Argument("x", "ys", "each")], [Output("b", "br")]),
...         Application("size", [Argument("bs", "br")], [Output("n", "sr")]),
...         Application("both", [Argument("l", "sl"), Argument("r", "sr")],
...                     [Output("n", "out")])]
>>> sets = [SetDecl(n, t("set[bytes]")) for n in ("bl", "br")]
>>> sets += [SetDecl(n, t("item[int]")) for n in ("sl", "sr")]
>>> comp = Composition("c", [SetDecl("xs", t("set[int]")), SetDecl("ys", t("set[int]"))],
...                    [SetDecl("out", t("item[int]"))], sets, apps)
>>> ctx = PassContext(nodes={"n0": 1, "n1": 1, "n2": 1})
>>> p, ds = partition(Plan(Module(fns, [comp]), "c"), ctx)
>>> {i: h["partition"] for i, h in p.hints.items()}
{0: 'n0', 1: 'n0', 2: 'n1', 3: 'n1'}
>>> print(ds[0].message)  # doctest: +NORMALIZE_WHITESPACE
2 groups over 3 nodes by CPUs (n0: 2 applications / 1 CPU, n1: 2 / 1, n2: 0 / 1);
large edges kept on one node: 2; cut: 2 small edges (est. 16 B per item in all)
>>> print(ds[1].message)
'blob' runs on node 'n0' with group 0 (applications 0, 1): keeps 'bl' on one node
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from dandelion.ir.nodes import Composition, ShardingMode
from dandelion.ir.types import DataType
from dandelion.planner.context import PassContext
from dandelion.planner.placement import estimated_bytes
from dandelion.planner.plan import Decision, Plan

#: Default of the ``partition_min_bytes`` option: the estimated bytes per item from which
#: an edge is large.
MIN_BYTES = 64 * 1024


def placed_by_data(plan: Plan) -> set[int]:
    """The applications whose node the data decides: those near storage, with a ``node``
    hint or a nested composition, and every application that reads a set one of them made
    (it follows it, or goes where most of its input bytes are)."""
    comp = plan.composition
    producer = {o.target: i for i, a in enumerate(comp.applications) for o in a.outputs}
    fixed = {i for i, app in enumerate(comp.applications)
             if plan.hints.get(i, {}).get("near_storage") or plan.hints.get(i, {}).get("node")
             or plan.module.composition(app.function) is not None}
    grown = True
    while grown:
        grown = False
        for i, app in enumerate(comp.applications):
            if i not in fixed and any(producer.get(a.source) in fixed for a in app.arguments):
                fixed.add(i)
                grown = True
    return fixed


def _edges(plan: Plan) -> list[tuple[int, int, str, bool]]:
    """Every edge ``(producer, consumer, set, gathers)`` of the entry composition."""
    comp = plan.composition
    producer = {o.target: i for i, a in enumerate(comp.applications) for o in a.outputs}
    out = []
    for i, app in enumerate(comp.applications):
        for a in app.arguments:
            if a.source in producer:
                follows = (plan.hints.get(i, {}).get("follow") == a.source
                           and a.mode is ShardingMode.EACH)
                out.append((producer[a.source], i, a.source, not follows))
    return out


def _item_bytes(comp: Composition, name: str) -> int:
    decl = comp.declaration(name)
    return estimated_bytes(decl.type if decl is not None else DataType())


def _nodes(context: PassContext) -> dict[str, int]:
    if context.nodes:
        return {n: max(1, int(c)) for n, c in context.nodes.items()}
    if context.topology is not None:
        return {n: 1 for n in context.topology.nodes}
    return {}


def partition(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
    """Put each group of applications joined by large edges on one node (a pure pass; see
    the module docstring).  Reads the option ``partition_min_bytes`` (default
    :data:`MIN_BYTES`)."""
    nodes = _nodes(context)
    if len(nodes) < 2:
        return plan, []
    comp = plan.composition
    minimum = int(context.option("partition_min_bytes", MIN_BYTES))
    fixed = placed_by_data(plan)
    free = [i for i in range(len(comp.applications)) if i not in fixed]
    sizes = {name: _item_bytes(comp, name) for name in {e[2] for e in _edges(plan)}}
    parent = {i: i for i in free}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    edges = [e for e in _edges(plan) if e[0] in parent and e[1] in parent]
    for p, c, name, _ in edges:
        if sizes[name] >= minimum:
            parent[root(c)] = root(p)
    gathering = {root(c) for p, c, name, gathers in edges if gathers and sizes[name] >= minimum}
    groups = sorted(([i for i in free if root(i) == r] for r in gathering),
                    key=lambda g: (-len(g), g[0]))
    if len(groups) < 2:
        return plan, []
    load = {n: 0 for n in nodes}
    home: dict[int, str] = {}
    for group in groups:
        node = min(nodes, key=lambda n: ((load[n] + len(group)) / nodes[n], load[n]))
        load[node] += len(group)
        for i in group:
            home[i] = node
    hints: dict[int, dict[str, Any]] = {i: dict(h) for i, h in plan.hints.items()}
    decisions = [_summary(plan, groups, nodes, load, home, sizes, minimum)]
    for at, group in enumerate(groups):
        kept = sorted({name for p, c, name, _ in edges
                       if p in group and c in group and sizes[name] >= minimum})
        for i in group:
            hint = hints.setdefault(i, {})
            hint.pop("follow", None)
            hint["partition"] = home[i]
            decisions.append(Decision("partition", f"'{comp.applications[i].function}' runs "
                                      f"on node '{home[i]}' with group {at} (applications "
                                      f"{', '.join(map(str, group))}): keeps "
                                      f"{', '.join(repr(k) for k in kept)} on one node", i))
    return attrs.evolve(plan, hints=hints), decisions


def _summary(plan: Plan, groups: list[list[int]], nodes: Mapping[str, int],
             load: Mapping[str, int], home: Mapping[int, str], sizes: Mapping[str, int],
             minimum: int) -> Decision:
    """The decision that says how the groups were balanced and what the cut is."""
    edges = _edges(plan)
    kept = sum(1 for p, c, name, _ in edges
               if p in home and home.get(c) == home[p] and sizes[name] >= minimum)
    cut = [name for p, c, name, _ in edges
           if (p in home or c in home) and home.get(p) != home.get(c)]
    balance = ", ".join(f"{n}: {load[n]} applications / {c} CPU" + ("s" if c > 1 else "")
                        if k == 0 else f"{n}: {load[n]} / {c}"
                        for k, (n, c) in enumerate(nodes.items()))
    large = sum(1 for name in cut if sizes[name] >= minimum)
    what = f"{large} large, {len(cut) - large} small" if large else f"{len(cut)} small"
    return Decision("partition", f"{len(groups)} groups over {len(nodes)} nodes by CPUs "
                    f"({balance}); large edges kept on one node: {kept}; cut: {what} edges "
                    f"(est. {sum(sizes[n] for n in cut)} B per item in all)")


__all__ = ["MIN_BYTES", "partition", "placed_by_data"]
