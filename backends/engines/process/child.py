"""What runs inside one sandbox: a process forked from the zygote, used once.

A **Python** sandbox is locked down in C right after the fork (``_sandboxc.zygote_loop``):
its channel becomes descriptor :data:`CHANNEL_FD`, every other descriptor is closed, fatal
signals are reported on the channel, rlimits (CPU, address space: runtime + memory limit)
and ``no_new_privs`` are set and the seccomp-bpf allow-list (:mod:`.filter`) is
installed — optionally after a warm-up run of a probe function.  Then it waits: it receives
the context's memfd, maps it, and only then reads the function's pickle and the inputs,
runs the function, writes the outputs into the context and reports (:func:`serve_filtered`).

A sandbox that may run **native** code stays unfiltered until assigned (:func:`serve`): it
maps the (worker-validated) segments of the ELF and calls its entry point under seccomp
strict mode.  Native functions normally get their sandboxes from the C zygote instead
(``c/native_zygote.c``), which follows the same protocol.

Either way the process then exits; it never serves a second invocation — unless its
zygote made it reusable (``reuse_sandboxes``): then it unmaps its context right after it
reports, and its zygote puts it back into the state it had while it waited for work
(``c/snapshot.h``), from which it serves the function's next invocation.
"""

from __future__ import annotations

import json
import mmap
import os
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from dandelion.backends.engines.process import _sandboxc
from dandelion.backends.engines.process.layout import (
    ELEMENT_CODES,
    ContextFull,
    add_outputs,
    read_items,
    write_inputs,
)
from dandelion.backends.engines.process.protocol import (
    ASSIGN,
    ASSIGN_CAPACITY_AT,
    ASSIGN_LENGTH_AT,
    CHANNEL_FD,
    DONE,
    DONE_TAG,
    KIND_NATIVE,
    KIND_PYTHON,
    MAX_REPORT,
    OKAY,
    OKAY_TAG,
    READY,
)
from dandelion.ir.types import ElementType
from dandelion.items import Item
from dandelion.runtime import batch as _batch  # noqa: F401 - batches unpickle it, offline
from dandelion.runtime import fused as _fused  # noqa: F401 - chains unpickle it, offline
from dandelion.runtime import pickling
from dandelion.runtime.logs import Buffer
from dandelion.runtime.tracebacks import user_frames


def prepare(cpu_seconds: int | None) -> None:
    """Lock down a freshly forked sandbox before it waits for work (off the critical path):
    close every descriptor but the channel, report fatal signals on it, RLIMIT_CORE/FSIZE/
    NPROC = 0, RLIMIT_CPU, no_new_privs (in C: it touches no Python objects)."""
    global _baseline
    _baseline = _sandboxc.prepare(CHANNEL_FD, cpu_seconds or 0)
    _quiet()


def _quiet() -> None:
    """Point ``print`` at a bounded buffer, whose text goes back with the report (the
    descriptors behind the old streams are closed in the sandbox).  The old stream objects
    are kept: tearing them down would flush and free inherited objects (copying their
    pages) for nothing.  Nothing to do in a sandbox whose zygote did it (:func:`quiet`)."""
    if sys.stdin is None and isinstance(sys.stdout, Buffer) and sys.stderr is sys.stdout:
        return
    _kept.append((sys.stdin, sys.stdout, sys.stderr))
    sys.stdin = None
    sys.stdout = sys.stderr = Buffer()


def quiet() -> None:
    """In a Python zygote, right before its control loop: the streams of every sandbox it
    forks (:func:`_quiet`), set up once there.  Each sandbox starts with its own copy of
    the zygote's empty buffer, rather than making one: that wrote to, and so copied, some
    25 pages it shares with the zygote (about 0.1 ms of page faults per invocation).
    :func:`speak` undoes it."""
    _quiet()


def speak() -> None:
    """Undo :func:`quiet`: a zygote whose control loop failed says why on its own
    streams."""
    if _kept:
        sys.stdin, sys.stdout, sys.stderr = _kept.pop()


def _printed() -> str:
    """What the function printed (nothing outside a sandbox: the zygote's warm-up).  Asked
    after every invocation, most of which print nothing: ``type(...) is``, not
    ``isinstance`` (``Buffer`` is an ``io`` class, whose ``isinstance`` runs
    ``ABCMeta.__instancecheck__`` in Python), and no text made of nothing."""
    out = sys.stdout
    return out.text() if type(out) is Buffer and (out.parts or out.dropped) else ""


_kept: list[Any] = []


_baseline = 0


def warm_up(samples: Sequence[bytes]) -> None:
    """Run the runtime's probe functions through the very code an invocation runs
    (:func:`_run_python`), each on a scratch context.

    Called in the zygote (one-time lazy initialization happens there, not in every
    sandbox) and in each sandbox before it waits (the copy-on-write faults of the paths an
    invocation touches are taken off the critical path, and the interpreter's inline caches
    of those paths are warm).  Nothing here is specific to any user function: ``samples``
    are the pickles of :func:`probe` and, where numpy is loaded, of a matrix product.  The
    path of a report with text (what a function printed, an error) is left out: the zygote
    builds one once (:func:`warm_reports`), a sandbox only for an invocation that needs it.
    """
    for sample in samples:
        artifact = pickling.loads(sample)
        (pname, pview), = artifact.params
        (rname, rview), = artifact.results
        value = sys.modules["numpy"].arange(16).reshape(4, 4) \
            if pview.type.element is ElementType.NDARRAY else 1
        scratch = bytearray(64 * 1024)
        capacity = write_inputs(scratch, [(pname, ELEMENT_CODES[pview.type.element],
                                           [Item(value)])],
                                [(rname, ELEMENT_CODES[rview.type.element])], 16 * 1024)
        _run_python(memoryview(scratch)[:capacity], sample)


def warm_reports() -> None:
    """In the zygote: build a report with text once (the JSON encoder's one-time setup).
    Not in each sandbox's warm-up, where it copied 25-40 pages for the invocations that
    print or fail."""
    _message({"ok": False, "kind": "error", "message": "probe"})


def probe_matrix() -> Any:
    """The matrix probe (numpy preloaded by the zygote): ``m @ m.T``."""
    np = sys.modules["numpy"]

    def probe_gram(m: Any) -> Any:
        return m @ m.T

    probe_gram.__annotations__ = {"m": np.ndarray, "return": np.ndarray}
    return probe_gram


def probe(x: int) -> int:
    """The function :func:`warm_up` runs."""
    return x + 1


def limit_and_filter(baseline: int, memory_limit: int, program: bytes, reuse: bool = False
                     ) -> None:
    """Cap the address space at ``baseline + memory_limit``, track the pages this sandbox
    writes (``reuse``: its zygote may reset it, ``c/snapshot.h``) and install the filter."""
    limit = baseline + memory_limit
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if reuse:
        _sandboxc.track()  # on failure it serves one invocation, as others do
    _sandboxc.install_filter(program)


def serve_filtered(baseline: int, reuse: bool = False) -> NoReturn:
    """Body of a Python sandbox forked by :func:`_sandboxc.zygote_loop`: already prepared,
    limited and filtered; waits for one invocation, runs it, exits — or, ``reuse``, unmaps
    its context right after it reports (``_sandboxc.finish``), so that its zygote may reset
    it to the state it had while it waited (``c/snapshot.h``), back in the wait below."""
    global _baseline
    _baseline = baseline
    view = None
    try:
        _quiet()
        # --- no system interface but the channel ---
        os.write(CHANNEL_FD, READY)
        # header, context and code in one call (one message from the worker)
        msg, view, payload = _sandboxc.receive(CHANNEL_FD, ASSIGN.size, ASSIGN_CAPACITY_AT,
                                                  ASSIGN_LENGTH_AT)
        if payload is None:
            os._exit(0)  # the worker let this sandbox go unused
        if ASSIGN.unpack(msg)[1] != KIND_PYTHON:
            raise RuntimeError("a filtered sandbox runs only Python functions")
        if view is None:  # the code ahead of its invocation: made ready while none waits
            ahead = _ahead(payload)
            msg, view, payload = _sandboxc.receive(CHANNEL_FD, ASSIGN.size,
                                                      ASSIGN_CAPACITY_AT, ASSIGN_LENGTH_AT)
            if view is None or payload is None or payload:
                os._exit(0)  # let go unused, or a second payload: not the protocol
            if isinstance(ahead, BaseException):
                raise ahead  # reported as the invocation's, as if unpickled now
            report = _run_python(view, ahead)
        else:
            report = _run_python(view, payload)
    except BaseException as e:  # noqa: BLE001 - a sandbox reports, never raises
        report = _error_report(e)
    _sandboxc.finish(CHANNEL_FD, report, view if reuse else None)
    os._exit(0)  # not reached


def serve(program: bytes, cpu_seconds: int | None, samples: Sequence[bytes] = ()
          ) -> NoReturn:
    """Body of an unfiltered sandbox (native functions without the C zygote, or Python):
    prepare, wait for one invocation, then filter (Python) or strict mode (native), run it,
    exit."""
    try:
        prepare(cpu_seconds)
        if samples:
            warm_up(samples)
        os.write(CHANNEL_FD, READY)
        msg, memfd = _sandboxc.wait_assignment(CHANNEL_FD, ASSIGN.size)
        if len(msg) != ASSIGN.size or memfd < 0:
            os._exit(0)  # the worker let this sandbox go unused
        magic, kind, capacity, as_limit, payload_len, entry, n_segments = ASSIGN.unpack(msg)
        ctx = mmap.mmap(memfd, capacity)
        os.close(memfd)
        if as_limit:  # memory limit on top of what the runtime and the context take
            limit = _baseline + capacity + as_limit
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if kind == KIND_NATIVE:
            _run_native(ctx, payload_len, entry, n_segments)
        _sandboxc.install_filter(program)
        # --- from here on: no system interface but the channel ---
        report = _run_python(ctx, _read_exact(payload_len))
    except BaseException as e:  # noqa: BLE001 - a sandbox reports, never raises
        report = _error_report(e)
    _sandboxc.finish(CHANNEL_FD, report)  # report, wait for the worker to let go, exit
    os._exit(0)  # not reached


def _error_report(e: BaseException) -> bytes:
    """The report of an exception raised in the sandbox."""
    return _message({"ok": False, "kind": "error", "type": type(e).__name__,
                     "module": type(e).__module__,
                     "message": getattr(e, "message", None) or str(e),
                     "hint": getattr(e, "hint", None), "frames": user_frames(e.__traceback__),
                     "logs": _printed()})


def _read_exact(n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(CHANNEL_FD, min(n, 1 << 20))
        if not chunk:
            os._exit(0)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _message(body: dict[str, Any]) -> bytes:
    """A ``DONE`` report (a failed run, or one that printed), as sent on the channel."""
    data = json.dumps(body, default=str).encode()[:MAX_REPORT]
    head: bytes = DONE.pack(DONE_TAG, len(data))
    return head + data


def _ahead(payload: bytes) -> Any:
    """The function of code sent ahead of its invocation, unpickled while the sandbox
    waits; what unpickling it raised, to be reported when the invocation comes."""
    try:
        return pickling.loads(payload)
    except BaseException as e:  # noqa: BLE001 - the invocation reports it
        return e


def _run_python(ctx: Any, payload: bytes | Any) -> bytes:
    """Unpickle the function (``payload``: its pickle, or the function unpickled ahead),
    run it on the inputs in ``ctx`` (a writable buffer as long as the context's capacity),
    write its outputs there; the message to report (``OKAY`` and the function's time, or a
    ``DONE`` report)."""
    artifact = pickling.loads(payload) if isinstance(payload, bytes) else payload
    inputs = read_items(ctx, len(ctx), False, None, False)  # as declared in the set table
    started = time.perf_counter_ns()
    try:
        outputs = artifact.invoke(inputs)
    except MemoryError:
        del inputs  # room to build the report in
        return _message({"ok": False, "kind": "memory", "logs": _printed()})
    elapsed = time.perf_counter_ns() - started
    try:
        for r, ((_name, view), items) in enumerate(zip(artifact.results, outputs, strict=True)):
            add_outputs(ctx, r, ELEMENT_CODES[view.type.element], items)
    except ContextFull as e:
        return _message({"ok": False, "kind": "output", "needed": e.needed, "left": e.left,
                         "logs": _printed()})
    printed = _printed()
    if printed:  # a success with what the function printed
        return _message({"ok": True, "elapsed": elapsed, "logs": printed})
    report: bytes = OKAY.pack(OKAY_TAG, elapsed)
    return report


def _run_native(ctx: mmap.mmap, payload_len: int, entry: int, n_segments: int) -> NoReturn:
    _sandboxc.load_segments(CHANNEL_FD, n_segments, payload_len)
    _sandboxc.run_native(entry, _sandboxc.address_of(ctx), CHANNEL_FD)
    os._exit(0)  # not reached: run_native exits
