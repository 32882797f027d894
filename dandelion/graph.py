"""Drawing a composition: Graphviz ``dot`` and Mermaid ``flowchart`` text.

Sets are ellipses (direct inputs and outputs drawn bold), applications are boxes; an edge
into an application is labelled with its sharding mode when it is not ``all``.

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
"""

from __future__ import annotations

from dandelion.ir.nodes import Composition, ShardingMode


def _label(app_index: int, comp: Composition) -> str:
    app = comp.applications[app_index]
    return f"{app.function}" + (f" by {app.join}" if app.join else "")


def _edge_label(mode: ShardingMode, optional: bool) -> str:
    words = (["optional"] if optional else []) + ([str(mode)] if mode.is_sharded else [])
    return " ".join(words)


def to_dot(comp: Composition) -> str:
    """Graphviz source for ``comp``."""
    direct = {d.name for d in (*comp.inputs, *comp.outputs)}
    lines = [f'digraph "{comp.name}" {{', "  rankdir=LR;"]
    for decl in comp.declarations():
        style = ', style=bold' if decl.name in direct else ""
        lines.append(f'  "s_{decl.name}" [label="{decl.name}\\n{decl.type}", '
                     f'shape=ellipse{style}];')
    for i, app in enumerate(comp.applications):
        lines.append(f'  "a{i}" [label="{_label(i, comp)}", shape=box];')
        for arg in app.arguments:
            label = _edge_label(arg.mode, arg.optional)
            attr = f' [label="{label}"]' if label else ""
            lines.append(f'  "s_{arg.source}" -> "a{i}"{attr};')
        for out in app.outputs:
            lines.append(f'  "a{i}" -> "s_{out.target}";')
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(comp: Composition) -> str:
    """Mermaid ``flowchart`` source for ``comp``."""
    lines = ["flowchart LR"]
    for decl in comp.declarations():
        lines.append(f'  s_{decl.name}(["{decl.name}"])')
    for i in range(len(comp.applications)):
        lines.append(f'  a{i}["{_label(i, comp)}"]')
    for i, app in enumerate(comp.applications):
        for arg in app.arguments:
            label = _edge_label(arg.mode, arg.optional)
            arrow = f"-->|{label}|" if label else "-->"
            lines.append(f"  s_{arg.source} {arrow} a{i}")
        for out in app.outputs:
            lines.append(f"  a{i} --> s_{out.target}")
    return "\n".join(lines)
