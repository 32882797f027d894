"""The lexer of the ``.dd`` notation: one regular expression, keywords decided by the parser.

lark's contextual lexer re-matches every terminal of a parser state at each position; this
lexer matches the whole text with one compiled pattern and asks the LALR table only whether
a word is a keyword *here* (a keyword where the parser accepts it, a name otherwise: so
``key`` or ``left`` stay usable as set names).  It also decides which newlines end a
statement (see :class:`DdLexer`).  It is several times faster than the contextual lexer on
large files, which is what parse time is made of.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from lark.exceptions import UnexpectedCharacters
from lark.lexer import Lexer, LexerState, Token

# Leading blanks are part of each match: one match per token, not two.
_PATTERN = re.compile(r"""
    [ \t\f\r]*
  (?: (?P<COMMENT>\#[^\n]*)
  | (?P<NL>\n)
  | (?P<WORD>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<STRING>"[^"\n]*")
  | (?P<PUNCT>->|[()\[\],:.=])
  | (?P<EOF>\Z)
  )
""", re.VERBOSE)

#: Words that begin a statement: a line starting with one always starts a new statement, so
#: an unclosed parenthesis or a dangling ':' is reported on its own line.
_new_str = str.__new__


def _token(kind: str, value: str, start: int, line: int, column: int, end: int) -> Token:
    """A one-line :class:`~lark.lexer.Token`, built without ``Token.__new__``'s argument
    handling (a third of the cost of lexing a large file)."""
    tok: Token = _new_str(Token, value)
    tok.type = kind
    tok.value = value
    tok.start_pos = start
    tok.line = tok.end_line = line
    tok.column = column
    tok.end_column = column + len(value)
    tok.end_pos = end
    return tok


STATEMENT_KEYWORDS = frozenset({"input", "output", "ephemeral", "function", "composition",
                                "from", "io", "cacheable", "uncacheable"})


class DdLexer(Lexer):
    """Tokens of the ``.dd`` notation, with statement-ending newlines as ``_NL``.

    A newline inside parentheses, or right after ``:`` or ``,``, continues the statement;
    blank lines and comment lines collapse; the text always ends with one ``_NL``.
    """

    __future_interface__ = 2

    def __init__(self, lexer_conf: Any) -> None:
        self.keywords: dict[str, str] = {}
        self.punctuation: dict[str, str] = {}
        for term in lexer_conf.terminals:
            if term.pattern.type != "str":
                continue
            value = term.pattern.value
            (self.keywords if value[:1].isalpha() else self.punctuation)[value] = term.name

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        source: Any = lexer_state.text
        text: str = getattr(source, "text", source)
        pos: int = getattr(source, "start", 0)
        end: int = getattr(source, "end", len(text))
        states = parser_state.parse_conf.parse_table.states
        stack = parser_state.state_stack
        keywords, punctuation = self.keywords, self.punctuation
        line, line_start = 1, 0
        depth = 0
        prev_type = "_NL"  # nothing yet: leading newlines are dropped
        pending_nl: Token | None = None  # a newline dropped as a continuation
        match = _PATTERN.match
        new = _new_str
        while pos <= end:
            m = match(text, pos, end)
            if m is None:
                bad = pos + len(text[pos:end]) - len(text[pos:end].lstrip(" \t\f\r"))
                raise UnexpectedCharacters(  # type: ignore[no-untyped-call]
                    text, bad, line, bad - line_start + 1)
            kind: str = m.lastgroup or ""
            if kind == "EOF":
                break
            start = m.start(kind)
            pos = m.end()
            if kind == "COMMENT":
                continue
            value = text[start:pos]
            column = start - line_start + 1
            if kind == "NL":
                tok = _token("_NL", value, start, line, column, pos)
                line += 1
                line_start = pos
                if depth > 0 or prev_type in ("_NL", "COLON", "COMMA"):
                    if prev_type != "_NL":
                        pending_nl = tok
                    continue
                prev_type = "_NL"
                yield tok
                continue
            if kind == "WORD":
                if pending_nl is not None and value in STATEMENT_KEYWORDS:
                    depth = 0
                    prev_type = "_NL"
                    yield pending_nl
                keyword = keywords.get(value)
                kind = keyword if keyword is not None and keyword in states[stack[-1]] \
                    else "NAME"
            elif kind == "PUNCT":
                kind = punctuation[value]
                if kind == "LPAR":
                    depth += 1
                elif kind == "RPAR" and depth:
                    depth -= 1
            pending_nl = None
            prev_type = kind
            # _token(), inlined: this loop runs once per token of the file.
            tok = new(Token, value)
            tok.type = kind
            tok.value = value
            tok.start_pos = start
            tok.line = tok.end_line = line
            tok.column = column
            tok.end_column = column + pos - start
            tok.end_pos = pos
            yield tok
        if prev_type != "_NL":
            yield Token("_NL", "", end, line, end - line_start + 1, line,
                        end - line_start + 1, end)
