"""The exception hierarchy of Dandelion.

Every error raised to a user derives from :class:`DandelionError`; each subclass also
inherits the builtin exception it resembles, so ``except TypeError`` keeps working for a
:class:`CompositionTypeError`.  Messages say *where* (a :class:`~dandelion.ir.Span`, a
composition, a function) and *what to do* (a hint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.ir.nodes import Span
    from dandelion.ir.verify import Diagnostic


class DandelionError(Exception):
    """Root of all Dandelion errors.

    Args:
        message: one line saying what went wrong.
        span: where in the source the problem is, if known.
        hint: what the user can do about it.
    """

    def __init__(self, message: str, *, span: Span | None = None, hint: str | None = None,
                 **context: Any) -> None:
        self.message = message
        self.span = span
        self.hint = hint
        self.context = context
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.span}: " if self.span is not None and self.span.file else ""
        text = f"{where}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class CompositionError(DandelionError, ValueError):
    """A composition is malformed: undefined or doubly produced sets, cycles, bad joins."""

    def __init__(self, message: str, *, diagnostics: Sequence[Diagnostic] = (), **kw: Any) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__(message, **kw)


class CompositionTypeError(CompositionError, TypeError):
    """An edge of a composition connects values of incompatible types, or arity is wrong."""


class DslSyntaxError(CompositionError, SyntaxError):
    """A DSL file could not be parsed. Carries file, line, column and a caret excerpt."""


class EncodingError(DandelionError, TypeError):
    """A value cannot be encoded as (or decoded from) its declared element type."""


class FunctionTypeError(DandelionError, TypeError):
    """A compute function received or returned a value that does not match its signature."""


class FunctionError(DandelionError, RuntimeError):
    """A function invocation failed; names the function, the instance and the input keys.

    Attributes:
        traceback: the traceback of the function's own code, as Python formats it (also
            from inside a sandbox; shown after the message), or ``""``.
        logs: what the failing instance printed (stdout and stderr), or ``""``.
    """

    def __init__(self, message: str, *, function: str = "", instance: int | None = None,
                 keys: Sequence[int] = (), traceback: str = "", logs: str = "",
                 **kw: Any) -> None:
        self.function = function
        self.instance = instance
        self.keys = tuple(keys)
        self.traceback = traceback
        self.logs = logs
        super().__init__(message, **kw)

    def _render(self) -> str:
        text = super()._render()
        return f"{text}\n{self.traceback}" if self.traceback else text

    def set_traceback(self, traceback: str) -> None:
        """Replace the function's traceback, and the message that shows it."""
        self.traceback = traceback
        self.args = (self._render(),)


class FunctionTimeout(FunctionError, TimeoutError):
    """A function ran past its time limit."""


class SandboxViolation(FunctionError):
    """A sandboxed function attempted something its sandbox forbids (a system call, memory)."""


class BackendError(DandelionError, RuntimeError):
    """A backend or engine is unknown, unavailable or lacks a capability the plan needs."""


class TopologyError(DandelionError, ValueError):
    """A topology (which nodes are near which storage) is malformed or names no node of the
    cluster."""


class InputError(DandelionError, ValueError):
    """The inputs given to a run do not match the composition's direct inputs."""
