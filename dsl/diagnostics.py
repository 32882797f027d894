"""Collecting DSL errors and rendering them like a compiler does.

Every problem becomes a :class:`~dandelion.ir.Diagnostic` (the same record
:func:`dandelion.ir.verify` returns); :func:`render` prints one as::

    log_count.dd:7:35: error: set 'logSets' is not declared (did you mean 'logSet'?)
        partialSums = for each log in logSets :
                                      ^^^^^^^

and :meth:`Report.raise_errors` raises one exception carrying all of them.
"""

from __future__ import annotations

from typing import Iterable, NoReturn

from dandelion.errors import CompositionError, CompositionTypeError, DslSyntaxError
from dandelion.ir.nodes import Span
from dandelion.ir.verify import TYPE_CODES, Diagnostic, Severity
from dandelion.ir.verify import did_you_mean as verify_did_you_mean

#: Codes of problems found before any meaning is given to the text.
SYNTAX_CODES = frozenset({"syntax", "unknown-keyword", "unknown-type", "bad-character",
                          "unexpected-end"})


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``did you mean 'x'?`` for a misspelled ``name``, or ``""`` (a stricter match than
    :func:`dandelion.ir.verify.did_you_mean`, which it calls).

    >>> did_you_mean("logSets", ["logSet", "requestSet"])
    "did you mean 'logSet'?"
    """
    return verify_did_you_mean(name, candidates, cutoff=0.6)


class Source:
    """The text of one file, for quoting lines in messages."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self._lines: list[str] | None = None

    def line(self, number: int) -> str:
        """Line ``number`` (1-based) without its newline, or ``""``."""
        if self._lines is None:
            self._lines = self.text.splitlines()
        if 1 <= number <= len(self._lines):
            return self._lines[number - 1]
        return ""


def render(diag: Diagnostic, source: Source | None = None) -> str:
    """``file:line:col: severity: message (hint)`` plus the source line and a caret."""
    span = diag.span
    head = f"{span}: {diag.severity}: {diag.message}"
    if diag.hint:
        head += f" ({diag.hint})"
    if source is None or not span.line or span.file != source.filename:
        return head
    text = source.line(span.line)
    if not text.strip():
        return head
    column = max(span.column, 1)
    width = 1
    if span.end_line == span.line and span.end_column > column:
        width = span.end_column - column
    width = max(1, min(width, len(text) - column + 1))
    # Keep tabs so the caret lines up under the same characters.
    pad = "".join(c if c == "\t" else " " for c in text[:column - 1])
    return f"{head}\n    {text}\n    {pad}{'^' * width}"


class Report:
    """The diagnostics of one file, in the order they were found."""

    def __init__(self, source: Source, limit: int = 100) -> None:
        self.source = source
        self.found: list[Diagnostic] = []
        self.limit = limit

    def error(self, code: str, message: str, span: Span, hint: str = "") -> None:
        """Record an error at ``span``."""
        if len(self.found) < self.limit:
            self.found.append(Diagnostic(Severity.ERROR, code, message, span, hint))

    def warning(self, code: str, message: str, span: Span, hint: str = "") -> None:
        """Record a warning at ``span``."""
        if len(self.found) < self.limit:
            self.found.append(Diagnostic(Severity.WARNING, code, message, span, hint))

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        """Record diagnostics found elsewhere (e.g. by :func:`dandelion.ir.verify`)."""
        seen = {(d.code, d.message, d.span.line, d.span.column) for d in self.found}
        for d in diagnostics:
            if (d.code, d.message, d.span.line, d.span.column) not in seen:
                self.found.append(d)

    @property
    def errors(self) -> list[Diagnostic]:
        """The errors, in source order."""
        errors = [d for d in self.found if d.is_error]
        return sorted(errors, key=lambda d: (d.span.line or 1 << 30, d.span.column))

    @property
    def warnings(self) -> list[Diagnostic]:
        """The warnings, in source order."""
        return [d for d in self.found if not d.is_error]

    def has_syntax_errors(self) -> bool:
        """Whether the text could not be read (no point in checking its meaning)."""
        return any(d.code in SYNTAX_CODES for d in self.found)

    def rendered(self, diagnostics: Iterable[Diagnostic] | None = None) -> str:
        """All errors (or the given diagnostics) rendered, one block each."""
        items = self.errors if diagnostics is None else list(diagnostics)
        return "\n".join(render(d, self.source) for d in items)

    def raise_errors(self) -> None:
        """Raise one exception with every error, if there is any."""
        errors = self.errors
        if errors:
            raise_diagnostics(errors, errors + self.warnings, self.source)


def raise_diagnostics(errors: list[Diagnostic], everything: list[Diagnostic],
                      source: Source | None) -> NoReturn:
    """Raise :class:`DslSyntaxError`, :class:`CompositionTypeError` or
    :class:`CompositionError` for ``errors`` (the first one decides)."""
    first = errors[0]
    rendered = "\n".join(render(d, source) for d in errors)
    if len(errors) > 1:
        rendered += f"\n{len(errors)} errors"
    cls: type[CompositionError]
    if any(d.code in SYNTAX_CODES for d in errors):
        cls = DslSyntaxError
    elif first.code in TYPE_CODES:
        cls = CompositionTypeError
    else:
        cls = CompositionError
    exc = cls(first.message, span=first.span, hint=first.hint or None,
              diagnostics=everything)
    exc.rendered = rendered  # type: ignore[attr-defined]
    exc.args = (rendered,)
    if isinstance(exc, SyntaxError):
        # SyntaxError.__str__ formats msg/filename/lineno itself: give it the whole text.
        exc.msg = rendered
    raise exc
