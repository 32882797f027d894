"""Platform I/O functions as objects the front ends can call.

An :class:`IoFunction` has a ``spec`` (an I/O :class:`~dandelion.ir.FunctionSpec` whose one
implementation is ``Implementation("builtin", entry=...)``) and no code artifacts: the I/O
engine of the worker runs it.  Inside a ``@dd.composition`` it is called like a compute
function; its outputs are cacheable only when declared so with :meth:`IoFunction.declare`.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence

from dandelion.authoring.tracing import Applicable
from dandelion.errors import BackendError, DandelionError
from dandelion.ir.nodes import FunctionKind, FunctionSpec, Implementation, Param
from dandelion.ir.types import DataType
from dandelion.items import Item

Items = tuple[Item[Any], ...]
#: ``handler(engine, inputs) -> outputs``: one item tuple per parameter in, per result out.
Handler = Callable[[Any, Sequence[Items]], Awaitable[list[Items]]]

_HANDLERS: dict[str, Handler] = {}
_PLATFORM: dict[str, IoFunction] = {}


class IoFunction(Applicable):
    """A trusted platform I/O function.

    Attributes:
        spec: its IR declaration (kind ``io``).
        artifacts: always empty: the worker's I/O engine holds the code.
        entry: the name the I/O engine knows the function by.
    """

    def __init__(self, spec: FunctionSpec, doc: str = "") -> None:
        self.spec = spec
        self.name = spec.name
        self.entry = spec.implementations[0].entry
        self.__doc__ = doc

    @property
    def artifacts(self) -> dict[str, Any]:
        """Digest -> artifact: none, the worker's I/O engine runs the function."""
        return {}

    def declare(self, *, name: str | None = None, cacheable: bool | None = None
                ) -> IoFunction:
        """A variant of this function under another name or cacheability.

        Declare an I/O function ``cacheable=True`` only when the resources it reads never
        change (content-addressed URLs, immutable objects): its outputs may then be
        memoized like those of a compute function.

        Example:
            >>> from dandelion.io import system_HTTPGet
            >>> fetch = system_HTTPGet.declare(name="fetch_immutable", cacheable=True)
            >>> fetch.spec.cacheable, fetch.entry
            (True, 'system_HTTPGet')
        """
        spec = self.spec
        import attrs

        spec = attrs.evolve(spec, name=name or spec.name,
                            cacheable=spec.cacheable if cacheable is None else cacheable)
        return IoFunction(spec, self.__doc__ or "")

    def call_outside(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Refused: an I/O function runs only as a step of a composition."""
        raise DandelionError(f"I/O function '{self.name}' runs only inside a composition",
                             hint="call it in the body of a @dd.composition")

    def __repr__(self) -> str:
        return f"<dd.io {self.name}>"


def platform_function(name: str, params: Sequence[tuple[str, str]],
                      results: Sequence[tuple[str, str]]) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the platform I/O function ``name`` with a typed signature.

    ``params`` and ``results`` are ``(name, "set[bytes]")`` pairs.
    """
    def register(handler: Handler) -> Handler:
        spec = FunctionSpec(
            name,
            [Param(n, DataType.parse(t)) for n, t in params],
            [Param(n, DataType.parse(t)) for n, t in results],
            kind=FunctionKind.IO,
            implementations=[Implementation("builtin", "", name)],
            cacheable=False)
        _HANDLERS[name] = handler
        _PLATFORM[name] = IoFunction(spec, handler.__doc__ or "")
        return handler

    return register


def platform_functions() -> dict[str, IoFunction]:
    """Name -> :class:`IoFunction` for every function of the platform's I/O library."""
    import dandelion.io  # noqa: F401  (registers the library)

    return dict(_PLATFORM)


def handler_for(entry: str) -> Handler:
    """The handler of the builtin implementation ``entry``.

    Raises:
        BackendError: no platform I/O function has this entry.
    """
    import dandelion.io  # noqa: F401

    handler = _HANDLERS.get(entry)
    if handler is None:
        raise BackendError(f"'{entry}' is not an I/O function of this platform",
                           hint=f"known: {', '.join(sorted(_HANDLERS))}")
    return handler
