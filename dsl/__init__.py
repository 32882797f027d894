"""Textual front end: the ``.dd`` notation and the reference ``.dcl`` language.

>>> import dandelion.dsl as dsl
>>> module = dsl.parse('''
... input set[int] xs
... output set[int] ys
... ys = for each x in xs : double(x)
... ''')
>>> print(dsl.format_module(module, "dcl"), end="")
function double (arg0) => (result);
composition main (xs) => (ys) {
    double(arg0 = each xs) => (ys = result);
}
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.dsl.api import compile_text, load, loads, notation_of, parse
    from dandelion.dsl.format import format_module

# Imported on first use, so that importing a light module of the package (the ``fmt``
# command's options) does not load the parser.
_LAZY = {"compile_text": "dandelion.dsl.api", "load": "dandelion.dsl.api",
         "loads": "dandelion.dsl.api", "notation_of": "dandelion.dsl.api",
         "parse": "dandelion.dsl.api", "format_module": "dandelion.dsl.format"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dandelion.dsl' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = ["compile_text", "format_module", "load", "loads", "notation_of", "parse"]
