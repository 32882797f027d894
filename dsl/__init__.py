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

from dandelion.dsl.api import compile_text, load, loads, notation_of, parse
from dandelion.dsl.format import format_module

__all__ = ["compile_text", "format_module", "load", "loads", "notation_of", "parse"]
