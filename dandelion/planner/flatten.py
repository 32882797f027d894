"""Pass ``flatten``: inline calls of compositions whose inputs are all passed whole.

A composition that calls another with ``all`` inputs means exactly the callee's
applications with its sets renamed, so the backend sees one flat DAG.  Calls that shard
their inputs stay as they are (the backend runs the callee once per instance).

>>> from dandelion.ir import *
>>> from dandelion.planner import Plan, PassContext
>>> inner = Composition("inner", [SetDecl("a")], [SetDecl("b")], [],
...                     [Application("f", [Argument("x", "a")], [Output("y", "b")])])
>>> outer = Composition("outer", [SetDecl("i")], [SetDecl("o")], [],
...                     [Application("inner", [Argument("a", "i")], [Output("b", "o")])])
>>> m = Module([FunctionSpec("f", [Param("x")], [Param("y")])], [inner, outer])
>>> p, decisions = flatten(Plan(m, "outer"), PassContext())
>>> [(a.function, a.arguments[0].source, a.outputs[0].target)
...  for a in p.composition.applications]
[('f', 'i', 'o')]
>>> [d.message for d in decisions]
["inlined composition 'inner' called at application 0"]
"""

from __future__ import annotations

import attrs

from dandelion.ir.nodes import Application, Composition, Module, ShardingMode
from dandelion.planner.context import PassContext
from dandelion.planner.plan import Decision, Plan


def _inline(module: Module, comp: Composition) -> tuple[Composition, list[str]]:
    apps: list[Application] = []
    ephemeral = list(comp.ephemeral)
    notes: list[str] = []
    for n, app in enumerate(comp.applications):
        callee = module.composition(app.function)
        if callee is None or any(a.mode is not ShardingMode.ALL for a in app.arguments):
            apps.append(app)
            continue
        callee, inner_notes = _inline(module, callee)
        notes += inner_notes
        prefix = f"{callee.name}_{n}_"
        rename = {d.name: prefix + d.name for d in callee.declarations()}
        args = {a.param: a.source for a in app.arguments}
        outs = {o.result: o.target for o in app.outputs}
        for decl in callee.inputs:
            rename[decl.name] = args.get(decl.name, prefix + decl.name)
        for decl in callee.outputs:
            if decl.name in outs:
                rename[decl.name] = outs[decl.name]
        for decl in callee.declarations():
            fresh = decl.name not in args and decl.name not in outs
            if fresh:
                # (a constant, or an input left out, keeps its items)
                ephemeral.append(attrs.evolve(decl, name=rename[decl.name]))
        for inner in callee.applications:
            apps.append(attrs.evolve(
                inner,
                arguments=[attrs.evolve(a, source=rename[a.source]) for a in inner.arguments],
                outputs=[attrs.evolve(o, target=rename[o.target]) for o in inner.outputs]))
        notes.append(f"inlined composition '{callee.name}' called at application {n}")
    return attrs.evolve(comp, applications=apps, ephemeral=ephemeral), notes


def flatten(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
    """Inline composition calls whose inputs are all whole sets (a pure pass; it reads
    nothing from ``context``)."""
    comp, notes = _inline(plan.module, plan.composition)
    if not notes:
        return plan, []
    comps = [comp if c.name == plan.entry else c for c in plan.module.compositions]
    result = attrs.evolve(plan, module=attrs.evolve(plan.module, compositions=comps))
    return result, [Decision("flatten", note) for note in notes]
