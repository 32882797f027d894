"""Syntax errors: what to tell the user, and where to resume parsing.

:func:`describe` turns a lark exception into a message with a precise position and a hint
(the keywords that would fit, a misspelled word, a statement left open on the line before);
:func:`dd_region` / :func:`dcl_region` find the statement around an error, which the parser
blanks out before parsing again, so that every broken statement of a file is reported.
"""

from __future__ import annotations

import re
from typing import Any

from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from dandelion.dsl.diagnostics import did_you_mean
from dandelion.dsl.lexer import STATEMENT_KEYWORDS
from dandelion.ir.nodes import Span


def _expected(shown: dict[str, str], names: Any) -> list[str]:
    return sorted({shown.get(n, n) for n in names if n in shown})


_STATEMENT_WORDS = ("input", "output", "ephemeral", "function", "composition", "from")


def _end_span(text: str, file: str) -> Span:
    """Just after the last character of ``text`` that is not white space."""
    body = text.rstrip()
    line = body.count("\n") + 1
    column = len(body) - (body.rfind("\n") + 1) + 1
    return Span(file, line, column, line, column + 1)


def _misspelled_statement(text: str, span: Span) -> tuple[str, Span] | None:
    """``inptu set a``: the first word of the line looks like a statement keyword."""
    line = text.split("\n")[span.line - 1] if 0 < span.line <= text.count("\n") + 1 else ""
    word = line.lstrip().split(" ", 1)[0].split("(", 1)[0]
    if not word.isidentifier() or word in _STATEMENT_WORDS:
        return None
    close = did_you_mean(word, _STATEMENT_WORDS)
    if not close or span.column <= len(line) - len(line.lstrip()) + 1:
        return None
    column = len(line) - len(line.lstrip()) + 1
    return close, Span(span.file, span.line, column, span.line, column + len(word))


def describe(err: UnexpectedInput, file: str, text: str, notation: str,
             shown: dict[str, str]) -> tuple[str, str, Span, str]:
    """(code, message, span, hint) for a lark error.

    Args:
        err: what lark raised.
        file: the file name for the span.
        text: the text that was parsed.
        notation: ``dd`` or ``dcl``.
        shown: terminal name -> how to show it ("a name", "'('").
    """
    if isinstance(err, UnexpectedCharacters):
        char = err.char if err.char.isprintable() else repr(err.char)
        span = Span(file, err.line, err.column, err.line, err.column + 1)
        return "bad-character", f"unexpected character '{char}'", span, ""
    tok = getattr(err, "token", None)
    names: Any = getattr(err, "expected", None) or getattr(err, "accepts", None) or ()
    interactive = getattr(err, "interactive_parser", None)
    if interactive is not None:
        try:  # exact: what the parser would take here, not what the lexer state allows
            names = interactive.accepts()
        except LarkError:
            pass
    expected = _expected(shown, names)
    hint = f"expected {' or '.join(expected)}" if 0 < len(expected) <= 6 else ""
    if isinstance(err, UnexpectedEOF) or tok is None or tok.type == "$END":
        return "unexpected-end", "unexpected end of file", _end_span(text, file), hint
    span = Span(file, tok.line or 0, tok.column or 0, tok.end_line or 0, tok.end_column or 0)
    if tok.type == "_NL":
        return "syntax", "unexpected end of line", Span(file, span.line, span.column), hint
    if notation == "dd" and span.line > 1:
        lines = text.split("\n")
        before = lines[span.line - 1][:span.column - 1] if span.line <= len(lines) else "x"
        previous = next((ln for ln in reversed(lines[:span.line - 1]) if ln.strip()), "")
        code = previous.split("#", 1)[0]
        unclosed = code.count("(") > code.count(")")
        if not before.strip() and (unclosed or
                                   str(tok) in STATEMENT_KEYWORDS):
            # The previous statement was left open (an unclosed '(' or a trailing ':'/',').
            end = _end_span("\n".join(lines[:span.line - 1]), file)
            return "syntax", "unexpected end of line", end, \
                "'(' is never closed" if unclosed else hint
    if notation == "dd":
        misspelled = _misspelled_statement(text, span)
        if misspelled is not None:
            word_span = misspelled[1]
            word = text.split("\n")[span.line - 1][word_span.column - 1:word_span.end_column - 1]
            return "syntax", f"unknown statement '{word}'", word_span, misspelled[0]
    keywords = [e.strip("'") for e in expected if e.startswith("'") and e[1:2].isalpha()]
    close = did_you_mean(str(tok), keywords) if tok.type == "NAME" else ""
    if not close:
        close = _misspelled_word_before(text, span, shown)
    return "syntax", f"unexpected '{tok}'", span, close or hint


def _misspelled_word_before(text: str, span: Span, shown: dict[str, str]) -> str:
    """``f(optinal a)``: the word before the error looks like a keyword."""
    lines = text.split("\n")
    if not 0 < span.line <= len(lines):
        return ""
    words = re.findall(r"[A-Za-z_]\w*", lines[span.line - 1][:span.column - 1])
    if not words:
        return ""
    keywords = [v.strip("'") for v in shown.values() if v.startswith("'") and v[1:2].isalpha()]
    if words[-1] in keywords:
        return ""
    close = did_you_mean(words[-1], keywords)
    return f"'{words[-1]}': {close}" if close else ""


def blank(text: str, start: int, end: int) -> str:
    """``text`` with ``[start, end)`` replaced by spaces, newlines kept."""
    middle = "".join(c if c == "\n" else " " for c in text[start:end])
    return text[:start] + middle + text[end:]


def offset(text: str, line: int, column: int) -> int:
    if line <= 0:
        return len(text)
    pos = 0
    for _ in range(line - 1):
        nxt = text.find("\n", pos)
        if nxt < 0:
            return len(text)
        pos = nxt + 1
    return min(len(text), pos + max(column, 1) - 1)


def _continues(line: str, following: str = "") -> bool:
    code = line.split("#", 1)[0].rstrip()
    nxt = following.lstrip()
    return (code.endswith((":", ",")) or code.count("(") > code.count(")")
            or nxt.startswith(":") or nxt.startswith("by ") or nxt == "by")


def dd_region(text: str, pos: int) -> tuple[int, int]:
    """The statement (a run of lines joined by continuations) around offset ``pos``."""
    lines = text.split("\n")
    line_no = text.count("\n", 0, pos)
    first = line_no
    while first > 0 and _continues(lines[first - 1], lines[first]):
        first -= 1
    last = line_no
    while last < len(lines) - 1 and _continues(lines[last], lines[last + 1]):
        last += 1
    start = sum(len(s) + 1 for s in lines[:first])
    end = sum(len(s) + 1 for s in lines[:last + 1]) - 1
    return start, max(end, start)


def dcl_region(text: str, pos: int) -> tuple[int, int]:
    """From after the previous ``;``/``{``/``}`` to the next ``;`` (or before ``}``)."""
    start = max(text.rfind(c, 0, pos) for c in ";{}") + 1
    ends = [i for i in (text.find(";", pos), text.find("}", pos)) if i >= 0]
    if not ends:
        return start, len(text)
    end = min(ends)
    return start, end + 1 if text[end] == ";" else end


