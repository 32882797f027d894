"""What runs inside one sandbox: a process forked from the zygote, used once.

A **Python** sandbox is locked down in C right after the fork (``_sandboxc.fork_sandbox``):
its channel becomes descriptor :data:`CHANNEL_FD`, every other descriptor is closed, fatal
signals are reported on the channel, rlimits (CPU, address space: runtime + memory limit)
and ``no_new_privs`` are set and the seccomp-bpf allow-list (:mod:`._sandbox_filter`) is
installed — optionally after a warm-up run of a probe function.  Then it waits: it receives
the context's memfd, maps it, and only then reads the function's pickle and the inputs,
runs the function, writes the outputs into the context and reports (:func:`serve_filtered`).

A sandbox that may run **native** code stays unfiltered until assigned (:func:`serve`): it
maps the (worker-validated) segments of the ELF and calls its entry point under seccomp
strict mode.  Native functions normally get their sandboxes from the C zygote instead
(``_sandbox_native.c``), which follows the same protocol.

Either way the process then exits; it never serves a second invocation.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import pickle
import resource
import struct
import sys
import time
import types
from typing import Any, NoReturn

from dandelion.backends import _sandboxc
from dandelion.backends._sandbox_layout import (
    CODE_ELEMENTS,
    ContextFull,
    Writer,
    decode_view,
    encode_parts,
)
from dandelion.items import Item

CHANNEL_FD = 3
#: Assignment header: magic, kind (1 python, 2 native), capacity, memory limit,
#: payload length, native entry point, native segment count.
ASSIGN = struct.Struct("<4sIQQQQI")
KIND_PYTHON, KIND_NATIVE = 1, 2
#: Native segment: vaddr, memsz, prot, offset, filesz.
SEGMENT = struct.Struct("<QQiQQ")
#: Report of a Python run: tag b"DONE", length of the JSON body.
DONE = struct.Struct("<4sI")
#: Report of a successful Python run: tag b"OKAY", nanoseconds spent in the function.
OKAY = struct.Struct("<4sq")
#: Largest report body a worker accepts.
MAX_REPORT = 1 << 20


class _Sink(io.TextIOBase):
    """Where ``print`` goes inside a sandbox: a bounded buffer, never a descriptor."""

    def __init__(self, limit: int = 64 * 1024) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if self.size < self.limit:
            self.parts.append(s[: self.limit - self.size])
            self.size += len(s)
        return len(s)

    def text(self) -> str:
        return "".join(self.parts)


def prepare(cpu_seconds: int | None) -> None:
    """Lock down a freshly forked sandbox before it waits for work (off the critical path):
    close every descriptor but the channel, report fatal signals on it, RLIMIT_CORE/FSIZE/
    NPROC = 0, RLIMIT_CPU, no_new_privs (in C: it touches no Python objects)."""
    global _baseline
    _baseline = _sandboxc.prepare(CHANNEL_FD, cpu_seconds or 0)
    _quiet()


def _quiet() -> None:
    """Point ``print`` at a bounded buffer; the descriptors behind the old streams are
    closed.  The old stream objects are kept: tearing them down would flush and free
    inherited objects (copying their pages) for nothing."""
    _kept.append((sys.stdin, sys.stdout, sys.stderr))
    sys.stdin = None
    sys.stdout = sys.stderr = _Sink()


_kept: list[Any] = []


_baseline = 0


def warm_up(sample: bytes) -> None:
    """Run a trivial function through the whole Python path, in a scratch context.

    Called in the zygote (one-time lazy initialization happens there, not in every
    sandbox) and in each sandbox before it waits (the copy-on-write faults of the paths an
    invocation touches are taken off the critical path).  Nothing here is specific to any
    user function: ``sample`` is the runtime's own probe function.
    """
    from dandelion.backends._sandbox_layout import Writer
    from dandelion.ir.types import ElementType

    scratch = bytearray(64 * 1024)
    w = Writer(scratch)
    w.write_inputs(len(scratch), [("x", [(ElementType.INT, [b"\x01" + bytes(7)], 0, "")])],
                   [("result", ElementType.INT)])
    artifact = pickle.loads(sample)
    inputs = [[Item(decode_view(d, CODE_ELEMENTS[c], copy=False), k, n)
               for d, k, n, c in items] for items in w.inputs()]
    for r, items in enumerate(artifact.invoke(inputs)):
        for item in items:
            element, parts = encode_parts(item.value, ElementType.INT)
            w.add_output(r, element, parts, item.key, item.name)
    json.dumps({"ok": False, "kind": "error", "message": "probe"})
    if "numpy" in sys.modules:  # the ndarray path: .npy in and out of a context, a product
        import numpy as np
        from typeguard import check_type

        m = np.arange(16, dtype=np.int64).reshape(4, 4)
        w = Writer(scratch)
        w.write_inputs(len(scratch), [("m", [(*encode_parts(m, ElementType.NDARRAY), 0, "")])],
                       [("result", ElementType.NDARRAY)])
        (data, _k, _n, _c), = w.inputs()[0]
        view = decode_view(data, ElementType.NDARRAY, copy=False)
        check_type(view, np.ndarray)
        w.add_output(0, *encode_parts(view @ view.T, ElementType.NDARRAY), 0, "")


def probe(x: int) -> int:
    """The function :func:`warm_up` runs."""
    return x + 1


def limit_and_filter(baseline: int, memory_limit: int, program: bytes) -> None:
    """Cap the address space at ``baseline + memory_limit`` and install the filter."""
    limit = baseline + memory_limit
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _sandboxc.install_filter(program)


def serve_filtered(baseline: int) -> NoReturn:
    """Body of a Python sandbox forked by :func:`_sandboxc.fork_sandbox`: already prepared,
    limited and filtered; waits for one invocation, runs it, exits."""
    global _baseline
    _baseline = baseline
    try:
        _quiet()
        # --- no system interface but the channel ---
        msg, view = _sandboxc.map_context(CHANNEL_FD, ASSIGN.size, 8)
        if view is None:
            os._exit(0)  # the worker let this sandbox go unused
        _magic, kind, _cap, _mem, payload_len, _entry, _n = ASSIGN.unpack(msg)
        if kind != KIND_PYTHON:
            raise RuntimeError("a filtered sandbox runs only Python functions")
        _run_python(view, payload_len)
    except BaseException as e:  # noqa: BLE001 - a sandbox reports, never raises
        _report_error(e)
    os._exit(0)


def serve(program: bytes, cpu_seconds: int | None, sample: bytes | None = None) -> NoReturn:
    """Body of an unfiltered sandbox (native functions without the C zygote, or Python):
    prepare, wait for one invocation, then filter (Python) or strict mode (native), run it,
    exit."""
    try:
        prepare(cpu_seconds)
        if sample is not None:
            warm_up(sample)
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
        _run_python(ctx, payload_len)
    except BaseException as e:  # noqa: BLE001 - a sandbox reports, never raises
        _report_error(e)
    os._exit(0)


def _report_error(e: BaseException) -> None:
    _report({"ok": False, "kind": "error", "type": type(e).__name__,
             "module": type(e).__module__, "message": getattr(e, "message", None) or str(e),
             "hint": getattr(e, "hint", None), "traceback": _traceback(e.__traceback__)})


def _read_exact(n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(CHANNEL_FD, min(n, 1 << 20))
        if not chunk:
            os._exit(0)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _report(body: dict[str, Any]) -> None:
    data = json.dumps(body, default=str).encode()[:MAX_REPORT]
    out = DONE.pack(b"DONE", len(data)) + data
    while out:
        n = os.write(CHANNEL_FD, out)
        out = out[n:]


def _traceback(tb: types.TracebackType | None) -> str:
    # traceback.format_* would read source files (linecache): not possible in here
    lines = []
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb = tb.tb_next
    return "\n".join(lines[-20:])


def _run_python(ctx: Any, payload_len: int) -> None:
    payload = _read_exact(payload_len)
    artifact = pickle.loads(payload)
    writer = Writer(ctx)
    params = artifact.params
    inputs = []
    for (_name, view), items in zip(params, writer.inputs(), strict=False):
        declared = view.type.element
        inputs.append([Item(decode_view(data, CODE_ELEMENTS[code] if code else declared,
                                        copy=False), key, name)
                       for data, key, name, code in items])
    started = time.perf_counter_ns()
    try:
        outputs = artifact.invoke(inputs)
    except MemoryError:
        inputs = outputs = None  # type: ignore[assignment]
        _report({"ok": False, "kind": "memory"})
        return
    elapsed = time.perf_counter_ns() - started
    try:
        for r, ((_name, view), items) in enumerate(zip(artifact.results, outputs, strict=True)):
            for item in items:
                element, parts = encode_parts(item.value, view.type.element)
                writer.add_output(r, element, parts, item.key, item.name)
    except ContextFull as e:
        _report({"ok": False, "kind": "output", "needed": e.needed, "left": e.left})
        return
    os.write(CHANNEL_FD, OKAY.pack(b"OKAY", elapsed))


def _run_native(ctx: mmap.mmap, payload_len: int, entry: int, n_segments: int) -> NoReturn:
    table = _read_exact(SEGMENT.size * n_segments)
    segments = [SEGMENT.unpack_from(table, SEGMENT.size * i) for i in range(n_segments)]
    image = _read_exact(payload_len)
    _sandboxc.map_segments(segments, image)
    del image, table
    _sandboxc.run_native(entry, _sandboxc.address_of(ctx), CHANNEL_FD)
    os._exit(0)  # not reached: run_native exits
