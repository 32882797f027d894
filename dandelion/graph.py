"""Drawing a composition: Graphviz ``dot`` and Mermaid ``flowchart`` text.

Sets are ellipses (direct inputs and outputs drawn bold), applications are boxes; an edge
into an application is labelled with its sharding mode when it is not ``all``.  Given the
fused chains of a plan (:attr:`~dandelion.planner.plan.Plan.chains`), each is drawn as one
box around its applications and the sets that stay inside it.

>>> from dandelion.ir import *
>>> c = Composition("c", [SetDecl("a")], [SetDecl("b")], [],
...                 [Application("f", [Argument("x", "a", "each")], [Output("y", "b")])])
>>> print(to_mermaid(c))
flowchart LR
  s_a(["a"])
  s_b(["b"])
  a0["f"]
  s_a -->|each| a0
  a0 --> s_b
>>> d = Composition("d", [SetDecl("a")], [SetDecl("c")], [SetDecl("b")],
...                 [Application("f", [Argument("x", "a", "each")], [Output("y", "b")]),
...                  Application("g", [Argument("x", "b", "each")], [Output("y", "c")])])
>>> print(to_mermaid(d, chains=[(0, 1)]))
flowchart LR
  s_a(["a"])
  s_c(["c"])
  subgraph fused0 ["fused: f → g"]
    s_b(["b"])
    a0["f"]
    a1["g"]
  end
  s_a -->|each| a0
  a0 --> s_b
  s_b -->|each| a1
  a1 --> s_c
"""

from __future__ import annotations

from typing import Sequence

from dandelion.ir.nodes import Composition, ShardingMode

Chains = Sequence[Sequence[int]]


def _label(app_index: int, comp: Composition) -> str:
    app = comp.applications[app_index]
    return f"{app.function}" + (f" by {app.join}" if app.join else "")


def _edge_label(mode: ShardingMode, optional: bool) -> str:
    words = (["optional"] if optional else []) + ([str(mode)] if mode.is_sharded else [])
    return " ".join(words)


def _inside(comp: Composition, chains: Chains) -> list[tuple[list[str], list[int]]]:
    """Per chain, the sets that stay inside it (read by its next member alone) and its
    applications."""
    groups = []
    for chain in chains:
        members = set(chain)
        sets = [o.target for i in chain[:-1] for o in comp.applications[i].outputs
                if any(a.source == o.target for j in members if j != i
                       for a in comp.applications[j].arguments)]
        groups.append((sets, list(chain)))
    return groups


def _chain_title(comp: Composition, chain: Sequence[int]) -> str:
    return "fused: " + " → ".join(comp.applications[i].function for i in chain)


def to_dot(comp: Composition, chains: Chains = ()) -> str:
    """Graphviz source for ``comp``, each of the fused ``chains`` in a box of its own."""
    direct = {d.name for d in (*comp.inputs, *comp.outputs)}
    lines = [f'digraph "{comp.name}" {{', "  rankdir=LR;"]
    groups = _inside(comp, chains)
    where = {name: n for n, (sets, _) in enumerate(groups) for name in sets}
    where_app = {i: n for n, (_, apps) in enumerate(groups) for i in apps}
    body: dict[int | None, list[str]] = {None: []}
    for decl in comp.declarations():
        style = ', style=bold' if decl.name in direct else ""
        body.setdefault(where.get(decl.name), []).append(
            f'"s_{decl.name}" [label="{decl.name}\\n{decl.type}", shape=ellipse{style}];')
    for i in range(len(comp.applications)):
        body.setdefault(where_app.get(i), []).append(
            f'"a{i}" [label="{_label(i, comp)}", shape=box];')
    lines += ["  " + line for line in body[None]]
    for n, (_, apps) in enumerate(groups):
        lines.append(f'  subgraph "cluster_fused{n}" {{')
        lines.append(f'    label="{_chain_title(comp, apps)}"; style=rounded;')
        lines += ["    " + line for line in body.get(n, [])]
        lines.append("  }")
    for i, app in enumerate(comp.applications):
        for arg in app.arguments:
            label = _edge_label(arg.mode, arg.optional)
            attr = f' [label="{label}"]' if label else ""
            lines.append(f'  "s_{arg.source}" -> "a{i}"{attr};')
        for out in app.outputs:
            lines.append(f'  "a{i}" -> "s_{out.target}";')
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(comp: Composition, chains: Chains = ()) -> str:
    """Mermaid ``flowchart`` source for ``comp``, each of the fused ``chains`` in a box of
    its own."""
    lines = ["flowchart LR"]
    groups = _inside(comp, chains)
    inside = {name for sets, _ in groups for name in sets}
    grouped = {i for _, apps in groups for i in apps}
    for decl in comp.declarations():
        if decl.name not in inside:
            lines.append(f'  s_{decl.name}(["{decl.name}"])')
    for i in range(len(comp.applications)):
        if i not in grouped:
            lines.append(f'  a{i}["{_label(i, comp)}"]')
    for n, (sets, apps) in enumerate(groups):
        lines.append(f'  subgraph fused{n} ["{_chain_title(comp, apps)}"]')
        lines += [f'    s_{name}(["{name}"])' for name in sets]
        lines += [f'    a{i}["{_label(i, comp)}"]' for i in apps]
        lines.append("  end")
    for i, app in enumerate(comp.applications):
        for arg in app.arguments:
            label = _edge_label(arg.mode, arg.optional)
            arrow = f"-->|{label}|" if label else "-->"
            lines.append(f"  s_{arg.source} {arrow} a{i}")
        for out in app.outputs:
            lines.append(f"  a{i} --> s_{out.target}")
    return "\n".join(lines)
