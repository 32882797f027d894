"""Pygments lexers for the ``.dd`` and ``.dcl`` notations (``dd`` and ``dcl`` code blocks).

They are registered as Pygments plugins (entry points ``pygments.lexers`` in
``pyproject.toml``), so Sphinx highlights ``.. code-block:: dd`` without configuration;
:func:`setup` also lets ``conf.py`` add them explicitly (``extensions =
["dandelion.dsl.highlight"]``).
"""

from __future__ import annotations

from typing import Any

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Text,
    Whitespace,
)

_ELEMENTS = ("bytes", "str", "int", "float", "bool", "json", "ndarray", "any")
_JOINS = ("inner", "left", "right", "full", "cross")


class DandelionLexer(RegexLexer):  # type: ignore[misc]
    """The Dandelion notation (``.dd``)."""

    name = "Dandelion"
    aliases = ["dd", "dandelion"]
    filenames = ["*.dd"]
    mimetypes = ["text/x-dandelion"]

    tokens = {
        "root": [
            (r"[ \t\f\r]+", Whitespace),
            (r"\n", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"[^"\n]*"', String.Double),
            (r"\b(item|set)(\[)([A-Za-z_]\w*)(\])",
             bygroups(Keyword.Type, Punctuation, Name.Builtin, Punctuation)),
            (r"\b(item|set)\b", Keyword.Type),
            (r"\b(function|composition)(\s+)([A-Za-z_]\w*)",
             bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (words(("input", "output", "ephemeral", "io", "cacheable", "uncacheable"),
                   suffix=r"\b"),
             Keyword.Declaration),
            (words(("for", "each", "key", "any", "in", "by", "optional"), suffix=r"\b"),
             Keyword),
            (words(("from", "import", "as", "python", "native", "wasm"), suffix=r"\b"),
             Keyword.Namespace),
            (words(_JOINS, suffix=r"\b"), Operator.Word),
            (r"[A-Za-z_]\w*(?=\s*\()", Name.Function),
            (r"[A-Za-z_]\w*", Name.Variable),
            (r"\d+", Number),
            (r"->|=", Operator),
            (r"[()\[\],:.]", Punctuation),
            (r".", Text),
        ],
    }


class DclLexer(RegexLexer):  # type: ignore[misc]
    """The composition language of the reference Dandelion system (``.dcl``)."""

    name = "Dandelion composition language"
    aliases = ["dcl"]
    filenames = ["*.dcl"]
    mimetypes = ["text/x-dcl"]

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"(//|#).*?$", Comment.Single),
            (r"\b(function|composition)(\s+)([A-Za-z_]\w*)",
             bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (words(("all", "each", "keyed", "anyEach", "anyKeyed"), suffix=r"\b"),
             Keyword.Pseudo),
            (words(("by", "optional"), suffix=r"\b"), Keyword),
            (words(_JOINS, suffix=r"\b"), Operator.Word),
            (r"[A-Za-z_]\w*(?=\s*\()", Name.Function),
            (r"[A-Za-z_]\w*", Name.Variable),
            (r"=>|=", Operator),
            (r"[(){},;]", Punctuation),
            (r".", Text),
        ],
    }


def setup(app: Any) -> dict[str, Any]:
    """Sphinx extension hook: register both lexers."""
    app.add_lexer("dd", DandelionLexer)
    app.add_lexer("dcl", DclLexer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
