"""IR -> canonical text in either notation (the formatter and the converter).

Formatting goes through the IR, so ``format_module(parse(text))`` is the canonical form of
``text`` and converting between notations is formatting in the other one.  The canonical
``.dd`` form puts bindings first, then function declarations, then each composition with
its declarations grouped by role and type, and every application on its own line.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from dandelion.dsl import ast
from dandelion.ir.nodes import (
    Application,
    Argument,
    Composition,
    FunctionKind,
    FunctionSpec,
    Module,
    ShardingMode,
)
from dandelion.ir.types import DataType, ElementType

_DD_MODES = {ShardingMode.EACH: "each", ShardingMode.KEYED: "each key",
             ShardingMode.ANY_EACH: "any", ShardingMode.ANY_KEYED: "any key"}
_DCL_MODES = {ShardingMode.ALL: "all", ShardingMode.EACH: "each",
              ShardingMode.KEYED: "keyed", ShardingMode.ANY_EACH: "anyEach",
              ShardingMode.ANY_KEYED: "anyKeyed"}
INDENT = "    "
#: Longer loop headers put their ``by`` clause on a line of its own.
MAX_LINE = 88
LoopNames = Mapping[tuple[str, int, int], Mapping[str, str]]


def type_text(t: DataType) -> str:
    """``item``/``set``, with ``[element]`` unless the element is ``any``."""
    shape = "set" if t.is_set else "item"
    return shape if t.element is ElementType.ANY else f"{shape}[{t.element}]"


def _binding(b: ast.Binding) -> str:
    where = f'"{b.module}"' if b.quoted else b.module
    names = ", ".join(n.name if n.name == n.alias else f"{n.name} as {n.alias}"
                      for n in b.names)
    return f"from {b.kind} {where} import {names}"


def _dd_function(spec: FunctionSpec) -> str:
    params = ", ".join(f"{type_text(p.type)} {p.name}" for p in spec.params)
    kind = "" if spec.cacheable else "uncacheable "
    if spec.kind is FunctionKind.IO:
        kind = "cacheable io " if spec.cacheable else "io "
    text = f"{kind}function {spec.name}({params})"
    if len(spec.results) == 1 and spec.results[0].name == "result":
        return f"{text} -> {type_text(spec.results[0].type)}"
    results = ", ".join(f"{type_text(r.type)} {r.name}" for r in spec.results)
    return f"{text} -> ({results})"


def _group(decls: Iterable[tuple[str, str, str]]) -> list[str]:
    """``role type a, b`` lines: consecutive declarations of one role and type merge."""
    lines: list[tuple[str, str, list[str]]] = []
    for role, typ, name in decls:
        if lines and lines[-1][0] == role and lines[-1][1] == typ:
            lines[-1][2].append(name)
        else:
            lines.append((role, typ, [name]))
    return [f"{role} {typ} {', '.join(names)}" for role, typ, names in lines]


def _dd_application(app: Application, spec: FunctionSpec | None, taken: set[str],
                    names: Mapping[str, str]) -> str:
    loops: list[str] = []
    var_of: dict[str, str] = {}
    used: set[str] = set()
    for arg in app.arguments:
        if arg.mode is ShardingMode.ALL:
            continue
        base = names.get(arg.param, arg.param)
        var, n = base, 1
        while var in taken or var in used or var in ("_", "key"):
            var, n = f"{base}_{n}", n + 1
        used.add(var)
        var_of[arg.param] = var
        loops.append(f"{_DD_MODES[arg.mode]} {var} in {arg.source}")

    def value(a: Argument) -> str:
        name = var_of.get(a.param, a.source)
        return f"optional {name}" if a.optional else name

    params = [p.name for p in spec.params] if spec is not None else []
    positional = spec is not None and [a.param for a in app.arguments] == params
    if positional:
        args = ", ".join(value(a) for a in app.arguments)
    else:
        args = ", ".join(f"{a.param} = {value(a)}" for a in app.arguments)
    if spec is not None:
        by_result = {o.result: o.target for o in app.outputs}
        targets = [by_result.get(r.name, "_") for r in spec.results]
    else:
        targets = [o.target for o in app.outputs]
    call = f"{app.function}({args})"
    head = f"{', '.join(targets)} = " if app.outputs else ""
    if not loops:
        return head + call
    join = ""
    if app.join is not None:
        words = [var_of.get(app.join.params[0], app.join.params[0])]
        for kind, param in zip(app.join.kinds, app.join.params[1:]):
            words += [str(kind), var_of.get(param, param)]
        join = " by " + " ".join(words)
    first = f"{head}for {', '.join(loops)}"
    if join and len(first) + len(join) > MAX_LINE:
        join = "\n" + INDENT * 2 + join.lstrip()
    return f"{first}{join} :\n{INDENT}{call}"



def _dd_composition(module: Module, comp: Composition, header: bool,
                    loop_names: LoopNames) -> list[str]:
    indent = INDENT if header else ""
    lines = [f"composition {comp.name}"] if header else []
    decls = [("input", type_text(d.type), d.name) for d in comp.inputs]
    decls += [("output", type_text(d.type), d.name) for d in comp.outputs]
    decls += [("ephemeral", type_text(d.type), d.name) for d in comp.ephemeral]
    lines += [indent + line for line in _group(decls)]
    if comp.applications:
        lines.append("")
    taken = {d.name for d in comp.declarations()}
    for app in comp.applications:
        names = loop_names.get((comp.name, app.span.line, app.span.column), {})
        text = _dd_application(app, module.callee_signature(app.function), taken, names)
        lines += [indent + line for line in text.split("\n")]
    return lines


def _dcl_names(names: Iterable[str]) -> str:
    return ", ".join(names)


def _dcl_application(app: Application) -> str:
    ins = []
    for a in app.arguments:
        opt = "optional " if a.optional else ""
        ins.append(f"{a.param} = {opt}{_DCL_MODES[a.mode]} {a.source}")
    outs = [f"{o.target} = {o.result}" for o in app.outputs]
    text = f"{app.function}({', '.join(ins)}) => ({', '.join(outs)})"
    if app.join is not None:
        by = f" by {app.join}"
        text += by if len(text) + len(by) <= MAX_LINE else f"\n{INDENT}{by.lstrip()}"
    return text + ";"


def format_module(module: Module, notation: str = "dd", *,
                  declarations: Iterable[str] | None = None,
                  headerless: str | None = None,
                  bindings: Sequence[ast.Binding] = (),
                  loop_names: LoopNames | None = None) -> str:
    """The canonical text of ``module`` in ``notation`` (``dd`` or ``dcl``).

    Args:
        module: the IR.
        notation: ``dd`` (types, loops, bindings) or ``dcl`` (untyped, the reference
            system's language; bindings and types are not expressible there).
        declarations: names of the functions to declare in ``.dd`` (default: all).
        headerless: a composition written without a ``composition`` header in ``.dd``
            (it is printed first).
        bindings: ``from … import`` lines to print first (``.dd`` only).
        loop_names: the loop variable names the source used, per application
            (``(composition, line, column)`` of the call -> parameter -> name); parameter
            names are used otherwise.

    Example:
        >>> from dandelion.dsl import format_module, parse
        >>> print(format_module(parse("input set a\\noutput set b\\nb = f(a)\\n")), end="")
        function f(set arg0) -> item
        <BLANKLINE>
        composition main
            input set a
            output set b
        <BLANKLINE>
            b = f(a)
    """
    if notation == "dcl":
        lines = [f"function {f.name} ({_dcl_names(p.name for p in f.params)}) => "
                 f"({_dcl_names(r.name for r in f.results)});" for f in module.functions]
        for comp in module.compositions:
            lines.append(f"composition {comp.name} ({_dcl_names(d.name for d in comp.inputs)})"
                         f" => ({_dcl_names(d.name for d in comp.outputs)}) {{")
            lines += [INDENT + line for app in comp.applications
                      for line in _dcl_application(app).split("\n")]
            lines.append("}")
        return "\n".join(lines) + "\n" if lines else ""
    if notation != "dd":
        raise ValueError(f"unknown notation {notation!r} (expected 'dd' or 'dcl')")
    chunks: list[list[str]] = []
    if bindings:
        chunks.append([_binding(b) for b in bindings])
    wanted = None if declarations is None else set(declarations)
    funcs = [_dd_function(f) for f in module.functions if wanted is None or f.name in wanted]
    if funcs:
        chunks.append(funcs)
    comps = list(module.compositions)
    comps.sort(key=lambda c: c.name != headerless)
    for comp in comps:
        chunks.append(_dd_composition(module, comp, comp.name != headerless,
                                      loop_names or {}))
    return "\n\n".join("\n".join(chunk) for chunk in chunks) + "\n" if chunks else ""
