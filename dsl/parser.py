"""Text -> syntax tree (:mod:`dandelion.dsl.ast`) for both notations, with every error.

Both grammars are LALR(1) (``dd.lark``, ``dcl.lark``); the transformer runs while the parser
reduces, so no parse tree is built.  On a syntax error the offending statement is blanked
out (positions stay where they were) and the text is parsed again, so that one run reports
every broken statement of a file, not only the first.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Callable, Iterator

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    LarkError,
    UnexpectedInput,
    VisitError,
)

from dandelion.dsl import ast
from dandelion.dsl.diagnostics import Report, Source, did_you_mean
from dandelion.dsl.lexer import DdLexer
from dandelion.dsl.syntax_errors import blank, dcl_region, dd_region, describe, offset
from dandelion.ir.nodes import ShardingMode, Span
from dandelion.ir.types import ElementType

_HERE = os.path.dirname(os.path.abspath(__file__))

#: The most syntax errors one file reports before giving up.
MAX_SYNTAX_ERRORS = 50

_DD_MODES = {"each": ShardingMode.EACH, "eachkey": ShardingMode.KEYED,
             "any": ShardingMode.ANY_EACH, "anykey": ShardingMode.ANY_KEYED}
DCL_MODES = {"all": ShardingMode.ALL, "each": ShardingMode.EACH, "keyed": ShardingMode.KEYED,
             "anyEach": ShardingMode.ANY_EACH, "anyKeyed": ShardingMode.ANY_KEYED}
JOIN_KINDS = ("inner", "left", "right", "full", "cross")
ELEMENT_TYPES = tuple(e.value for e in ElementType)


class GluedToken(Exception):
    """A keyword immediately followed by more letters (``sett``): one misspelled word."""

    def __init__(self, first: Token, second: Token) -> None:
        super().__init__(f"{first}{second}")
        self.first = first
        self.second = second


def _check_glued(prev: Token | None, tok: Token) -> None:
    # The contextual lexer matches a keyword as a prefix where no name is expected
    # ("sett" -> "set" "t"); a word must not run on into the next token.
    if (prev is not None and prev.end_pos == tok.start_pos and str(prev)[-1:].isalnum()
            and str(tok)[:1].replace("_", "a").isalnum()):
        raise GluedToken(prev, tok)


class GlueCheck:
    """Post-lexer of ``.dcl``: rejects words glued to keywords, nothing else."""

    always_accept = ()

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        prev: Token | None = None
        for tok in stream:
            _check_glued(prev, tok)
            prev = tok
            yield tok


def _start(item: Any) -> tuple[int, int] | None:
    if isinstance(item, Token):
        return (item.line, item.column or 0) if item.line else None
    if isinstance(item, (list, tuple)):
        for x in item:
            found = _start(x)
            if found is not None:
                return found
        return None
    span = getattr(item, "span", None)
    return (span.line, span.column) if isinstance(span, Span) and span.line else None


def _end(item: Any) -> tuple[int, int] | None:
    if isinstance(item, Token):
        return (item.end_line, item.end_column or 0) if item.end_line else None
    if isinstance(item, (list, tuple)):
        for x in reversed(item):
            found = _end(x)
            if found is not None:
                return found
        return None
    span = getattr(item, "span", None)
    return (span.end_line, span.end_column) if isinstance(span, Span) and span.line else None


class Where:
    """Where a reduced rule lies, from its children (the parser builds no tree, so there is
    no lark ``meta``): the first child's start to the last child's end."""

    __slots__ = ("line", "column", "end_line", "end_column")

    def __init__(self, children: list[Any]) -> None:
        start = _start(children)
        end = _end(children)
        self.line: int | None = start[0] if start else None
        self.column: int = start[1] if start else 0
        self.end_line: int = end[0] if end else 0
        self.end_column: int = end[1] if end else 0


def _where(f: Callable[..., Any], data: str, children: list[Any], meta: Any) -> Any:
    # The children stand for the rule's position; _span_of works it out when asked.
    return f(children, children)


def _span_of(file: str, item: Any) -> Span:
    """The span of a token, of a :class:`Where`, or of a rule's children."""
    if isinstance(item, Token):
        return Span(file, item.line or 0, item.column or 0, item.end_line or 0,
                    item.end_column or 0)
    if isinstance(item, list):
        item = Where(item)
    line = getattr(item, "line", None)
    if line is None:
        return Span(file)
    return Span(file, line, item.column, item.end_line or line, item.end_column or item.column)


class _Builder(Transformer):  # type: ignore[type-arg]
    """Shared helpers of both transformers."""

    def __init__(self, file: str = "", report: Report | None = None) -> None:
        super().__init__()
        self.file = file
        self.report: Report = report if report is not None else Report(Source("", file))

    def span(self, item: Any) -> Span:
        return _span_of(self.file, item)

    def join_of(self, tokens: list[Token], meta: Any) -> ast.JoinClause:
        names = [str(t) for t in tokens[0::2]]
        kinds = []
        for tok in tokens[1::2]:
            kind = str(tok)
            if kind not in JOIN_KINDS:
                self.report.error("unknown-keyword", f"unknown join kind '{kind}'",
                                  self.span(tok), did_you_mean(kind, JOIN_KINDS)
                                  or f"use one of: {', '.join(JOIN_KINDS)}")
            kinds.append(kind)
        return ast.JoinClause(tuple(names), tuple(kinds), self.span(meta))


@v_args(wrapper=_where)
class DdBuilder(_Builder):
    """Builds :class:`ast.FileAst` from the ``.dd`` grammar's reductions."""

    def start(self, meta: Any, stmts: list[Any]) -> ast.FileAst:
        functions: list[ast.FunctionDecl] = []
        bindings: list[ast.Binding] = []
        comps: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        for stmt in stmts:
            if isinstance(stmt, ast.FunctionDecl):
                functions.append(stmt)
            elif isinstance(stmt, ast.Binding):
                bindings.append(stmt)
            elif isinstance(stmt, tuple):  # composition header: (name, span)
                current = {"name": stmt[0], "span": stmt[1], "decls": [], "apps": [],
                           "implicit": False}
                comps.append(current)
            else:
                first = stmt[0] if isinstance(stmt, list) else stmt
                if current is None:
                    current = {"name": "", "span": first.span, "decls": [], "apps": [],
                               "implicit": True}
                    comps.append(current)
                if isinstance(stmt, list):
                    current["decls"].extend(stmt)
                else:
                    current["apps"].append(stmt)
        return ast.FileAst(
            "dd", tuple(functions), tuple(bindings),
            tuple(ast.CompositionAst(c["name"], tuple(c["decls"]), tuple(c["apps"]),
                                     c["implicit"], c["span"]) for c in comps))

    def declaration(self, meta: Any, children: list[Any]) -> list[ast.Decl]:
        role, dtype, *names = children
        return [ast.Decl(str(role), str(n), dtype, self.span(n)) for n in names]

    def role(self, meta: Any, children: list[Token]) -> Token:
        return children[0]

    def shape(self, meta: Any, children: list[Token]) -> Token:
        return children[0]

    def data_type(self, meta: Any, children: list[Any]) -> ast.TypeRef:
        shape, element = children
        if element is not None and str(element) not in ELEMENT_TYPES:
            self.report.error("unknown-type", f"unknown element type '{element}'",
                              self.span(element), did_you_mean(str(element), ELEMENT_TYPES)
                              or f"use one of: {', '.join(ELEMENT_TYPES)}")
        last = element or shape
        span = Span(self.file, shape.line, shape.column, last.end_line, last.end_column)
        return ast.TypeRef(str(shape), None if element is None else str(element), span)

    def application(self, meta: Any, children: list[Any]) -> ast.Application:
        targets, body = children
        if isinstance(body, list):  # loop: [generators, join, call]
            generators, join, call = body
        else:
            generators, join, call = (), None, body
        name_tok, args, close = call
        targets = targets or []
        if targets:
            first = targets[0].span
            line, column = first.line, first.column
        else:  # a bare call: the statement starts at 'for' or at the function's name
            start = generators[0].span if generators else self.span(name_tok)
            line, column = start.line, start.column
        span = Span(self.file, line, column, close.end_line, close.end_column)
        return ast.Application(tuple(targets), str(name_tok), tuple(args), tuple(generators),
                               join, span, self.span(name_tok))

    def targets(self, meta: Any, names: list[Token]) -> list[ast.Target]:
        return [ast.Target(str(n), self.span(n)) for n in names]

    def loop(self, meta: Any, children: list[Any]) -> list[Any]:
        return [tuple(children[:-2]), children[-2], children[-1]]

    def generator(self, meta: Any, children: list[Any]) -> ast.Generator:
        (mode, words), var, source = children
        span = Span(self.file, words[0].line, words[0].column, source.end_line,
                    source.end_column)
        return ast.Generator(mode, str(var), str(source), span, self.span(source))

    def mode(self, meta: Any, words: list[Token]) -> tuple[ShardingMode, list[Token]]:
        return _DD_MODES["".join(map(str, words))], words

    def join(self, meta: Any, children: list[Any]) -> ast.JoinClause:
        return self.join_of(children[1:], meta)  # children[0] is the keyword 'by'

    def join_kind(self, meta: Any, children: list[Token]) -> Token:
        return children[0]

    def call(self, meta: Any, children: list[Any]) -> tuple[Token, list[ast.Arg], Token]:
        name, *args, close = children
        return name, [a for a in args if isinstance(a, ast.Arg)], close

    def arg(self, meta: Any, children: list[Any]) -> ast.Arg:
        param, optional, name = children
        first = param or optional or name
        span = Span(self.file, first.line, first.column, name.end_line, name.end_column)
        return ast.Arg(str(name), None if param is None else str(param), optional is not None,
                       span)

    def function_decl(self, meta: Any, children: list[Any]) -> ast.FunctionDecl:
        kind, name, *rest = children
        results = rest.pop() if rest and isinstance(rest[-1], list) else []
        params = [p for p in rest if p is not None]
        results = [r for r in results if r is not None]
        if len(results) == 1 and results[0].name == "":
            results = [ast.ParamDecl("result", results[0].type, results[0].span)]
        io = kind in ("io", "cacheable io")
        cacheable = kind == "cacheable io" if io else kind != "uncacheable"
        return ast.FunctionDecl(str(name), tuple(params), tuple(results), io, cacheable,
                                self.span(name))

    def function_kind(self, meta: Any, words: list[Token]) -> str:
        return " ".join(map(str, words))

    def param(self, meta: Any, children: list[Any]) -> ast.ParamDecl:
        dtype, name = children
        return ast.ParamDecl(str(name), dtype, self.span(name))

    def results(self, meta: Any, children: list[Any]) -> list[ast.ParamDecl | None]:
        return list(children)

    def result(self, meta: Any, children: list[Any]) -> ast.ParamDecl:
        if len(children) == 1:  # a bare name
            return ast.ParamDecl(str(children[0]), None, self.span(children[0]))
        dtype, name = children
        return ast.ParamDecl("" if name is None else str(name), dtype,
                             self.span(name if name is not None else meta))

    def binding(self, meta: Any, children: list[Any]) -> ast.Binding:
        _, kind, (module, quoted), _, *names = children  # 'from' … 'import'
        names = [n for n in names if isinstance(n, ast.ImportName)]
        return ast.Binding(str(kind), module, quoted, tuple(names), self.span(meta))

    def bind_kind(self, meta: Any, words: list[Token]) -> Token:
        return words[0]

    def module_ref(self, meta: Any, parts: list[Token]) -> tuple[str, bool]:
        if len(parts) == 1 and parts[0].type == "STRING":
            return str(parts[0])[1:-1], True
        return ".".join(map(str, parts)), False

    def import_name(self, meta: Any, children: list[Any]) -> ast.ImportName:
        name, alias = children
        return ast.ImportName(str(name), str(alias or name), self.span(meta))

    def composition_header(self, meta: Any, children: list[Token]) -> tuple[str, Span]:
        return str(children[0]), self.span(children[0])


@v_args(wrapper=_where)
class DclBuilder(_Builder):
    """Builds :class:`ast.FileAst` from the ``.dcl`` grammar's reductions."""

    def start(self, meta: Any, items: list[Any]) -> ast.FileAst:
        return ast.FileAst(
            "dcl", tuple(i for i in items if isinstance(i, ast.FunctionDecl)), (),
            tuple(i for i in items if isinstance(i, ast.CompositionAst)))

    def names(self, meta: Any, tokens: list[Token | None]) -> list[Token]:
        return [t for t in tokens if t is not None]

    def function_decl(self, meta: Any, children: list[Any]) -> ast.FunctionDecl:
        name, params, results = children
        return ast.FunctionDecl(
            str(name), tuple(ast.ParamDecl(str(p), None, self.span(p)) for p in params),
            tuple(ast.ParamDecl(str(r), None, self.span(r)) for r in results),
            span=self.span(name))

    def composition(self, meta: Any, children: list[Any]) -> ast.CompositionAst:
        name, params, results, *apps = children
        untyped = ast.TypeRef(None, None)
        decls = [ast.Decl("input", str(p), untyped, self.span(p)) for p in params]
        decls += [ast.Decl("output", str(r), untyped, self.span(r)) for r in results]
        return ast.CompositionAst(str(name), tuple(decls), tuple(apps), False,
                                  self.span(name))

    def app(self, meta: Any, children: list[Any]) -> ast.DclApplication:
        name, *rest = children
        join = rest.pop() if rest and isinstance(rest[-1], ast.JoinClause) else None
        if rest and rest[-1] is None:  # the absent [join]
            rest.pop()
        args = [a for a in rest if isinstance(a, ast.DclArg)]
        outs = [o for o in rest if isinstance(o, ast.DclOut)]
        return ast.DclApplication(str(name), tuple(args), tuple(outs), join, self.span(meta),
                                  self.span(name))

    def in_arg(self, meta: Any, children: list[Any]) -> ast.DclArg:
        param, *words = [c for c in children if c is not None]
        optional = False
        if len(words) == 3:
            if str(words[0]) != "optional":
                self.report.error("unknown-keyword", f"unknown keyword '{words[0]}'",
                                  self.span(words[0]),
                                  did_you_mean(str(words[0]), ["optional"])
                                  or "write 'param = [optional] mode set'")
            optional = True
            words = words[1:]
        mode_tok, source = words
        mode = DCL_MODES.get(str(mode_tok))
        if mode is None:
            candidates = [*DCL_MODES, "optional"]
            self.report.error("unknown-keyword", f"unknown sharding mode '{mode_tok}'",
                              self.span(mode_tok), did_you_mean(str(mode_tok), candidates)
                              or f"use one of: {', '.join(DCL_MODES)}")
            mode = ShardingMode.ALL
        return ast.DclArg(str(param), str(source), mode, optional, self.span(meta),
                          self.span(source))

    def out_arg(self, meta: Any, children: list[Token]) -> ast.DclOut:
        target, result = children
        return ast.DclOut(str(target), str(result), self.span(meta))

    def join(self, meta: Any, tokens: list[Token]) -> ast.JoinClause:
        return self.join_of(tokens[1:], meta)  # tokens[0] is the keyword 'by'


_BUILDERS: dict[str, type[_Builder]] = {"dd": DdBuilder, "dcl": DclBuilder}


@functools.cache
def _parser(notation: str) -> tuple[Lark, _Builder]:
    """The parser of a notation and its transformer, which runs as the parser reduces."""
    with open(os.path.join(_HERE, f"{notation}.lark"), encoding="utf-8") as f:
        grammar = f.read()
    builder = _BUILDERS[notation]()
    if notation == "dd":
        lark = Lark(grammar, parser="lalr", lexer=DdLexer, maybe_placeholders=True,
                    transformer=builder)
    else:
        lark = Lark(grammar, parser="lalr", lexer="contextual", maybe_placeholders=True,
                    transformer=builder, postlex=GlueCheck())
    return lark, builder


def _lark(notation: str) -> Lark:
    return _parser(notation)[0]


#: The transformer keeps the file name and report of the current parse.
_LOCK = threading.Lock()


@functools.cache
def _terminal_text(notation: str) -> dict[str, str]:
    """Terminal name -> how to show it in 'expected …' messages."""
    shown = {"NAME": "a name", "STRING": "a string", "_NL": "end of line", "$END": "end of file"}
    for term in _lark(notation).terminals:
        if term.name not in shown and term.pattern.type == "str":
            shown[term.name] = f"'{term.pattern.value}'"
    return shown


def parse_ast(text: str, filename: str, notation: str, report: Report) -> ast.FileAst | None:
    """Parse ``text``; every syntax error goes to ``report``.

    Returns:
        The syntax tree, or ``None`` when nothing could be read.
    """
    region = dd_region if notation == "dd" else dcl_region
    lark, builder = _parser(notation)
    current = text
    for _ in range(MAX_SYNTAX_ERRORS):
        try:
            with _LOCK:
                builder.file, builder.report = filename, report
                tree: ast.FileAst = lark.parse(current)
                return tree
        except UnexpectedInput as err:
            code, message, span, hint = describe(err, filename, current, notation,
                                                _terminal_text(notation))
            report.error(code, message, span, hint)
            pos = offset(current, span.line, span.column)
            start, end = region(current, min(pos, max(len(current) - 1, 0)))
            blanked = blank(current, start, end)
            if blanked == current:  # nothing left to skip but the offending character
                blanked = blank(current, start, max(end, min(pos + 1, len(current))))
            if blanked == current:
                return None
            current = blanked
        except GluedToken as err:
            first, second = err.first, err.second
            word = f"{first}{second}"
            span = Span(filename, first.line or 0, first.column or 0, first.line or 0,
                        (first.column or 0) + len(word))
            report.error("syntax", f"unexpected '{word}'", span, f"did you mean '{first}'?")
            pos = offset(current, span.line, span.column)
            start, end = region(current, pos)
            blanked = blank(current, start, max(end, pos + len(word)))
            if blanked == current:
                return None
            current = blanked
        except VisitError as err:  # a bug in a transformer method, never the user's fault
            raise err.orig_exc from None
        except LarkError as err:
            report.error("syntax", str(err).splitlines()[0], Span(filename))
            return None
    return None
