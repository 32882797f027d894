"""Recording a ``@dd.composition`` body as IR.

While a composition is defined, its body runs once with :class:`SetRef` placeholders for
its inputs; every call of a compute function (or composition) is recorded as an
application instead of running.  Sets are named after the variables they are assigned to
(read from the body's source), so diagnostics and the IR speak the user's names.
"""

from __future__ import annotations

import ast
import contextvars
import inspect
import os
import sys
import textwrap
from typing import Any, Callable, Iterator

import attrs

from dandelion import constants
from dandelion.errors import CompositionTypeError, DandelionError
from dandelion.ir.nodes import (
    Application,
    Argument,
    Join,
    JoinKind,
    Output,
    Param,
    ShardingMode,
    Span,
)
from dandelion.ir.types import DataType

_current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("dd_trace",
                                                                       default=None)
_HERE = os.path.dirname(os.path.abspath(__file__))


def current() -> Trace | None:
    """The composition being defined, if any."""
    return _current.get()


class Placeholder:
    """A set of a composition while the composition is defined: something to wire, not data.

    Used as data (an attribute such as ``.upper``, an index, ``len``, arithmetic), it says
    what happened: a function meant to run on the set's items was called undecorated.
    """

    __slots__ = ()

    def _placeholder_name(self) -> str:
        raise NotImplementedError

    def _not_data(self, use: str) -> CompositionTypeError:
        return CompositionTypeError(
            f"set '{self._placeholder_name()}' is used as data ({use}) while the composition "
            "is defined", span=caller_span(),
            hint="a function that works on a set's items must be a compute function: "
                 "decorate it with @dd.compute (the body of a composition only wires sets)")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # protocol probes (copy, pickle, attrs) get the usual answer
            raise AttributeError(name)
        raise self._not_data(f"'.{name}'")

    def __getitem__(self, index: Any) -> Any:
        raise self._not_data("an index")

    def __len__(self) -> int:
        raise self._not_data("len()")


def _refuse_operator(symbol: str) -> Callable[[Placeholder, Any], Any]:
    def operator(self: Placeholder, other: Any) -> Any:
        raise self._not_data(f"the operator {symbol}")
    return operator


for _name, _symbol in (("add", "+"), ("sub", "-"), ("mul", "*"), ("truediv", "/"),
                       ("floordiv", "//"), ("mod", "%"), ("pow", "**"), ("matmul", "@"),
                       ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">=")):
    setattr(Placeholder, f"__{_name}__", _refuse_operator(_symbol))
    if _name not in ("lt", "le", "gt", "ge"):
        setattr(Placeholder, f"__r{_name}__", _refuse_operator(_symbol))


class SetRef(Placeholder):
    """A set inside a composition definition (a placeholder, not data)."""

    __slots__ = ("name", "type", "span", "named", "is_input", "value")

    def __init__(self, name: str, type: DataType, span: Span, *, named: bool = False,
                 is_input: bool = False, value: str | None = None) -> None:
        self.name = name
        self.type = type
        self.span = span
        self.named = named
        self.is_input = is_input
        #: a constant's items (:mod:`dandelion.constants`), ``None`` for any other set
        self.value = value

    def __repr__(self) -> str:
        return f"<set {self.name}: {self.type}>"

    def _placeholder_name(self) -> str:
        return self.name

    def __bool__(self) -> bool:
        raise CompositionTypeError(
            f"set '{self.name}' has no truth value while the composition is defined",
            span=self.span, hint="compositions are dataflow graphs: branch inside a compute "
            "function, not in the composition body")

    def __iter__(self) -> Iterator[Any]:
        raise CompositionTypeError(
            f"set '{self.name}' cannot be iterated while the composition is defined",
            span=self.span, hint=f"use dd.each({self.name}) to call a function once per item")


class Value:
    """A value given to :func:`dandelion.each` (and the like) in a composition's body: it
    becomes a constant set (:mod:`dandelion.constants`) once the call it is passed to says
    the parameter's type."""

    __slots__ = ("value",)
    name = "a value"

    def __init__(self, value: Any) -> None:
        self.value = value


@attrs.frozen
class Sharded(Placeholder):
    """A set together with how a function consumes it (see :func:`dandelion.each`)."""

    set: SetRef | Value
    mode: ShardingMode = ShardingMode.ALL
    optional: bool = False

    def _placeholder_name(self) -> str:
        return self.set.name


def _sharded(value: Any, mode: ShardingMode, fn: str) -> Sharded:
    if isinstance(value, Sharded):
        if value.mode is not ShardingMode.ALL:
            raise CompositionTypeError(f"dd.{fn}() of a set that is already '{value.mode}'")
        return attrs.evolve(value, mode=mode)
    if isinstance(value, SetRef):
        return Sharded(value, mode)
    if _current.get() is None:  # (a value is a constant of the composition being defined)
        raise CompositionTypeError(f"dd.{fn}() is for the body of a @dd.composition, on a set "
                                   f"of it or a list of values, not a {type(value).__name__} "
                                   "outside one", span=caller_span())
    return Sharded(Value(value), mode)  # a constant, once its parameter is known


def all_(s: Any) -> Sharded:
    """Pass the whole set to one instance (the default)."""
    return _sharded(s, ShardingMode.ALL, "all")


def each(s: Any) -> Sharded:
    """One instance per item of ``s`` (a set of the composition, or a list of values: a
    constant, :mod:`dandelion.constants`); outputs gathered in item order."""
    return _sharded(s, ShardingMode.EACH, "each")


def keyed(s: Any) -> Sharded:
    """One instance per distinct key of ``s``, with all items of that key."""
    return _sharded(s, ShardingMode.KEYED, "keyed")


def any_each(s: Any) -> Sharded:
    """The runtime chooses how many instances; each gets a contiguous group of items."""
    return _sharded(s, ShardingMode.ANY_EACH, "any_each")


def any_keyed(s: Any) -> Sharded:
    """The runtime chooses how many instances; each gets whole key groups."""
    return _sharded(s, ShardingMode.ANY_KEYED, "any_keyed")


def optional(s: Any) -> Sharded:
    """Mark an input as optional: the function runs even when the set is empty.

    An empty optional set is dropped from the sharding (and from a join): each instance gets
    an empty set for it and the other inputs alone decide the instances.
    """
    if isinstance(s, SetRef):
        s = Sharded(s)
    if not isinstance(s, Sharded):
        raise CompositionTypeError(f"dd.optional() takes a set of the composition, not "
                                   f"{type(s).__name__}", span=caller_span())
    return attrs.evolve(s, optional=True)


class Applicable:
    """What a composition's body can apply: a compute, I/O or composition function.

    Called while a composition is being defined, it records an application of itself on
    the trace; called anywhere else it does what :meth:`call_outside` says.  The one
    "am I being traced?" check of the three kinds of function.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trace = current()
        if trace is not None:
            return trace.apply(self, args, kwargs)
        return self.call_outside(args, kwargs)

    def call_outside(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What calling it outside a composition's definition does."""
        raise NotImplementedError  # pragma: no cover - each kind says


def contains_set_refs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether any argument is a composition placeholder."""
    return any(isinstance(a, (SetRef, Sharded)) for a in (*args, *kwargs.values()))


def caller_span() -> Span:
    """The file and line of the user code that called into Dandelion."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(_HERE):
            return Span(filename, frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return Span()


def caller_locals() -> dict[str, Any]:
    """Local names of the user code that called into Dandelion (for string annotations of
    functions defined inside functions)."""
    frame = sys._getframe(1)
    while frame is not None:
        if not os.path.abspath(frame.f_code.co_filename).startswith(_HERE):
            return dict(frame.f_locals)
        frame = frame.f_back  # type: ignore[assignment]
    return {}


def parse_join(text: str, span: Span) -> Join:
    """``"a left b inner c"`` as a :class:`~dandelion.ir.Join`."""
    words = text.split()
    kinds = {k.value for k in JoinKind}
    if len(words) < 3 or len(words) % 2 == 0 or any(w not in kinds for w in words[1::2]):
        raise CompositionTypeError(
            f"by={text!r} is not a join", span=span,
            hint="write parameter names separated by join kinds, e.g. by=\"users left orders\" "
                 f"(kinds: {', '.join(sorted(kinds))})")
    return Join(words[0::2], words[1::2], span=span)


def assigned_names(fn: Callable[..., Any]) -> dict[int, list[str]]:
    """Line -> target variable names of ``x = call(...)`` / ``a, b = call(...)`` in ``fn``."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        first = fn.__code__.co_firstlineno
    except (OSError, TypeError, AttributeError):
        return {}
    tree = ast.parse(source)
    names: dict[int, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            elts = target.elts if isinstance(target, ast.Tuple) else [target]
            if all(isinstance(e, ast.Name) for e in elts):
                line = first + node.lineno - 1
                names[line] = [e.id for e in elts]  # type: ignore[attr-defined]
    return names


@attrs.define
class Recorded:
    """An application while it is being recorded."""

    function: str
    arguments: list[tuple[str, Sharded, Span]]
    outputs: list[tuple[str, SetRef]]
    join: Join | None
    span: Span

    def to_ir(self) -> Application:
        return Application(
            self.function,
            [Argument(p, s.set.name, s.mode, s.optional, span) for p, s, span in self.arguments],
            [Output(r, ref.name, ref.span) for r, ref in self.outputs],
            self.join, self.span)


class Trace:
    """The state of one composition definition."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.file = getattr(getattr(fn, "__code__", None), "co_filename", "")
        self.line_names = assigned_names(fn)
        self.apps: list[Recorded] = []
        self.sets: list[SetRef] = []
        self.callees: dict[str, Any] = {}

    def __enter__(self) -> Trace:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.reset(self._token)

    def new_set(self, name: str, type: DataType, span: Span, **kw: Any) -> SetRef:
        ref = SetRef(name, type, span, **kw)
        self.sets.append(ref)
        return ref

    def apply(self, callee: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Record ``callee(*args, **kwargs)`` and return the set(s) it produces."""
        span = caller_span()
        spec = callee.spec
        name = spec.name
        known = self.callees.get(name)
        if known is not None and known is not callee:
            raise CompositionTypeError(f"two different functions are called '{name}'",
                                       span=span, hint="give one of them another name=")
        self.callees[name] = callee
        by = kwargs.pop("by", None)
        params = [p.name for p in spec.params]
        if len(args) > len(params):
            raise CompositionTypeError(f"'{name}' takes {len(params)} argument(s) but "
                                       f"{len(args)} were given", span=span)
        bound: dict[str, Any] = dict(zip(params, args))
        for key, value in kwargs.items():
            if key not in params:
                raise CompositionTypeError(f"'{name}' has no parameter '{key}'", span=span)
            if key in bound:
                raise CompositionTypeError(f"parameter '{key}' of '{name}' is given twice",
                                           span=span)
            bound[key] = value
        left_out = {p.name for p in spec.params if p.defaulted}  # (their defaults apply)
        missing = [p for p in params if p not in bound and p not in left_out]
        if missing:
            raise CompositionTypeError(f"'{name}' is missing argument(s): "
                                       f"{', '.join(missing)}", span=span)
        arguments = []
        for declared in spec.params:
            param = declared.name
            if param not in bound:
                continue
            value = bound[param]
            if isinstance(value, SetRef):
                value = Sharded(value)
            if not isinstance(value, Sharded):  # a value: a constant set of the composition
                value = Sharded(Value(value))
            if isinstance(value.set, Value):  # (the set of a sharded one holds its items)
                if value.mode.is_sharded:
                    declared = attrs.evolve(declared, type=DataType(declared.type.element, True))
                value = attrs.evolve(value, set=self.constant(name, declared, value.set.value,
                                                              span))
            arguments.append((param, value, span))
        join = None
        if by is not None:
            if not isinstance(by, str):
                raise CompositionTypeError("by= takes a string such as \"a inner b\"",
                                           span=span)
            join = parse_join(by, span)
        sharded = any(s.mode.is_sharded for _, s, _ in arguments)
        outputs = []
        for result in spec.results:
            shape = DataType(result.type.element, result.type.is_set or sharded)
            ref = self.new_set(f"{name}_{result.name}", shape, span)
            outputs.append((result.name, ref))
        self.apps.append(Recorded(name, arguments, outputs, join, span))
        refs = [ref for _, ref in outputs]
        if len(refs) == 1:
            return refs[0]
        return tuple(refs) if refs else None

    def constant(self, function: str, param: Param, value: Any, span: Span) -> SetRef:
        """A constant set holding ``value``, given as the argument of ``param`` of
        ``function`` (:mod:`dandelion.constants`).

        Raises:
            CompositionTypeError: the value holds a set of the composition, or is not one of
                the parameter's type.
        """
        where = f"argument '{param.name}' of '{function}'"
        if isinstance(value, (list, tuple, dict)) and any(
                isinstance(v, Placeholder) for v in (value.values() if isinstance(value, dict)
                                                     else value)):
            raise CompositionTypeError(f"{where} mixes sets of the composition into a "
                                       f"{type(value).__name__}", span=span,
                                       hint="pass each set as an argument of its own; a "
                                       "constant argument holds values only")
        try:
            text = constants.write(value, param.type, where)
        except DandelionError as e:
            raise CompositionTypeError(e.message, span=span, hint=e.hint) from None
        return self.new_set(f"{function}_{param.name}", param.type, span, value=text)

    def name_sets(self) -> None:
        """Give produced sets the names of the variables they were assigned to."""
        last_on_line: dict[int, Recorded] = {}
        for app in self.apps:
            if app.span.file == self.file:
                last_on_line[app.span.line] = app
        taken = {s.name for s in self.sets if s.is_input}
        for line, app in last_on_line.items():
            targets = self.line_names.get(line)
            if targets and len(targets) == len(app.outputs):
                for (_, ref), target in zip(app.outputs, targets):
                    ref.name, ref.named = target, True
        for ref in self.sets:
            if ref.is_input:
                continue
            base, n = ref.name, 2
            while ref.name in taken:
                ref.name = f"{base}_{n}"
                n += 1
            taken.add(ref.name)
