"""The engine interface: memory domains, contexts and compute engines.

The dispatcher runs one function instance like this::

    context = engine.domain.acquire()        # a context from the engine's memory domain
    context.place(inputs)                    # inputs at the documented layout
    engine.run(context, call)                # runs to completion (or raises)
    outputs = context.extract()              # one item tuple per declared result
    engine.domain.release(context)           # wiped and kept for reuse

Engines are found by name (``dandelion.backends.engines.<name>``, attribute ``Engine``), so adding
one edits no central list.
"""

from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import attrs

from dandelion.errors import DandelionError, FunctionTypeError
from dandelion.ir.nodes import FunctionSpec, Implementation
from dandelion.items import Item

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.runtime.batch import BatchRun

ItemSets = Sequence[Sequence[Item[Any]]]


@attrs.frozen(eq=False)
class FunctionCall:
    """What an engine needs to run one function: declaration, chosen implementation and the
    loaded artifact (for a Python function, a
    :class:`~dandelion.runtime.python_function.PythonFunction`)."""

    spec: FunctionSpec
    implementation: Implementation
    artifact: Any
    timeout: float | None = None


def check_outputs(spec: FunctionSpec, outputs: ItemSets) -> None:
    """Check what one instance left against its declaration: each one-item result holds
    exactly one item.  Checked where an instance's outputs are gathered, so that a function
    (a native one, a forged sandbox report, an I/O engine) that leaves none fails instead of
    handing ``None`` on, and one that leaves two is blamed instead of its consumer.

    Raises:
        FunctionTypeError: a one-item result with no item or several.
    """
    for i, result in enumerate(spec.results):
        if not result.type.is_set:
            n = len(outputs[i]) if i < len(outputs) else 0
            if n != 1:
                raise FunctionTypeError(
                    f"returned {'no item' if n == 0 else f'{n} items'} for result "
                    f"'{result.name}', which is one item ({result.type.element})",
                    hint="declare the result as a set (list[...]) to return any number "
                         "of items")


class Context(abc.ABC):
    """The memory a function instance sees: its inputs before, its outputs after.

    Attributes:
        logs: what the last invocation printed (its stdout and stderr, bounded: see
            :mod:`dandelion.runtime.logs`), set by the engine that ran it.
    """

    logs: str = ""

    @abc.abstractmethod
    def place(self, inputs: ItemSets) -> None:
        """Lay out the instance's inputs (one item sequence per parameter)."""

    @abc.abstractmethod
    def extract(self) -> list[tuple[Item[Any], ...]]:
        """The outputs the function left, one item tuple per declared result."""

    @abc.abstractmethod
    def wipe(self) -> None:
        """Forget inputs and outputs so the context can serve another invocation."""


class MemoryDomain(abc.ABC):
    """Hands out contexts and takes them back, wiped, for reuse."""

    def __init__(self) -> None:
        self._free: list[Context] = []
        self._lock = threading.Lock()

    @abc.abstractmethod
    def new_context(self) -> Context:
        """A fresh context of this domain."""

    def acquire(self) -> Context:
        """A wiped context, reused when one is free."""
        with self._lock:
            if self._free:
                return self._free.pop()
        return self.new_context()

    def release(self, context: Context) -> None:
        """Wipe ``context`` and keep it for the next invocation."""
        context.wipe()
        with self._lock:
            self._free.append(context)

    def close(self) -> None:
        """Release everything the domain holds."""
        with self._lock:
            self._free.clear()


class ObjectContext(Context):
    """A context of Python objects, for engines that share the worker's address space."""

    __slots__ = ("inputs", "outputs", "logs")

    def __init__(self) -> None:
        self.inputs: ItemSets = ()
        self.outputs: list[tuple[Item[Any], ...]] = []
        self.logs = ""

    def place(self, inputs: ItemSets) -> None:
        self.inputs = inputs

    def extract(self) -> list[tuple[Item[Any], ...]]:
        return self.outputs

    def wipe(self) -> None:
        self.inputs = ()
        self.outputs = []
        self.logs = ""


class ObjectDomain(MemoryDomain):
    """A memory domain of :class:`ObjectContext` s."""

    def new_context(self) -> Context:
        return ObjectContext()


class Invocation(abc.ABC):
    """A function started by :meth:`Engine.begin` that nobody waits for: whoever drives it
    (an event loop, :mod:`dandelion.runtime.handoff`) watches :attr:`fd` and calls
    :meth:`feed` whenever it is readable, until that says the invocation ended; then
    :meth:`outcome` (on a thread of its own where :meth:`needs_thread` says so).  Each
    invocation ends with one :meth:`end`, whatever happened.

    Attributes:
        fd: a descriptor that becomes readable when the engine has news of the invocation.
        timeout: its time limit in seconds (``None``: none), enforced by the driver, which
            then calls :meth:`end` and fails it with :meth:`timed_out`.
    """

    fd: int
    timeout: float | None

    @abc.abstractmethod
    def feed(self) -> bool:
        """Take what arrived on :attr:`fd` (never blocks); whether the invocation ended."""

    def needs_thread(self) -> bool:
        """Whether :meth:`outcome` may block (e.g. to learn how a sandbox died), so that an
        event loop must call it on another thread."""
        return False

    @abc.abstractmethod
    def outcome(self) -> float | None:
        """What :meth:`Engine.run` returns or raises for the ended invocation; its
        outputs are in the context, what it printed in ``context.logs``."""

    @abc.abstractmethod
    def timed_out(self) -> DandelionError:
        """The error of the invocation once it ran past :attr:`timeout`."""

    @abc.abstractmethod
    def end(self) -> None:
        """Stop what is left of the invocation and release it (idempotent)."""


class Engine(abc.ABC):
    """Runs functions of certain implementation kinds to completion, one at a time.

    Attributes:
        name: the engine's registry name.
        kinds: the implementation kinds it can run (``python``, ``native`` …).
        isolated: whether a function cannot touch the worker (for diagnostics and docs): it
            reads its inputs from a copy in memory of its own, never the worker's objects
            (:attr:`Backend.inputs_copied <dandelion.runtime.backend.Backend.inputs_copied>`).
        enforces_timeout: whether :meth:`run` itself stops a function at its timeout;
            otherwise the dispatcher gives up waiting and abandons the engine.
    """

    name: ClassVar[str] = "engine"
    kinds: ClassVar[frozenset[str]] = frozenset()
    isolated: ClassVar[bool] = False
    enforces_timeout: ClassVar[bool] = False

    def __init__(self) -> None:
        self.domain: MemoryDomain = ObjectDomain()

    def can_run(self, implementation: Implementation) -> bool:
        """Whether this engine runs ``implementation``."""
        return implementation.kind in self.kinds

    @abc.abstractmethod
    def run(self, context: Context, call: FunctionCall) -> float | None:
        """Run ``call`` on the inputs placed in ``context``, leaving its outputs there,
        and what it printed in ``context.logs`` (on failure: in the error's ``logs``).

        Returns:
            the seconds the function itself ran, where the engine measures that apart from
            its own overhead (the event stream reports it), else ``None``.

        Raises:
            FunctionError: the function failed (its own exception, a violation, a timeout).
        """

    def begin(self, context: Context, call: FunctionCall) -> Invocation | None:
        """Start ``call`` on the inputs placed in ``context`` without waiting for it: an
        :class:`Invocation` that an event loop drives to its end, with no thread between
        the loop and the function; several may be under way on one engine.  ``None``
        where this engine cannot start it so without blocking (the default): then call
        :meth:`run` on a thread.
        """
        return None

    def prepare(self, call: FunctionCall) -> None:  # noqa: B027 - optional, most need none
        """Get ready to run ``call`` soon, so that its first invocation does not wait for
        what the engine would set up then (the ``process`` engine starts the zygote that
        has the function's libraries imported).  May block; called off the request path.
        The default: nothing to do."""

    def wake_when_ready(self, call: FunctionCall, wake: Callable[[], None],
                        inputs: ItemSets = ()) -> bool:
        """After :meth:`begin` returned ``None`` for ``call`` on ``inputs``: arrange for
        ``wake`` to be called once (from any thread) when beginning it again may succeed
        (e.g. a sandbox was forked), and say so; ``False`` (the default) where it never
        will (then :meth:`run` it on a thread)."""
        return False

    def run_batch(self, call: FunctionCall, inputs: Sequence[ItemSets]) -> BatchRun | None:
        """Run several instances of ``call`` (``inputs``: each one's item sets) in one
        invocation, when this engine can (:mod:`dandelion.runtime.batch`).

        Returns:
            per instance, its outputs or a :class:`~dandelion.runtime.batch.Failed`, with
            what it printed; or ``None`` when the batch could not run as a whole (the
            engine cannot batch this call, or the batch crashed or timed out): the caller
            then runs the instances one by one, which finds the culprit.
        """
        return None

    def close(self) -> None:
        """Release the engine's resources."""
        self.domain.close()
