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

from importlib.metadata import PackageNotFoundError, version

from dandelion.authoring import (
    CompositionFunction,
    ComputeFunction,
    Json,
    any_each,
    any_keyed,
    composition,
    compute,
    each,
    keyed,
    optional,
)
from dandelion.authoring import all_ as all  # noqa: A004 - dd.all(s), the default mode
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
from dandelion.program import Program
from dandelion.runtime.api import Runtime, run

try:
    __version__ = version("dandelion")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "BackendError", "CompositionError", "CompositionFunction", "CompositionTypeError",
    "ComputeFunction", "DandelionError", "DslSyntaxError", "EncodingError", "FunctionError",
    "FunctionTimeout", "FunctionTypeError", "InputError", "Item", "Json", "Program", "Runtime",
    "SandboxViolation", "__version__", "any_each", "any_keyed", "composition",
    "compute", "each", "keyed", "optional", "run",
]
