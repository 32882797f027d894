"""What compute functions print: captured per instance, bounded, forwarded to the caller.

Each instance's ``stdout`` and ``stderr`` (``print``, and ``logging`` records that reach a
stream) are captured by its engine — inside a sandbox, or per thread for the ``inline``
engine — up to :data:`LIMIT` characters, after which a visible marker says how much was
dropped.  The text travels back with the instance's outputs (or with its error) and is
forwarded by the dispatcher as records of the :data:`LOGGER` logger, one per line,
prefixed with the function and the instance:

>>> from dandelion.runtime.logs import MARK, FunctionLog, plain, split, truncated
>>> print(truncated("x" * 5, dropped=7))
xxxxx
[... 7 more characters of output dropped: an instance keeps 65536]
>>> log = FunctionLog("parse", 1, "reading\\ndone\\n")
>>> log.lines()
['[parse, instance 1] reading', '[parse, instance 1] done']

The members of a fused chain (:mod:`dandelion.runtime.fused`) print into one capture; a
mark (:func:`end_member`) ends each member's text there, and :func:`forward` shows each
member's text under its own name, as an unfused run would (the marks never reach the
caller; :func:`plain` drops them where text is not forwarded):

>>> text = "a\\n" + MARK.format("prep") + "b\\n" + MARK.format("total")
>>> split("prep+total", text)
[('prep', 'a\\n'), ('total', 'b\\n')]
>>> plain(text)
'a\\nb\\n'

Where logging is not configured, the records go to ``stderr``; configure logging (e.g.
``logging.basicConfig(level=logging.INFO)``) to route them like any other, or set the
``dandelion.function`` logger's level to ``WARNING`` to silence them.  A caller that wants
the text itself (the server, for its invocation records) collects it with :func:`collect`.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import sys
import threading
from typing import Any, Iterator

import attrs

#: Characters of output an instance keeps.
LIMIT = 64 * 1024
#: Characters of output a :class:`Collector` keeps, over all instances of its runs.
COLLECT_LIMIT = 1 << 20
#: The logger function output is forwarded to.
LOGGER = "dandelion.function"
#: What ends the output of one member of a fused chain (its name in the braces) in the
#: captured text: control characters that printed text does not plausibly hold.
MARK = "\x1e\x1fend of {}\x1f\x1e"
_MARK_OPEN, _MARK_CLOSE = MARK.split("{}")


def truncated(text: str, dropped: int) -> str:
    """``text`` with the marker saying that ``dropped`` more characters were not kept."""
    if not dropped:
        return text
    sep = "" if text.endswith("\n") or not text else "\n"
    return f"{text}{sep}[... {dropped} more characters of output dropped: an instance keeps " \
           f"{LIMIT}]"


@attrs.frozen
class FunctionLog:
    """What one instance printed.

    Attributes:
        function: the function's name.
        instance: the instance's index.
        text: the captured output (bounded, with the marker if it was cut).
    """

    function: str
    instance: int | None
    text: str

    def lines(self) -> list[str]:
        """The text's lines, each prefixed with the function and the instance."""
        where = self.function if self.instance is None else \
            f"{self.function}, instance {self.instance}"
        return [f"[{where}] {line}" for line in self.text.splitlines()]

    def to_data(self) -> dict[str, Any]:
        """As the server returns it."""
        return {"function": self.function, "instance": self.instance, "text": self.text}


# -- capture (the inline engine: per thread) -------------------------------------------------

class Buffer(io.TextIOBase):
    """Text written by one instance, kept up to :data:`LIMIT` characters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0
        self.marked = 0  # characters written when the last mark was made

    def mark(self, name: str) -> None:
        """End member ``name``'s output here, if anything was written since the last mark
        (outside the bound: a mark is never cut, and only kept characters count)."""
        written = self.kept + self.dropped
        if written > self.marked:
            self.parts.append(MARK.format(name))
            self.marked = written

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        room = LIMIT - self.kept
        if room > 0:
            self.parts.append(s[:room])
            self.kept += min(room, len(s))
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def text(self) -> str:
        """What was kept, with the truncation marker."""
        return truncated("".join(self.parts), self.dropped)


_local = threading.local()
_route_lock = threading.Lock()


class _Router(io.TextIOBase):
    """A process stream that sends what a capturing thread writes to its buffer, and
    everything else where it went before."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if getattr(_local, "capturing", False):
            buffer = _local.buffer
            if buffer is None:  # made on the first write: most functions print nothing
                buffer = _local.buffer = Buffer()
            return int(buffer.write(s))
        written = self.target.write(s)  # some streams (Ray's workers') answer None
        return len(s) if written is None else int(written)

    def flush(self) -> None:
        if not getattr(_local, "capturing", False):
            self.target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty …
        return getattr(self.target, name)


def begin_capture() -> None:
    """Capture what this thread writes to ``sys.stdout`` and ``sys.stderr`` from now on,
    until :func:`end_capture` (a microsecond: the inline engine does it per instance)."""
    if type(sys.stdout) is not _Router or type(sys.stderr) is not _Router:
        with _route_lock:
            if type(sys.stdout) is not _Router:
                sys.stdout = _Router(sys.stdout)
            if type(sys.stderr) is not _Router:
                sys.stderr = _Router(sys.stderr)
    _local.buffer = None
    _local.capturing = True


def end_capture() -> str:
    """Stop capturing this thread's output; what it wrote (bounded, with the marker)."""
    _local.capturing = False
    buffer, _local.buffer = _local.buffer, None
    return buffer.text() if buffer is not None else ""


def end_member(name: str) -> None:
    """Mark the end of what the fused chain's member ``name`` printed in the capture it
    runs under (the inline engine's, or a sandbox's streams), if it printed anything."""
    # the inline engine's buffer (made on the first write), else a sandbox's streams; a
    # member that printed nothing costs this look only (chains run many tiny members)
    buffer = getattr(_local, "buffer", None) or sys.stdout
    if type(buffer) is Buffer and buffer.kept + buffer.dropped > buffer.marked:
        buffer.mark(name)


def split(function: str, text: str) -> list[tuple[str, str]]:
    """``text`` captured from a unit of ``function`` as ``(function, text)`` pairs, one per
    member of a fused chain that printed (:func:`end_member`), or the whole under
    ``function``.  Text after the last mark (a truncation notice) goes to the last member."""
    if _MARK_OPEN not in text:
        return [(function, text)]
    pieces: list[tuple[str, str]] = []
    name, at = function, 0
    while (start := text.find(_MARK_OPEN, at)) >= 0:
        end = text.find(_MARK_CLOSE, start + len(_MARK_OPEN))
        if end < 0:
            break
        name = text[start + len(_MARK_OPEN):end]
        _add(pieces, name, text[at:start])
        at = end + len(_MARK_CLOSE)
    _add(pieces, name, text[at:])
    return pieces


def _add(pieces: list[tuple[str, str]], name: str, text: str) -> None:
    if not text:
        return
    if pieces and pieces[-1][0] == name:
        pieces[-1] = (name, pieces[-1][1] + text)
    else:
        pieces.append((name, text))


def plain(text: str) -> str:
    """``text`` without the marks of :func:`end_member` (as a user reads it)."""
    if _MARK_OPEN not in text:
        return text
    return "".join(piece for _, piece in split("", text))


# -- forwarding ------------------------------------------------------------------------------

class Collector:
    """The output of the instances of some runs, up to ``limit`` characters in all (then
    a last entry says how much was dropped).

    Attributes:
        logs: what was kept, in the order instances finished.
    """

    def __init__(self, limit: int = COLLECT_LIMIT) -> None:
        self.logs: list[FunctionLog] = []
        self.limit = limit
        self.kept = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def add(self, log: FunctionLog) -> None:
        """Keep ``log`` if there is room."""
        with self._lock:
            if self.kept + len(log.text) <= self.limit:
                self.logs.append(log)
                self.kept += len(log.text)
            else:
                self.dropped += len(log.text)

    def to_data(self) -> list[dict[str, Any]]:
        """As the server returns them."""
        with self._lock:
            data = [log.to_data() for log in self.logs]
            if self.dropped:
                data.append({"function": "", "instance": None, "text": f"[... {self.dropped} "
                             f"more characters of output dropped: a run keeps {self.limit}]"})
            return data


_sink: contextvars.ContextVar[Collector | None] = contextvars.ContextVar(
    "dandelion_function_logs", default=None)


@contextlib.contextmanager
def collect(collector: Collector | None = None) -> Iterator[Collector]:
    """Collect the output of every instance of the runs started in this context (besides
    forwarding it to the logger), in ``collector`` or a new one."""
    got = collector if collector is not None else Collector()
    token = _sink.set(got)
    try:
        yield got
    finally:
        _sink.reset(token)


def current_sink() -> Collector | None:
    """Where :func:`collect` gathers output in this context, if anywhere (a run reads it
    when it starts, on the caller's thread)."""
    return _sink.get()


_logger: Any = None


def forward(log: FunctionLog, sink: Collector | None) -> None:
    """Hand ``log`` to the :data:`LOGGER` logger and to ``sink``; what each member of a
    fused chain printed under that member's name (:func:`split`)."""
    global _logger
    if not log.text:
        return
    if _MARK_OPEN in log.text:
        for function, text in split(log.function, log.text):
            forward(FunctionLog(function, log.instance, text), sink)
        return
    if sink is not None:
        sink.add(log)
    if _logger is None:
        _logger = _function_logger()
    extra = {"function": log.function, "instance": log.instance}
    for line in log.lines():
        _logger.info(line, extra=extra)


def _function_logger() -> Any:
    import logging

    class Fallback(logging.Handler):
        """To ``stderr`` while logging is not configured (the root logger has no
        handler): function output is never silently lost."""

        def emit(self, record: logging.LogRecord) -> None:
            if not logging.getLogger().handlers:
                sys.stderr.write(record.getMessage() + "\n")

    logger = logging.getLogger(LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not any(type(h).__name__ == "Fallback" for h in logger.handlers):
        logger.addHandler(Fallback())
    return logger
