"""Shared-memory contexts for sandboxes: one memfd per context, mapped by the worker and,
for one invocation, by the sandbox (layout: :mod:`.layout`).

A context is placed with the instance's items and laid out once the function's parameter
types are known (:meth:`SharedContext.layout`, called by the engine); outputs are decoded
with the declared result types.  A wiped context reads as zeros, so nothing a sandbox wrote
reaches the next invocation.  Wiping finds every page the file holds (``SEEK_DATA``), so a
sandbox that scribbled outside the tables is wiped too.  Up to :data:`WIPE_IN_PLACE` written
bytes are zeroed in place: their pages stay allocated, so the next invocation neither faults
them in again nor has the kernel zero them a second time (a batch of 50 128×128 matrices
writes ~13 MiB; punched out and faulted back, those pages cost it ~0.3 ms an instance).
Beyond that the file is punched out and its pages go back to the kernel.

A context goes back to its domain only once no sandbox can reach it.  A single-use sandbox
is killed after its invocation, and runs on until the kill lands on its CPU; a reusable one
is reset by its zygote, and until the reset has stopped it (or it was killed and exited) it
may still run.  Either may map and write the context meanwhile — a function that forges its
report runs on — so the engine *holds* the context (:meth:`SharedDomain.hold`) and the
domain keeps it out of use until the sandbox has exited, reaped by its zygote, or its reset
answered (:meth:`SharedDomain.unhold`), whenever its release comes.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from typing import Any

from dandelion.backends.engines.process import _sandboxc
from dandelion.backends.engines.process.layout import read_items, write_inputs
from dandelion.items import Item
from dandelion.runtime.engine import Context, ItemSets, MemoryDomain

_MIB = 1 << 20
#: Up to this many written bytes a wipe zeroes in place (the pages stay allocated for the
#: next invocation); beyond, it punches the file out (they go back to the kernel).  What
#: a worker keeps between invocations is at most this much per context.
WIPE_IN_PLACE = 64 * _MIB


def _round(n: int, to: int = _MIB) -> int:
    return (n + to - 1) // to * to


class SharedContext(Context):
    """A memfd-backed context.

    Attributes:
        fd: the memfd (passed to the sandbox).
        capacity: bytes the current invocation may use (inputs, heap, output table).
    """

    def __init__(self, size: int = 4 * _MIB) -> None:
        self.fd = os.memfd_create("dandelion-context", os.MFD_CLOEXEC)
        self.size = 0
        self.mm: mmap.mmap | None = None
        self.capacity = 0
        self.inputs: ItemSets = ()
        #: element code of each result of the laid-out invocation
        self.declared = b""
        #: a sandbox that may still map it has not been stopped yet (:meth:`SharedDomain.hold`)
        self.held = False
        #: released while held: it goes back to the domain once no longer held
        self.released = False
        self._grow(size)

    def _grow(self, size: int) -> None:
        size = _round(size)
        if size <= self.size:
            return
        os.ftruncate(self.fd, size)
        if self.mm is not None:
            self.mm.close()
        self.mm = mmap.mmap(self.fd, size)
        self.size = size

    def place(self, inputs: ItemSets) -> None:
        """Keep the items; :meth:`layout` writes them once their types are known."""
        self.inputs = inputs

    def layout(self, params: Sequence[tuple[str, int]], results: list[tuple[str, int]],
               declared: bytes, output_limit: int) -> None:
        """Write the placed inputs at the documented layout, leaving ``output_limit`` bytes
        for outputs (each large item is copied exactly once, into the context).

        Args:
            params: name and element code of each parameter.
            results: name and element code of each result.
            declared: the element codes of ``results``, as bytes.
            output_limit: bytes the function may write.

        Raises:
            EncodingError: an input cannot be encoded as its parameter's element type.
        """
        inputs = self.inputs
        sets = [(name, code, inputs[i] if i < len(inputs) else ())
                for i, (name, code) in enumerate(params)]
        assert self.mm is not None
        capacity = write_inputs(self.mm, sets, results, output_limit)
        if capacity < 0:
            self._grow(-capacity)
            capacity = write_inputs(self.mm, sets, results, output_limit)
        self.capacity = capacity
        self.declared = declared

    def extract(self) -> list[tuple[Item[Any], ...]]:
        """The outputs, decoded with the declared result types (copied out of the context).

        Raises:
            EncodingError: the sandbox left malformed outputs.
        """
        assert self.mm is not None
        return list(read_items(self.mm, self.capacity, True, self.declared, True))

    def wipe(self) -> None:
        self.inputs = ()
        self.declared = b""
        self.capacity = 0
        assert self.mm is not None
        # zero what was written in place (pages stay mapped for the next invocation);
        # contexts that held much data give their pages back instead
        _sandboxc.wipe(self.fd, self.mm, WIPE_IN_PLACE)

    def close(self) -> None:
        """Unmap and close the memfd."""
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # a view is still alive; the kernel frees it at exit
                pass
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SharedDomain(MemoryDomain):
    """A memory domain of :class:`SharedContext` s, reused after wiping."""

    def __init__(self, size: int = 4 * _MIB) -> None:
        super().__init__()
        self.initial_size = size
        self._all: list[SharedContext] = []
        self._closed = False

    def new_context(self) -> Context:
        ctx = SharedContext(self.initial_size)
        with self._lock:
            self._all.append(ctx)
        return ctx

    def hold(self, context: SharedContext) -> None:
        """Keep ``context`` out of use, released or not, until :meth:`unhold`: the sandbox
        that ran in it may still run and map it (killed, until it has exited; a reusable
        one, until its reset)."""
        with self._lock:
            context.held = True

    def unhold(self, context: SharedContext) -> None:
        """No sandbox reaches ``context`` any more: release it now if its release came
        while it was held (called from the zygote's reader thread: never raises for a
        context closed with its domain meanwhile)."""
        with self._lock:
            context.held = False
            released, context.released = context.released, False
            if not released or self._closed:
                return
        try:
            super().release(context)
        except (AssertionError, ValueError, OSError):
            if not self._closed:  # (closed with its domain meanwhile: nothing to keep)
                raise

    def release(self, context: Context) -> None:
        """Wipe ``context`` and keep it for the next invocation, or, while it is held,
        once it is no longer (:meth:`unhold`)."""
        assert isinstance(context, SharedContext)
        with self._lock:
            if context.held:
                context.released = True
                return
        super().release(context)

    def close(self) -> None:
        super().close()
        with self._lock:
            self._closed = True
            contexts, self._all = self._all, []
        for ctx in contexts:
            ctx.close()
