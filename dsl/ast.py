"""The typed syntax trees of the two notations, as the parser's transformer builds them.

Every node carries a :class:`~dandelion.ir.Span` (excluded from equality, like in the IR).
The trees stay close to the text: ``.dd`` calls are positional and use loop variables,
``.dcl`` applications name parameters and results; :mod:`dandelion.dsl.lower` resolves both
against the function signatures and produces IR.
"""

from __future__ import annotations

import attrs

from dandelion.ir.nodes import NOWHERE, ShardingMode, Span


def _span() -> Span:
    return attrs.field(default=NOWHERE, eq=False, repr=False)


@attrs.frozen
class TypeRef:
    """A written data type: ``item``, ``set[int]``; ``None`` parts are left to inference."""

    shape: str | None = None
    element: str | None = None
    span: Span = _span()

    @property
    def is_untyped(self) -> bool:
        """Whether the element type is left to the bound function."""
        return self.element is None


@attrs.frozen
class Decl:
    """``input|output|ephemeral TYPE name``: one declared set of a composition."""

    role: str
    name: str
    type: TypeRef
    span: Span = _span()


@attrs.frozen
class Arg:
    """One argument of a ``.dd`` call: ``[param =] [optional] name``."""

    name: str
    param: str | None = None
    optional: bool = False
    span: Span = _span()


@attrs.frozen
class Generator:
    """``each v in S`` (and the keyed / any forms) of a ``for`` loop."""

    mode: ShardingMode
    var: str
    source: str
    span: Span = _span()
    source_span: Span = _span()


@attrs.frozen
class JoinClause:
    """``by a left b``: names (loop variables in ``.dd``, parameters in ``.dcl``) and kinds."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    span: Span = _span()


@attrs.frozen
class Target:
    """A set an application's result is assigned to; ``_`` drops the result."""

    name: str
    span: Span = _span()

    @property
    def dropped(self) -> bool:
        """Whether this position discards its result."""
        return self.name == "_"


@attrs.frozen
class Application:
    """``targets = [for generators [by join] :] function(args)`` of the ``.dd`` notation."""

    targets: tuple[Target, ...]
    function: str
    args: tuple[Arg, ...]
    generators: tuple[Generator, ...] = ()
    join: JoinClause | None = None
    span: Span = _span()
    function_span: Span = _span()


@attrs.frozen
class ParamDecl:
    """A parameter or result in a function declaration."""

    name: str
    type: TypeRef | None = None
    span: Span = _span()


@attrs.frozen
class FunctionDecl:
    """``[io] function name(params) -> results`` (``.dd``) or ``function n (..) => (..);``."""

    name: str
    params: tuple[ParamDecl, ...]
    results: tuple[ParamDecl, ...]
    io: bool = False
    cacheable: bool = True
    span: Span = _span()


@attrs.frozen
class ImportName:
    """``name [as alias]`` in a binding."""

    name: str
    alias: str
    span: Span = _span()


@attrs.frozen
class Binding:
    """``from python|native|wasm "where" import names``."""

    kind: str
    module: str
    quoted: bool
    names: tuple[ImportName, ...]
    span: Span = _span()


@attrs.frozen
class DclArg:
    """``param = [optional] mode set`` of a ``.dcl`` application."""

    param: str
    source: str
    mode: ShardingMode
    optional: bool = False
    span: Span = _span()
    source_span: Span = _span()


@attrs.frozen
class DclOut:
    """``set = result`` of a ``.dcl`` application."""

    target: str
    result: str
    span: Span = _span()


@attrs.frozen
class DclApplication:
    """``function(in, ...) => (out, ...) [by ...]``."""

    function: str
    args: tuple[DclArg, ...]
    outputs: tuple[DclOut, ...]
    join: JoinClause | None = None
    span: Span = _span()
    function_span: Span = _span()


@attrs.frozen
class CompositionAst:
    """A composition: its declarations and applications (``.dd`` or ``.dcl`` ones).

    ``implicit`` marks the composition formed by ``.dd`` statements before any header.
    """

    name: str
    decls: tuple[Decl, ...] = ()
    applications: tuple[Application | DclApplication, ...] = ()
    implicit: bool = False
    span: Span = _span()


@attrs.frozen
class FileAst:
    """A whole source file."""

    notation: str
    functions: tuple[FunctionDecl, ...] = ()
    bindings: tuple[Binding, ...] = ()
    compositions: tuple[CompositionAst, ...] = ()
