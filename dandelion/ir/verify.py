"""Static checks of a :class:`~dandelion.ir.Module`.

:func:`verify` returns *every* problem it finds as a :class:`Diagnostic` with its source
location; :func:`check` raises one :class:`~dandelion.errors.CompositionError` carrying them
all (a :class:`~dandelion.errors.CompositionTypeError` when the first is a type error).
"""

from __future__ import annotations

import difflib
import enum
from typing import Iterable

import attrs

from dandelion.errors import CompositionError, CompositionTypeError
from dandelion.ir.nodes import (
    NOWHERE,
    Application,
    Composition,
    FunctionSpec,
    Module,
    ShardingMode,
    Span,
)
from dandelion.ir.types import DataType

#: Keyword arguments of :func:`dandelion.run` that no composition input may be called.
RESERVED_INPUT_NAMES = frozenset({"backend", "engine"})


class Severity(str, enum.Enum):
    """Errors stop a composition from running; warnings do not."""

    ERROR = "error"
    WARNING = "warning"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Diagnostic:
    """One problem found by :func:`verify`.

    Attributes:
        severity: error or warning.
        code: a short stable identifier (``undefined-set``, ``type-mismatch`` …).
        message: one line saying what is wrong.
        span: where.
        hint: what to do, or ``""``.
    """

    severity: Severity
    code: str
    message: str
    span: Span = NOWHERE
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.span}: {self.severity}: {self.message}"
        return text + (f" ({self.hint})" if self.hint else "")

    @property
    def is_error(self) -> bool:
        """Whether this diagnostic prevents running."""
        return self.severity is Severity.ERROR


TYPE_CODES = frozenset({"type-mismatch", "shape-mismatch"})


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = 0.5) -> str:
    """A ``did you mean 'x'?`` hint for a misspelled ``name``, or ``""``."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'?" if close else ""


class _Checker:
    def __init__(self, module: Module) -> None:
        self.module = module
        self.found: list[Diagnostic] = []

    def error(self, code: str, message: str, span: Span, hint: str = "") -> None:
        self.found.append(Diagnostic(Severity.ERROR, code, message, span, hint))

    def warning(self, code: str, message: str, span: Span, hint: str = "") -> None:
        self.found.append(Diagnostic(Severity.WARNING, code, message, span, hint))

    def run(self) -> list[Diagnostic]:
        self.check_names()
        for comp in self.module.compositions:
            self.check_composition(comp)
        self.check_composition_calls()
        return self.found

    def check_names(self) -> None:
        seen: dict[str, Span] = {}
        declared: tuple[FunctionSpec | Composition, ...] = (
            *self.module.functions, *self.module.compositions)
        for item in declared:
            if item.name in seen:
                self.error("duplicate-name", f"'{item.name}' is declared twice", item.span,
                           f"first declared at {seen[item.name]}")
            seen.setdefault(item.name, item.span)

    def check_composition(self, comp: Composition) -> None:
        declared: dict[str, DataType] = {}
        for decl in comp.declarations():
            if decl.name in declared:
                self.error("duplicate-set", f"set '{decl.name}' is declared twice in "
                           f"composition '{comp.name}'", decl.span)
            declared[decl.name] = decl.type
        for decl in comp.inputs:
            if decl.name in RESERVED_INPUT_NAMES:
                self.error("reserved-name", f"input '{decl.name}' of composition "
                           f"'{comp.name}' uses a reserved name", decl.span,
                           "rename it: 'backend' and 'engine' are keywords of dandelion.run")
        producers: dict[str, Application] = {}
        consumed: set[str] = set()
        for app in comp.applications:
            self.check_application(comp, app, declared, producers, consumed)
        for decl in comp.outputs:
            if decl.name not in producers and decl.name not in {d.name for d in comp.inputs}:
                self.error("unproduced-output", f"output '{decl.name}' of composition "
                           f"'{comp.name}' is never produced", decl.span,
                           "assign it from a function call")
        for decl in comp.declarations():
            if decl.value is None:
                continue
            from dandelion import constants  # (its codec imports the IR's types)

            why = constants.check(decl.value, f"set '{decl.name}'")
            if why is not None:
                self.error("bad-constant", why, decl.span)
            if decl.name in producers:
                self.error("produced-constant", f"set '{decl.name}' holds items of its own "
                           f"(a constant, or an input's default), but '"
                           f"{producers[decl.name].function}' produces it",
                           producers[decl.name].span)
            elif decl in comp.outputs:
                self.error("constant-output", f"output '{decl.name}' of composition "
                           f"'{comp.name}' holds items of its own", decl.span,
                           "a constant is an ephemeral set, a default is an input's")
        for decl in comp.ephemeral:
            if decl.value is not None:  # a constant: nothing produces it
                if decl.name not in consumed:
                    self.warning("unused-set", f"constant set '{decl.name}' is never used",
                                 decl.span)
            elif decl.name not in producers:
                self.error("unproduced-set", f"set '{decl.name}' is never produced", decl.span)
            elif decl.name not in consumed:
                self.warning("unused-set", f"set '{decl.name}' is produced but never used",
                             decl.span, "remove it or make it an output")
        for decl in comp.inputs:
            if decl.name not in consumed and decl.name not in {d.name for d in comp.outputs}:
                self.warning("unused-input", f"input '{decl.name}' of composition "
                             f"'{comp.name}' is never used", decl.span)
        self.check_cycles(comp, producers)

    def check_application(self, comp: Composition, app: Application,
                          declared: dict[str, DataType], producers: dict[str, Application],
                          consumed: set[str]) -> None:
        spec = self.module.callee_signature(app.function)
        if spec is None:
            names = [f.name for f in self.module.functions]
            names += [c.name for c in self.module.compositions]
            self.error("unknown-function", f"function '{app.function}' is not declared",
                       app.span, did_you_mean(app.function, names))
        sharded = False
        seen_params: set[str] = set()
        for arg in app.arguments:
            if arg.param in seen_params:
                self.error("duplicate-argument", f"parameter '{arg.param}' of "
                           f"'{app.function}' is given twice", arg.span)
            seen_params.add(arg.param)
            sharded = sharded or arg.mode.is_sharded
            consumed.add(arg.source)
            source_type = declared.get(arg.source)
            if source_type is None:
                self.error("undefined-set", f"set '{arg.source}' is not declared", arg.span,
                           did_you_mean(arg.source, declared))
            if spec is None:
                continue
            param = spec.param(arg.param)
            if param is None:
                self.error("unknown-parameter", f"'{app.function}' has no parameter "
                           f"'{arg.param}'", arg.span,
                           did_you_mean(arg.param, [p.name for p in spec.params]))
                continue
            if source_type is not None:
                self.check_edge(app, arg.param, arg.source, arg.mode, source_type,
                                param.type, arg.span)
        for out in app.outputs:
            target_type = declared.get(out.target)
            if target_type is None:
                self.error("undefined-set", f"set '{out.target}' is not declared", out.span,
                           did_you_mean(out.target, declared))
            elif out.target in {d.name for d in comp.inputs}:
                self.error("assign-input", f"input '{out.target}' cannot be assigned",
                           out.span, "inputs come with the request; produce a new set")
            if out.target in producers:
                self.error("produced-twice", f"set '{out.target}' is produced twice",
                           out.span, f"first produced by '{producers[out.target].function}' "
                           f"at {producers[out.target].span}")
            else:
                producers[out.target] = app
            if spec is None:
                continue
            result = spec.result(out.result)
            if result is None:
                self.error("unknown-result", f"'{app.function}' has no result '{out.result}'",
                           out.span, did_you_mean(out.result, [r.name for r in spec.results]))
            elif target_type is not None:
                self.check_result(app, out.result, out.target, result.type, target_type,
                                  sharded, out.span)
        if app.join is not None:
            self.check_join(app)

    def check_edge(self, app: Application, param: str, source: str, mode: ShardingMode,
                   source_type: DataType, param_type: DataType, span: Span) -> None:
        if not source_type.element.compatible(param_type.element):
            self.error("type-mismatch", f"'{source}' holds {source_type.element} but parameter "
                       f"'{param}' of '{app.function}' expects {param_type.element}", span)
        if param_type.is_set or mode is ShardingMode.EACH:
            return
        if mode is ShardingMode.ALL and source_type.is_set:
            self.error("shape-mismatch", f"parameter '{param}' of '{app.function}' takes one "
                       f"item but '{source}' is a whole set", span,
                       f"shard it with 'each' to call '{app.function}' once per item")
        elif mode in (ShardingMode.KEYED, ShardingMode.ANY_EACH, ShardingMode.ANY_KEYED):
            self.error("shape-mismatch", f"parameter '{param}' of '{app.function}' takes one "
                       f"item but '{mode}' gives it a group of items", span,
                       "declare the parameter as a set")

    def check_result(self, app: Application, result: str, target: str, result_type: DataType,
                     target_type: DataType, sharded: bool, span: Span) -> None:
        if not result_type.element.compatible(target_type.element):
            self.error("type-mismatch", f"result '{result}' of '{app.function}' is "
                       f"{result_type.element} but '{target}' holds {target_type.element}", span)
        if not target_type.is_set and (result_type.is_set or sharded):
            why = "a set" if result_type.is_set else "one item per instance"
            self.error("shape-mismatch", f"'{target}' is declared as one item but "
                       f"'{app.function}' produces {why}", span, f"declare '{target}' as a set")

    def check_join(self, app: Application) -> None:
        join = app.join
        assert join is not None
        if len(join.kinds) != len(join.params) - 1 or len(join.params) < 2:
            self.error("bad-join", "a join names two or more parameters separated by join "
                       "kinds", join.span, "write e.g. 'by a inner b'")
        seen: set[str] = set()
        for param in join.params:
            arg = app.argument(param)
            if param in seen:
                self.error("bad-join", f"parameter '{param}' appears twice in the join",
                           join.span)
            seen.add(param)
            if arg is None:
                self.error("bad-join", f"join names '{param}', which is not an argument of "
                           f"'{app.function}'", join.span,
                           did_you_mean(param, [a.param for a in app.arguments]))
            elif not arg.mode.is_keyed:
                self.error("join-not-keyed", f"join over '{param}', which is not a keyed "
                           f"input (its mode is '{arg.mode}')", join.span,
                           f"shard '{param}' with 'keyed'")

    def check_cycles(self, comp: Composition, producers: dict[str, Application]) -> None:
        # Depth-first search over set -> producing application -> its input sets.
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                loop = path[path.index(name):] + [name]
                app = producers[name]
                self.error("cycle", "sets depend on each other in a cycle: "
                           + " -> ".join(loop), app.span,
                           "a composition is a DAG; break the cycle")
                return
            state[name] = 1
            producer = producers.get(name)
            if producer is not None:
                for arg in producer.arguments:
                    visit(arg.source, path + [name])
            state[name] = 2

        for name in producers:
            visit(name, [])

    def check_composition_calls(self) -> None:
        calls = {c.name: {a.function for a in c.applications
                          if self.module.composition(a.function) is not None}
                 for c in self.module.compositions}
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                comp = self.module.composition(name)
                self.error("recursive-composition", "compositions call each other in a cycle: "
                           + " -> ".join(path[path.index(name):] + [name]),
                           comp.span if comp else NOWHERE)
                return
            state[name] = 1
            for callee in sorted(calls.get(name, ())):
                visit(callee, path + [name])
            state[name] = 2

        for name in calls:
            visit(name, [])


def verify(module: Module) -> list[Diagnostic]:
    """Every problem in ``module``: errors first, each with its source location.

    >>> from dandelion.ir import Module, Composition, Application, Argument, SetDecl
    >>> comp = Composition("c", inputs=[SetDecl("x")], outputs=[SetDecl("y")],
    ...                    applications=[Application("nope", [Argument("a", "x")])])
    >>> [d.code for d in verify(Module([], [comp]))]
    ['unknown-function', 'unproduced-output']
    """
    found = _Checker(module).run()
    return sorted(found, key=lambda d: (not d.is_error,))


def check(module: Module) -> list[Diagnostic]:
    """Raise if ``module`` has errors; return its warnings otherwise.

    Raises:
        CompositionTypeError: when the first error is a type or shape mismatch.
        CompositionError: for any other error; ``.diagnostics`` lists all of them.
    """
    found = verify(module)
    errors = [d for d in found if d.is_error]
    if not errors:
        return found
    first = errors[0]
    cls = CompositionTypeError if first.code in TYPE_CODES else CompositionError
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    detail = "\n".join(f"  {d}" for d in errors)
    raise cls(f"{first.message}{more}\n{detail}" if more else first.message,
              span=first.span, hint=first.hint or None, diagnostics=found)
