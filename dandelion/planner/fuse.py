"""Pass ``fuse``: chains of compute functions linked 1:1 run as one unit.

A fresh sandbox per invocation costs a fixed price; purity makes it legal to run a chain of
functions, each instance of which feeds exactly one instance of the next, in one sandbox
invocation: the intermediate sets never leave it.  The pass finds such chains
(:func:`can_fuse` says whether one edge may be fused, and :func:`why_not_fused` why not)
and records them in :attr:`Plan.chains <dandelion.planner.plan.Plan.chains>`; a backend
runs each chain as one unit (:mod:`dandelion.runtime.fused`).

An edge ``a -> b`` is 1:1 when ``b`` takes ``a``'s result

* with ``each``, and that result is one item per instance (instance ``i`` of ``b`` takes
  the output of instance ``i`` of ``a``), or
* whole (``all``), and ``a`` has a single instance (every argument of ``a`` is whole),

and every other argument of ``b`` is whole (no join, no other sharding): ``b`` then has
as many instances as ``a``.  Both must be compute functions with a Python implementation
(one interpreter runs the chain; a native or wasm function has a sandbox of its own, and an
I/O function runs outside sandboxes), neither declared ``fusable=False``, and the set
between them must be read by ``b`` alone (not by another application, not an output of
the composition) and not be optional.

Reads option ``fuse`` from the context (default ``True``; ``False``: fuse nothing, as
``dd.Runtime(fuse=False)`` does).

>>> from dandelion.ir import *
>>> from dandelion.planner import Plan, PassContext
>>> one, many = DataType.parse("item[int]"), DataType.parse("set[int]")
>>> def f(name):
...     return FunctionSpec(name, [Param("x", one)], [Param("y", one)],
...                         implementations=[Implementation("python", "sha256:00", name)])
>>> m = Module([f("parse"), f("score"), f("rank")], [Composition(
...     "c", [SetDecl("a", many)], [SetDecl("d", many)], [SetDecl("b", many),
...     SetDecl("c", many)],
...     [Application("parse", [Argument("x", "a", "each")], [Output("y", "b")]),
...      Application("score", [Argument("x", "b", "each")], [Output("y", "c")]),
...      Application("rank", [Argument("x", "c", "each")], [Output("y", "d")])])])
>>> p, decisions = fuse(Plan(m, "c"), PassContext())
>>> p.chains
((0, 1, 2),)
>>> print(decisions[0].message)
fused 'parse' -> 'score' -> 'rank' (each over 'b', each over 'c'): one sandbox per instance
>>> fuse(Plan(m, "c"), PassContext({"fuse": False}))[0].chains
()
"""

from __future__ import annotations

from collections import defaultdict

import attrs

from dandelion.ir.nodes import Application, FunctionKind, ShardingMode
from dandelion.planner.context import PassContext
from dandelion.planner.plan import Decision, Plan

#: The implementation kind whose functions one sandbox can run one after the other.
FUSABLE_KIND = "python"


def link_of(plan: Plan, producer: int, consumer: int) -> str | None:
    """The one set that application ``producer`` makes and ``consumer`` reads (``None``:
    none, or several)."""
    apps = plan.composition.applications
    made = {o.target for o in apps[producer].outputs}
    read = [a.source for a in apps[consumer].arguments if a.source in made]
    return read[0] if len(read) == 1 else None


def why_not_fused(plan: Plan, producer: int, consumer: int) -> str | None:
    """Why application ``consumer`` may not run in the same sandbox invocation as its
    producer ``producer`` (indices into the entry composition), or ``None`` when it may
    (the edge is 1:1 and both can share a sandbox)."""
    comp, module = plan.composition, plan.module
    a, b = comp.applications[producer], comp.applications[consumer]
    for app in (a, b):
        spec = module.function(app.function)
        if spec is None:
            return f"'{app.function}' is a composition"
        if spec.kind is not FunctionKind.COMPUTE:
            return f"'{app.function}' is an I/O function (it runs outside sandboxes)"
        if not spec.fusable:
            return f"'{app.function}' is declared fusable=False"
        if not any(i.kind == FUSABLE_KIND for i in spec.implementations):
            return (f"'{app.function}' has no Python implementation (a native or wasm "
                    "function runs in a sandbox of its own)")
    link = link_of(plan, producer, consumer)
    if link is None:
        return f"'{b.function}' reads no single set of '{a.function}'"
    if any(d.name == link for d in comp.outputs):
        return f"'{link}' is an output of the composition"
    readers = [arg for app in comp.applications for arg in app.arguments if arg.source == link]
    if len(readers) != 1:
        return f"'{link}' is read by {len(readers)} arguments"
    arg = readers[0]
    if arg.optional:
        return f"'{b.function}' takes '{link}' as optional"
    if b.join is not None:
        return f"'{b.function}' joins its inputs"
    if any(x.mode is not ShardingMode.ALL for x in b.arguments if x is not arg):
        return f"'{b.function}' shards another input too (instances are not 1:1)"
    if arg.mode is ShardingMode.EACH:
        spec = module.function(a.function)
        out = next(o for o in a.outputs if o.target == link)
        result = spec.result(out.result) if spec is not None else None
        if result is None or result.type.is_set:
            return (f"'{a.function}' returns a set as '{link}' (its instances are not one "
                    "item each)")
        return None
    if arg.mode is ShardingMode.ALL:
        if a.join is not None or any(x.mode is not ShardingMode.ALL for x in a.arguments):
            return f"'{a.function}' has many instances and '{b.function}' takes them all"
        return None
    return f"'{b.function}' takes '{link}' {arg.mode} (instances are not 1:1)"


def can_fuse(plan: Plan, producer: int, consumer: int) -> bool:
    """Whether application ``consumer`` may run fused with its producer ``producer``
    (:func:`why_not_fused`)."""
    return why_not_fused(plan, producer, consumer) is None


def _edges(apps: list[Application]) -> list[tuple[int, int]]:
    """Every (producer, consumer) pair of applications, by consumer, then producer."""
    producer = {o.target: i for i, app in enumerate(apps) for o in app.outputs}
    edges = []
    for j, app in enumerate(apps):
        for i in sorted({producer[a.source] for a in app.arguments if a.source in producer}):
            edges.append((i, j))
    return edges


def fuse(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
    """Record the chains of the entry composition that run fused (a pure pass)."""
    if not context.option("fuse", True):
        return plan, [Decision("fuse", "fusion is off (fuse=False)")]
    apps = list(plan.composition.applications)
    edges = _edges(apps)
    unit = list(range(len(apps)))          # application -> the head of its unit
    after: dict[int, int] = {}             # application -> the next one in its chain
    before: dict[int, int] = {}
    decisions = []
    for a, b in edges:
        reason = why_not_fused(plan, a, b)
        if reason is None and (a in after or b in before):
            reason = "a chain takes one producer and one consumer per function"
        if reason is None and _reads_own(apps, unit, a, b):
            reason = f"'{apps[b].function}' reads another set of the chain it would join"
        if reason is None and _cycle(edges, unit, a, b):
            reason = (f"'{apps[b].function}' also waits for work that waits for "
                      f"'{apps[a].function}'")
        if reason is not None:
            decisions.append(Decision(
                "fuse", f"'{apps[a].function}' -> '{apps[b].function}' not fused: {reason}",
                b))
            continue
        after[a], before[b] = b, a
        head, old = unit[a], unit[b]
        unit = [head if u == old else u for u in unit]
    chains: list[tuple[int, ...]] = []
    for head in range(len(apps)):
        if head in after and head not in before:
            members = [head]
            while members[-1] in after:
                members.append(after[members[-1]])
            chains.append(tuple(members))
    fused = []
    for chain in chains:
        names = " -> ".join(f"'{apps[i].function}'" for i in chain)
        links = ", ".join(_how(plan, i, j) for i, j in zip(chain, chain[1:]))
        fused.append(Decision(
            "fuse", f"fused {names} ({links}): one sandbox per instance",
            chain[0]))
    return attrs.evolve(plan, chains=chains), fused + decisions


def _how(plan: Plan, producer: int, consumer: int) -> str:
    link = link_of(plan, producer, consumer)
    arg = next(a for a in plan.composition.applications[consumer].arguments
               if a.source == link)
    return f"{arg.mode} over '{link}'"


def _reads_own(apps: list[Application], unit: list[int], a: int, b: int) -> bool:
    """Whether a member of the merged unit of ``a`` and ``b`` reads a set that another
    member makes, other than through its link (the unit would wait for itself)."""
    members = [i for i, u in enumerate(unit) if u in (unit[a], unit[b])]
    made = {o.target: i for i in members for o in apps[i].outputs}
    return sum(1 for i in members for arg in apps[i].arguments
               if arg.source in made) > len(members) - 1


def _cycle(edges: list[tuple[int, int]], unit: list[int], a: int, b: int) -> bool:
    """Whether merging the units of ``a`` and ``b`` closes a cycle between units: the unit
    of ``b`` is reachable from that of ``a`` through a third unit."""
    src, dst = unit[a], unit[b]
    succ: dict[int, set[int]] = defaultdict(set)
    for i, j in edges:
        if unit[i] != unit[j]:
            succ[unit[i]].add(unit[j])
    todo = [u for u in succ[src] if u != dst]
    seen = set(todo)
    while todo:
        u = todo.pop()
        if u == dst:
            return True
        for v in succ[u]:
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return False


__all__ = ["FUSABLE_KIND", "can_fuse", "fuse", "link_of", "why_not_fused"]
