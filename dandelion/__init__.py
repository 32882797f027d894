"""Dandelion: serverless compositions of pure compute functions and trusted I/O functions.

>>> import dandelion as dd
>>> @dd.compute
... def split(page: bytes) -> list[str]:
...     return page.decode().split()
>>> @dd.compute
... def count(words: list[str]) -> int:
...     return len(words)
>>> @dd.composition
... def word_count(pages: list[bytes]) -> int:
...     words = split(dd.each(pages))
...     return count(words)
>>> dd.run(word_count, pages=[b"a b", b"c"])
3
"""

# No ``from __future__ import annotations`` and only private helper names: every name in
# this module is the public API (``dir(dd)`` is ``__all__`` plus ``dd.all``).
import importlib as _importlib
import typing as _typing

from dandelion.errors import (
    BackendError,
    CompositionError,
    CompositionTypeError,
    DandelionError,
    DslSyntaxError,
    EncodingError,
    FunctionError,
    FunctionTimeout,
    FunctionTypeError,
    InputError,
    SandboxViolation,
)
from dandelion.items import Item

# The rest of the public API is imported on first use, so that a process which needs only
# a part of Dandelion (a sandbox zygote, a Ray worker) does not load the whole of it.
_LAZY = {
    "CompositionFunction": "dandelion.authoring.composition",
    "composition": "dandelion.authoring.composition",
    "ComputeFunction": "dandelion.authoring.compute",
    "compute": "dandelion.authoring.compute",
    "Json": "dandelion.authoring.annotations",
    "each": "dandelion.authoring.tracing",
    "keyed": "dandelion.authoring.tracing",
    "any_each": "dandelion.authoring.tracing",
    "any_keyed": "dandelion.authoring.tracing",
    "optional": "dandelion.authoring.tracing",
    "all": "dandelion.authoring.tracing",
    "Program": "dandelion.program",
    "Runtime": "dandelion.runtime.api",
    "run": "dandelion.runtime.api",
    "Client": "dandelion.client",
    "HttpRequest": "dandelion.io.values",
    "HttpResponse": "dandelion.io.values",
}
_RENAMED = {"all": "all_"}

if _typing.TYPE_CHECKING:  # pragma: no cover
    from dandelion.authoring.annotations import Json
    from dandelion.authoring.composition import CompositionFunction, composition
    from dandelion.authoring.compute import ComputeFunction, compute
    from dandelion.authoring.tracing import all_ as all  # noqa: A004, F401
    from dandelion.authoring.tracing import any_each, any_keyed, each, keyed, optional
    from dandelion.client import Client
    from dandelion.io.values import HttpRequest, HttpResponse
    from dandelion.program import Program
    from dandelion.runtime.api import Runtime, run

    __version__: str


def __getattr__(name: str) -> _typing.Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: _typing.Any = version("dandelion")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0.0.0+unknown"
    elif name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), _RENAMED.get(name, name))
    else:
        raise AttributeError(f"module 'dandelion' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # the public API only: not the submodules that importing them binds here
    return sorted([*__all__, "all"])


#: The public API.  ``dd.all`` is public too, but not exported by ``from dandelion import *``,
#: where it would hide the builtin ``all``.
__all__ = [
    "BackendError", "CompositionError", "CompositionFunction", "CompositionTypeError",
    "ComputeFunction", "DandelionError", "DslSyntaxError", "EncodingError", "FunctionError",
    "FunctionTimeout", "FunctionTypeError", "InputError", "Item", "Json", "Program", "Runtime",
    "Client", "HttpRequest", "HttpResponse",
    "SandboxViolation", "__version__", "any_each", "any_keyed", "composition",
    "compute", "each", "keyed", "optional", "run",
]
