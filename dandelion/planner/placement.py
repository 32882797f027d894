"""Passes ``near_storage`` and ``locality``: where a multi-node backend runs each
application, so that large sets move between nodes as little as possible.

``near_storage`` marks each I/O function whose requests address storage (Redis keys,
object keys, HTTP URLs: :data:`dandelion.io.stores.ADDRESSED`) with the hint
``{"near_storage": True}``: a backend with the ``placement`` capability runs each of its
instances on the node the topology (:mod:`dandelion.planner.topology`) says is near the
storage its request addresses.  The requests are data, so the node is chosen per request
when the application runs; a request whose storage the topology does not know falls back
to ``locality``.  Without a topology the pass decides nothing.

``locality`` marks each function applied to every item of a set that another application
produces (``each`` of one ephemeral set, other inputs whole) with ``{"follow": SET}``: its
instances run on the nodes that hold the parts of ``SET``, so a producer→consumer chain
stays together (a backend spills units to the least-loaded node where following would put
more than a node's share of the application on it, and says so).  The other applications
go to the node holding most of their input bytes (the backend sees the producers' nodes).

>>> from dandelion.ir import *
>>> from dandelion.planner import Plan, PassContext
>>> from dandelion.planner.topology import Topology
>>> from dandelion.planner.placement import locality, near_storage
>>> m = Module([FunctionSpec("storage_read", [Param("keys")], [Param("objects")],
...                          kind=FunctionKind.IO,
...                          implementations=[Implementation("builtin", "", "storage_read")]),
...             FunctionSpec("size", [Param("x")], [Param("n")])],
...            [Composition("c", [SetDecl("keys")], [SetDecl("n")], [SetDecl("o")],
...                         [Application("storage_read", [Argument("keys", "keys", "each")],
...                                      [Output("objects", "o")]),
...                          Application("size", [Argument("x", "o", "each")],
...                                      [Output("n", "n")])])])
>>> ctx = PassContext(topology=Topology.from_data({"nodes": {"n0": {"roots": "/srv"}}}))
>>> p, ds = near_storage(Plan(m, "c"), ctx)
>>> p.hints[0], ds[0].message.split(" (")[0]
({'near_storage': True}, "'storage_read' runs on the node near the storage each request addresses")
>>> p, ds = locality(p, ctx)
>>> p.hints[1], ds[0].message
({'follow': 'o'}, "'size' follows the parts of 'o' (from application 0) onto their nodes")
"""

from __future__ import annotations

from typing import Any

import attrs

from dandelion.ir.nodes import FunctionKind, ShardingMode
from dandelion.ir.types import DataType, ElementType
from dandelion.planner.context import PassContext
from dandelion.planner.plan import Decision, Plan

#: The bytes one item of each element type is guessed to hold, before anything was
#: observed: only their order of magnitude matters (bytes and arrays are large, numbers
#: small), to compare sets of different types.
ITEM_BYTES: dict[ElementType, int] = {
    ElementType.BYTES: 1 << 20, ElementType.NDARRAY: 1 << 20, ElementType.JSON: 4096,
    ElementType.ANY: 4096, ElementType.STR: 256, ElementType.INT: 8, ElementType.FLOAT: 8,
    ElementType.BOOL: 1}


def estimated_bytes(data_type: DataType) -> int:
    """The bytes one item of ``data_type`` is guessed to hold (:data:`ITEM_BYTES`).

    >>> from dandelion.ir.types import DataType
    >>> from dandelion.planner.placement import estimated_bytes
    >>> estimated_bytes(DataType.parse("set[bytes]")), estimated_bytes(DataType.parse("item[int]"))
    (1048576, 8)
    """
    return ITEM_BYTES.get(data_type.element, ITEM_BYTES[ElementType.ANY])


def near_storage(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
    """Mark the I/O applications that run near their storage (a pure pass)."""
    from dandelion.io.stores import ADDRESSED

    if context.topology is None:
        return plan, []
    hints: dict[int, dict[str, Any]] = {i: dict(h) for i, h in plan.hints.items()}
    decisions = []
    for i, app in enumerate(plan.composition.applications):
        spec = plan.module.function(app.function)
        if spec is None or spec.kind is not FunctionKind.IO or not spec.implementations:
            continue
        if spec.implementations[0].entry not in ADDRESSED:
            continue
        hints.setdefault(i, {})["near_storage"] = True
        decisions.append(Decision("near_storage", f"'{app.function}' runs on the node near "
                                  "the storage each request addresses (per request, at run "
                                  "time; unknown storage: locality)", i))
    return attrs.evolve(plan, hints=hints), decisions


def locality(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
    """Mark the applications that follow the parts of the set they shard (a pure pass)."""
    hints: dict[int, dict[str, Any]] = {i: dict(h) for i, h in plan.hints.items()}
    comp = plan.composition
    producer = {o.target: i for i, a in enumerate(comp.applications) for o in a.outputs}
    decisions = []
    for i, app in enumerate(comp.applications):
        if plan.module.composition(app.function) is not None or app.join is not None:
            continue
        each = [a for a in app.arguments if a.mode is ShardingMode.EACH]
        rest = [a for a in app.arguments if a.mode is not ShardingMode.EACH]
        if len(each) != 1 or any(a.mode is not ShardingMode.ALL for a in rest):
            continue
        source = each[0].source
        if source not in producer or hints.get(i, {}).get("node") is not None:
            continue
        hints.setdefault(i, {})["follow"] = source
        decisions.append(Decision("locality", f"'{app.function}' follows the parts of "
                                  f"'{source}' (from application {producer[source]}) onto "
                                  "their nodes", i))
    return attrs.evolve(plan, hints=hints), decisions


__all__ = ["ITEM_BYTES", "estimated_bytes", "locality", "near_storage"]
