"""The nodes of the typed IR: plain, frozen data.

A :class:`Module` holds :class:`FunctionSpec` declarations and :class:`Composition` s.  A
composition declares its direct inputs and outputs and its ephemeral sets, and lists
:class:`Application` s: one call of a function (or of another composition) that binds sets to
the function's parameters (each :class:`Argument` with a :class:`ShardingMode`, maybe
``optional``) and the function's results to sets (:class:`Output`).

Nothing here is callable code: implementations are referenced by content digest.  Source
positions (:class:`Span`) are carried for error messages but take no part in equality or
hashing, so the decorator and DSL front ends produce *equal* IR for the same program.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import attrs

from dandelion.ir.types import DataType, NamedEnum


class ShardingMode(NamedEnum):
    """How a function instance consumes one input set (see :doc:`/concepts`)."""

    ALL = "all"
    EACH = "each"
    KEYED = "keyed"
    ANY_EACH = "any_each"
    ANY_KEYED = "any_keyed"

    @property
    def is_sharded(self) -> bool:
        """Whether this mode can split the set over several instances."""
        return self is not ShardingMode.ALL

    @property
    def is_keyed(self) -> bool:
        """Whether instances are formed from key groups."""
        return self in (ShardingMode.KEYED, ShardingMode.ANY_KEYED)


class JoinKind(NamedEnum):
    """How two keyed inputs are matched up."""

    INNER = "inner"
    LEFT = "left"
    RIGHT = "right"
    FULL = "full"
    CROSS = "cross"


class FunctionKind(NamedEnum):
    """Compute functions are pure user code; I/O functions are trusted platform code."""

    COMPUTE = "compute"
    IO = "io"


@attrs.frozen
class Span:
    """A source position: file, 1-based line and column, and where it ends."""

    file: str = ""
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file or "<unknown>"
        if not self.column:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


NOWHERE = Span()


def _span_field() -> Span:
    return attrs.field(default=NOWHERE, eq=False, hash=False, repr=False)


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _join_kinds(kinds: Iterable[JoinKind | str]) -> tuple[JoinKind, ...]:
    return tuple(JoinKind(k) for k in kinds)


@attrs.frozen
class Param:
    """A named, typed parameter or result of a function.

    ``defaulted``: the function has a default value for this parameter (Python's
    ``factor=2.0``), so an application may leave it unbound, and an instance whose set for
    it is empty calls the function without it: the default applies.  It enters the IR's
    JSON only when true, so a function without defaults keeps its content hash.
    """

    name: str
    type: DataType = attrs.field(factory=DataType)
    span: Span = _span_field()
    defaulted: bool = attrs.field(default=False, repr=False,
                                  metadata={"omitted_when_default": True})

    def __repr__(self) -> str:  # (as attrs writes it; ``defaulted`` only where true)
        tail = ", defaulted=True" if self.defaulted else ""
        return f"Param(name={self.name!r}, type={self.type!r}{tail})"


@attrs.frozen
class Implementation:
    """One way to run a function: a code artifact referenced by content digest.

    Attributes:
        kind: ``python`` (a Python callable), ``native`` (an ELF), ``wasm`` or ``builtin``
            (a platform I/O function).
        digest: ``sha256:…`` of the artifact's content; the key into the artifact store.
        entry: a human-readable locator, e.g. ``module:qualname`` or a file name.
    """

    kind: str
    digest: str = ""
    entry: str = ""


@attrs.frozen
class FunctionSpec:
    """The declaration of a function: typed parameters and results, implementations."""

    name: str
    params: tuple[Param, ...] = attrs.field(converter=_tuple, default=())
    results: tuple[Param, ...] = attrs.field(converter=_tuple, default=())
    kind: FunctionKind = attrs.field(converter=FunctionKind, default=FunctionKind.COMPUTE)
    implementations: tuple[Implementation, ...] = attrs.field(converter=_tuple, default=())
    cacheable: bool = True
    #: whether it may share a sandbox invocation with the functions it is chained to
    #: (:mod:`dandelion.planner.fuse`)
    fusable: bool = True
    span: Span = _span_field()

    def param(self, name: str) -> Param | None:
        """The parameter called ``name``, or ``None``."""
        return next((p for p in self.params if p.name == name), None)

    def result(self, name: str) -> Param | None:
        """The result called ``name``, or ``None``."""
        return next((r for r in self.results if r.name == name), None)


@attrs.frozen
class Argument:
    """Binds the set ``source`` to the parameter ``param`` of an application."""

    param: str
    source: str
    mode: ShardingMode = attrs.field(converter=ShardingMode, default=ShardingMode.ALL)
    optional: bool = False
    span: Span = _span_field()


@attrs.frozen
class Output:
    """Binds the function result ``result`` to the set ``target``."""

    result: str
    target: str
    span: Span = _span_field()


@attrs.frozen
class Join:
    """``by p0 k0 p1 k1 p2 …``: keyed parameters joined left to right."""

    params: tuple[str, ...] = attrs.field(converter=_tuple)
    kinds: tuple[JoinKind, ...] = attrs.field(converter=_join_kinds)
    span: Span = _span_field()

    def __str__(self) -> str:
        words = [self.params[0]]
        for kind, param in zip(self.kinds, self.params[1:]):
            words += [str(kind), param]
        return " ".join(words)


@attrs.frozen
class Application:
    """One call of a function or composition inside a composition."""

    function: str
    arguments: tuple[Argument, ...] = attrs.field(converter=_tuple, default=())
    outputs: tuple[Output, ...] = attrs.field(converter=_tuple, default=())
    join: Join | None = None
    span: Span = _span_field()

    def argument(self, param: str) -> Argument | None:
        """The argument bound to ``param``, or ``None``."""
        return next((a for a in self.arguments if a.param == param), None)


@attrs.frozen
class SetDecl:
    """A declared set of a composition (direct input, direct output or ephemeral).

    ``value``: the set's items when the composition is written, as text
    (:mod:`dandelion.constants`): for an ephemeral set, a *constant* (a value written as an
    argument, ``scale(x, 3.0)``), which no application produces; for a direct input, its
    default, which a run that leaves the input out gets.  ``None`` for any other set (and
    then not written to the IR's JSON).
    """

    name: str
    type: DataType = attrs.field(factory=DataType)
    span: Span = _span_field()
    value: str | None = attrs.field(default=None, repr=False,
                                    metadata={"omitted_when_default": True})

    def __repr__(self) -> str:  # (as attrs writes it; ``value`` only where there is one)
        tail = f", value={self.value!r}" if self.value is not None else ""
        return f"SetDecl(name={self.name!r}, type={self.type!r}{tail})"


@attrs.frozen
class Composition:
    """A DAG of applications over sets."""

    name: str
    inputs: tuple[SetDecl, ...] = attrs.field(converter=_tuple, default=())
    outputs: tuple[SetDecl, ...] = attrs.field(converter=_tuple, default=())
    ephemeral: tuple[SetDecl, ...] = attrs.field(converter=_tuple, default=())
    applications: tuple[Application, ...] = attrs.field(converter=_tuple, default=())
    span: Span = _span_field()

    def signature(self) -> FunctionSpec:
        """This composition as a caller sees it: inputs as parameters (one that holds a
        default may be left out), outputs as results."""
        return FunctionSpec(self.name, [Param(d.name, d.type, defaulted=d.value is not None)
                                        for d in self.inputs],
                            [Param(d.name, d.type) for d in self.outputs])

    def declarations(self) -> Iterator[SetDecl]:
        """All declared sets: inputs, outputs, ephemeral."""
        yield from self.inputs
        yield from self.outputs
        yield from self.ephemeral

    def declaration(self, name: str) -> SetDecl | None:
        """The declaration of set ``name``, or ``None``."""
        return next((d for d in self.declarations() if d.name == name), None)


@attrs.frozen
class Module:
    """A unit of IR: function declarations and compositions, looked up by name."""

    functions: tuple[FunctionSpec, ...] = attrs.field(converter=_tuple, default=())
    compositions: tuple[Composition, ...] = attrs.field(converter=_tuple, default=())

    def function(self, name: str) -> FunctionSpec | None:
        """The function declared as ``name``, or ``None``."""
        return next((f for f in self.functions if f.name == name), None)

    def composition(self, name: str) -> Composition | None:
        """The composition called ``name``, or ``None``."""
        return next((c for c in self.compositions if c.name == name), None)

    def callee_signature(self, name: str) -> FunctionSpec | None:
        """The signature of the function or composition ``name`` as seen by a caller: a
        function's spec, or a composition's inputs and outputs as parameters and results.

        >>> from dandelion.ir import Composition, Module, SetDecl
        >>> Module([], [Composition("c", [SetDecl("a")])]).callee_signature("c").params
        (Param(name='a', type=DataType(element='any', is_set=True)),)
        """
        spec = self.function(name)
        if spec is not None:
            return spec
        comp = self.composition(name)
        return comp.signature() if comp is not None else None

    def merge(self, other: Module) -> Module:
        """This module plus the declarations of ``other`` it does not already have."""
        functions = list(self.functions)
        functions += [f for f in other.functions if self.function(f.name) is None]
        comps = list(self.compositions)
        comps += [c for c in other.compositions if self.composition(c.name) is None]
        return Module(functions, comps)
