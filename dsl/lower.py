"""Syntax tree -> IR: resolve names against signatures, infer untyped declarations.

Lowering produces exactly the structure the decorator front end records (see
:mod:`dandelion.authoring.tracing`): applications in source order with one argument per
given parameter (in parameter order) and one output per assigned result, ephemeral sets in
the order they are produced, and untyped declarations typed from the functions that produce
or consume them.  Problems go to a :class:`~dandelion.dsl.diagnostics.Report`; the IR's own
checks (:func:`dandelion.ir.verify`) run afterwards on the result.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import attrs

from dandelion.dsl import ast
from dandelion.dsl.bindings import Bound, native_spec
from dandelion.dsl.diagnostics import Report, did_you_mean
from dandelion.ir.nodes import (
    Application,
    Argument,
    Composition,
    FunctionKind,
    FunctionSpec,
    Join,
    JoinKind,
    Module,
    Output,
    Param,
    SetDecl,
    ShardingMode,
    Span,
)
from dandelion.ir.types import DataType, ElementType


def data_type(ref: ast.TypeRef | None) -> DataType:
    """The IR type of a written type; missing parts default to ``set`` of ``any``."""
    if ref is None:
        return DataType()
    element = ElementType(ref.element) if ref.element in ElementType.__members__.values() \
        else ElementType.ANY
    return DataType(element, ref.shape != "item")


def declared_spec(decl: ast.FunctionDecl) -> FunctionSpec:
    """The :class:`FunctionSpec` a function declaration states (no implementation)."""
    return FunctionSpec(
        decl.name,
        [Param(p.name, data_type(p.type), p.span) for p in decl.params],
        [Param(r.name, data_type(r.type), r.span) for r in decl.results],
        kind=FunctionKind.IO if decl.io else FunctionKind.COMPUTE,
        cacheable=decl.cacheable, span=decl.span)


@attrs.define
class _Pending:
    """An application resolved against its callee, before set types are known."""

    app: Application
    spec: FunctionSpec | None


class Lowering:
    """Lowers one :class:`~dandelion.dsl.ast.FileAst`.

    Args:
        tree: the syntax tree.
        report: where problems go.
        bound: name -> :class:`Bound` for every name the caller or the file binds.
        strict: every called function must have an implementation (``load``); otherwise an
            undeclared function gets a declaration inferred from its call (``parse``).
        default_name: name of the ``.dd`` composition written without a header.
        allow_unbound: with ``strict``, a declared function without an implementation is a
            warning, not an error (``dandelion check``: functions may be registered apart
            from the compositions that call them).
    """

    def __init__(self, tree: ast.FileAst, report: Report, bound: Mapping[str, Bound],
                 *, strict: bool, default_name: str, allow_unbound: bool = False) -> None:
        self.tree = tree
        self.report = report
        self.bound = bound
        self.strict = strict
        self.allow_unbound = allow_unbound
        self.default_name = default_name
        self.functions: dict[str, FunctionSpec] = {}
        self.implicit: dict[str, FunctionSpec] = {}
        self.comp_asts = {self._name(c): c for c in tree.compositions}
        self.lowered: dict[str, Composition] = {}
        self.foreign: list[Module] = []
        self.artifacts: dict[str, Any] = {}
        #: (composition, line, column of the call) -> parameter -> loop variable name.
        self.loop_names: dict[tuple[str, int, int], dict[str, str]] = {}
        self._active: set[str] = set()

    def _name(self, comp: ast.CompositionAst) -> str:
        return comp.name or self.default_name

    # -- functions -------------------------------------------------------------------
    def declare_functions(self) -> None:
        for decl in self.tree.functions:
            spec = declared_spec(decl)
            bound = self.bound.get(decl.name)
            if bound is not None and bound.spec is None and bound.natives:
                for artifact in bound.natives:
                    spec = native_spec(spec, artifact, artifact.entry)
            elif bound is not None and bound.spec is not None:
                self.check_declaration(decl, spec, bound.spec)
                spec = attrs.evolve(bound.spec, span=decl.span)
            elif bound is not None and bound.module is not None:
                self.report.error("bad-binding", f"'{decl.name}' is declared as a function "
                                  "but bound to a composition", decl.span,
                                  "remove the declaration")
            elif self.strict and self.allow_unbound:
                self.report.warning("unbound-function", f"function '{decl.name}' is declared "
                                    "but not bound to an implementation", decl.span,
                                    f"to run the composition, {self.how_to_bind(decl.name)}, "
                                    "or register the function on the worker")
            elif self.strict:
                self.report.error("unbound-function", f"function '{decl.name}' has no "
                                  "implementation", decl.span,
                                  did_you_mean(decl.name, self.bound) or
                                  f"bind it: from python \"module.py\" import {decl.name}")
            if decl.name in self.functions:
                first = self.functions[decl.name].span
                self.report.error("duplicate-name", f"function '{decl.name}' is declared twice",
                                  decl.span, f"first declared at {first}")
                continue
            self.functions[decl.name] = spec
        for name, bound in self.bound.items():
            if bound.spec is None and bound.natives and name not in self.functions:
                self.report.error("unbound-function", f"{bound.natives[0].kind} function '{name}' "
                                  "needs a declaration of its signature", Span(),
                                  f"add: function {name}(…) -> …")

    def how_to_bind(self, name: str) -> str:
        """How a file of this notation binds function ``name`` to an implementation."""
        if self.tree.notation == "dcl":  # no binding syntax: the companion Python file
            stem = os.path.splitext(os.path.basename(self.report.source.filename))[0]
            return f"define @dd.compute {name} in {stem}.py next to this file"
        return f"bind it: from python \"module.py\" import {name}"

    def check_declaration(self, decl: ast.FunctionDecl, declared: FunctionSpec,
                          actual: FunctionSpec) -> None:
        by_name = self.tree.notation == "dcl"
        for what, mine, theirs in (("parameter", declared.params, actual.params),
                                   ("result", declared.results, actual.results)):
            names = [p.name for p in theirs]
            if (sorted(p.name for p in mine) != sorted(names) if by_name
                    else [p.name for p in mine] != names):
                self.report.error("signature-mismatch", f"declaration of '{decl.name}' does "
                                  f"not match its implementation: {what}s "
                                  f"({', '.join(p.name for p in mine)}) vs "
                                  f"({', '.join(names)})", decl.span)
                continue
            written = decl.params if what == "parameter" else decl.results
            for p, d in zip(mine, written):
                other = next(t for t in theirs if t.name == p.name)
                if d.type is None:
                    continue
                if (d.type.element is not None
                        and not p.type.element.compatible(other.type.element)) or \
                        (d.type.shape is not None and p.type.is_set != other.type.is_set):
                    self.report.error("signature-mismatch", f"{what} '{p.name}' of "
                                      f"'{decl.name}' is declared {p.type} but its "
                                      f"implementation has {other.type}", p.span)

    def callee(self, name: str, span: Span, arity: int, keywords: list[str],
               results: int | list[str]) -> FunctionSpec | None:
        """The signature of the function or composition ``name`` as seen by a caller."""
        if name in self.comp_asts:
            comp = self.lower_composition(name)
            return comp.signature() if comp is not None else None
        spec = self.functions.get(name) or self.implicit.get(name)
        bound = self.bound.get(name)
        if spec is None and bound is not None:
            if bound.module is not None:
                self.foreign.append(bound.module)
                self.artifacts.update(bound.artifacts)
                comp = bound.module.composition(name) or bound.module.compositions[0]
                renamed: FunctionSpec = attrs.evolve(comp.signature(), name=name)
                return renamed
            if bound.spec is not None:
                spec = attrs.evolve(bound.spec, span=Span())
                self.functions[name] = spec
        if spec is not None:
            if bound is not None:
                self.artifacts.update(bound.artifacts)
            return spec
        if self.strict or self.tree.notation == "dcl":
            known = [*self.functions, *self.comp_asts, *self.bound]
            self.report.error("unknown-function", f"function '{name}' is not declared or "
                              "bound", span, did_you_mean(name, known) or
                              f"bind it: from python \"module.py\" import {name}")
            # Go on with an inferred signature, so that the sets it produces do not
            # cause more errors.
        params = [Param(k) for k in keywords] if keywords else \
            [Param(f"arg{i}") for i in range(arity)]
        if isinstance(results, list):
            outs = list(dict.fromkeys(results))
        else:
            outs = ["result"] if results == 1 else [f"result{i}" for i in range(results)]
        # The loosest signature: parameters take sets, results are single items (which
        # fit a set as well as an item).
        spec = FunctionSpec(name, params, [Param(r, DataType(is_set=False)) for r in outs])
        self.implicit[name] = spec
        return spec

    # -- compositions ---------------------------------------------------------------
    def lower_composition(self, name: str) -> Composition | None:
        if name in self.lowered:
            return self.lowered[name]
        if name in self._active:  # a recursive call: verify reports the cycle
            comp_ast = self.comp_asts[name]
            return Composition(name, [SetDecl(d.name, data_type(d.type)) for d in
                                      comp_ast.decls if d.role == "input"],
                               [SetDecl(d.name, data_type(d.type)) for d in
                                comp_ast.decls if d.role == "output"])
        self._active.add(name)
        comp_ast = self.comp_asts[name]
        pending = [self.lower_application(comp_ast, app) for app in comp_ast.applications]
        comp = self.assemble(name, comp_ast, [p for p in pending if p is not None])
        self._active.discard(name)
        self.lowered[name] = comp
        return comp

    def lower_application(self, comp: ast.CompositionAst,
                          app: ast.Application | ast.DclApplication) -> _Pending | None:
        if isinstance(app, ast.DclApplication):
            return self.lower_dcl(app)
        return self.lower_dd(app, self._name(comp))

    def lower_dcl(self, app: ast.DclApplication) -> _Pending | None:
        spec = self.callee(app.function, app.function_span, len(app.args),
                           list(dict.fromkeys(a.param for a in app.args)),
                           [o.result for o in app.outputs])
        args = [Argument(a.param, a.source, a.mode, a.optional, a.source_span)
                for a in app.args]
        if spec is not None:
            order = {p.name: i for i, p in enumerate(spec.params)}
            args.sort(key=lambda a: order.get(a.param, len(order)))
            results = {r.name: i for i, r in enumerate(spec.results)}
            outs = sorted(app.outputs, key=lambda o: results.get(o.result, len(results)))
        else:
            outs = list(app.outputs)
        outputs = [Output(o.result, o.target, o.span) for o in outs]
        join = None
        if app.join is not None:
            join = self.make_join(app.join, {n: n for n in app.join.names})
        return _Pending(Application(app.function, args, outputs, join, app.function_span), spec)

    def lower_dd(self, app: ast.Application, comp: str) -> _Pending | None:
        keywords = [a.param for a in app.args if a.param is not None]
        spec = self.callee(app.function, app.function_span, len(app.args),
                           keywords if len(keywords) == len(app.args) else [],
                           len(app.targets))
        loops: dict[str, ast.Generator] = {}
        for gen in app.generators:
            if gen.var in loops:
                self.report.error("duplicate-variable", f"loop variable '{gen.var}' is bound "
                                  "twice", gen.span)
            loops[gen.var] = gen
        if spec is None:
            return None
        params = [p.name for p in spec.params]
        bound: dict[str, Argument] = {}
        var_param: dict[str, str] = {}
        ok = True
        seen_keyword = False
        for i, arg in enumerate(app.args):
            if arg.param is None:
                if seen_keyword:
                    self.report.error("syntax", "positional argument after a named one",
                                      arg.span, "name every argument after the first named one")
                    ok = False
                    continue
                if i >= len(params):
                    self.report.error("arity", f"'{app.function}' takes {len(params)} "
                                      f"argument(s) but {len(app.args)} were given", arg.span)
                    ok = False
                    break
                param = params[i]
            else:
                seen_keyword = True
                param = arg.param
                if param not in params:
                    self.report.error("unknown-parameter", f"'{app.function}' has no "
                                      f"parameter '{param}'", arg.span,
                                      did_you_mean(param, params))
                    ok = False
                    continue
            if param in bound:
                self.report.error("duplicate-argument", f"parameter '{param}' of "
                                  f"'{app.function}' is given twice", arg.span)
                ok = False
                continue
            gen = loops.get(arg.name)
            if gen is not None:
                if arg.name in var_param:
                    self.report.error("duplicate-variable", f"loop variable '{arg.name}' "
                                      "is passed twice", arg.span,
                                      "pass the set itself for the other parameter")
                var_param[arg.name] = param
                bound[param] = Argument(param, gen.source, gen.mode, arg.optional,
                                        gen.source_span)
            else:
                bound[param] = Argument(param, arg.name, ShardingMode.ALL, arg.optional,
                                        arg.span)
        if var_param:  # remembered so that the formatter can keep the user's names
            key = (comp, app.function_span.line, app.function_span.column)
            self.loop_names[key] = {p: v for v, p in var_param.items()}
        if ok and not keywords:  # (a parameter with a default may be left out, as in Python)
            missing = [p.name for p in spec.params if p.name not in bound and not p.defaulted]
            if missing:
                self.report.error("arity", f"'{app.function}' is missing argument(s): "
                                  f"{', '.join(missing)}", app.function_span,
                                  "name the arguments (param = set) to leave some out; an "
                                  "omitted parameter receives an empty set")
        for gen in app.generators:
            if gen.var not in var_param:
                self.report.error("unused-variable", f"loop variable '{gen.var}' is not "
                                  f"passed to '{app.function}'", gen.span)
        results = [r.name for r in spec.results]
        if app.targets and len(app.targets) != len(results):
            self.report.error("arity", f"'{app.function}' has {len(results)} result(s) "
                              f"({', '.join(results)}) but {len(app.targets)} target(s) are "
                              "assigned", app.targets[0].span,
                              "assign one set per result; '_' drops a result")
        outputs = [Output(r, t.name, t.span) for r, t in zip(results, app.targets)
                   if not t.dropped]
        join = None
        if app.join is not None:
            join = self.make_join(app.join, var_param, loops)
        args = [bound[p] for p in params if p in bound]
        return _Pending(Application(app.function, args, outputs, join, app.function_span), spec)

    def make_join(self, clause: ast.JoinClause, names: Mapping[str, str],
                  loops: Mapping[str, ast.Generator] | None = None) -> Join:
        params = []
        for name in clause.names:
            if name in names:
                params.append(names[name])
            else:
                self.report.error("bad-join", f"'{name}' in the join is not a loop variable",
                                  clause.span, did_you_mean(name, loops or names))
                params.append(name)
        kinds = [JoinKind(k) if k in JoinKind.__members__.values() else JoinKind.INNER
                 for k in clause.kinds]
        return Join(params, kinds, clause.span)

    def assemble(self, name: str, comp_ast: ast.CompositionAst,
                 pending: list[_Pending]) -> Composition:
        decls: dict[str, ast.Decl] = {}
        for d in comp_ast.decls:
            decls.setdefault(d.name, d)
        produced: dict[str, tuple[Param, bool]] = {}
        consumed: dict[str, list[tuple[Param, ShardingMode]]] = {}
        order: dict[str, None] = {}
        by_name: dict[int, tuple[dict[str, Param], dict[str, Param]]] = {}
        for p in pending:
            sharded = any(a.mode.is_sharded for a in p.app.arguments)
            if p.spec is None:
                continue
            names = by_name.get(id(p.spec))
            if names is None:  # one lookup table per signature, not a scan per argument
                names = ({q.name: q for q in p.spec.params}, {r.name: r for r in p.spec.results})
                by_name[id(p.spec)] = names
            for arg in p.app.arguments:
                param = names[0].get(arg.param)
                if param is not None:
                    consumed.setdefault(arg.source, []).append((param, arg.mode))
            for out in p.app.outputs:
                result = names[1].get(out.result)
                if result is not None and out.target not in produced:
                    produced[out.target] = (result, sharded)
                order.setdefault(out.target)
        if self.tree.notation == "dcl":  # every produced set that is not an output
            roles = {d.name: d.role for d in comp_ast.decls}
            implicit_span = {o.target: o.span for p in pending for o in p.app.outputs}
            for target in order:
                if target not in roles:
                    decls[target] = ast.Decl("ephemeral", target, ast.TypeRef(None, None),
                                             implicit_span[target])
        types = {n: self.infer(d, produced.get(n), consumed.get(n, [])) for n, d in decls.items()}
        # Declarations in source order; a repeated one stays, for verify to report.
        all_decls = list(decls.values()) + [d for d in comp_ast.decls if decls[d.name] is not d]
        rank = {n: i for i, n in enumerate(order)}

        def set_decls(role: str) -> list[SetDecl]:
            chosen = [d for d in all_decls if d.role == role]
            if role == "ephemeral":
                chosen.sort(key=lambda d: rank.get(d.name, len(rank)))
            return [SetDecl(d.name, types[d.name] if decls[d.name] is d else data_type(d.type),
                            d.span) for d in chosen]

        return Composition(name, set_decls("input"), set_decls("output"),
                           set_decls("ephemeral"), [p.app for p in pending], comp_ast.span)

    @staticmethod
    def infer(decl: ast.Decl, produced: tuple[Param, bool] | None,
              consumers: list[tuple[Param, ShardingMode]]) -> DataType:
        """The type of a declaration whose element type (or shape) is not written."""
        element = ElementType(decl.type.element) if decl.type.element is not None else None
        if element is None:
            if produced is not None:
                element = produced[0].type.element
            else:
                element = next((p.type.element for p, _ in consumers
                                if p.type.element is not ElementType.ANY), ElementType.ANY)
        if decl.type.shape is not None:
            return DataType(element, decl.type.shape == "set")
        if produced is not None:
            result, sharded = produced
            return DataType(element, result.type.is_set or sharded)
        takes_item = any(not p.type.is_set and m is ShardingMode.ALL for p, m in consumers)
        return DataType(element, not takes_item)

    def run(self) -> Module:
        """Lower everything; the module lists declared functions first, then used ones."""
        self.declare_functions()
        for name in self.comp_asts:
            self.lower_composition(name)
        functions = list(self.functions.values())
        functions += [s for n, s in self.implicit.items() if n not in self.functions]
        module = Module(functions, [self.lowered[n] for n in self.comp_asts])
        for foreign in self.foreign:
            module = module.merge(foreign)
        return module


def used_in_order(module: Module, entry: str) -> Module:
    """The part of ``module`` that ``entry`` needs, in the order the decorators record it.

    ``@dd.composition`` builds ``Module([], [comp])`` and merges each callee (its module for
    a composition, its spec for a function) in order of first call; doing the same here is
    what makes DSL and decorator IR equal.
    """
    def build(name: str, stack: tuple[str, ...]) -> Module:
        comp = module.composition(name)
        assert comp is not None
        result = Module([], [comp])
        for callee in _unique(a.function for a in comp.applications):
            if module.composition(callee) is not None and callee not in stack:
                result = result.merge(build(callee, (*stack, callee)))
            elif (spec := module.function(callee)) is not None:
                result = result.merge(Module([spec]))
        return result

    return build(entry, (entry,))


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
