"""The ``process`` engine: every invocation in a fresh, single-use, MMU-isolated sandbox.

A sandbox is a process forked from a *zygote* — a lean Python process that holds only the
trusted runtime (:mod:`.zygote`) — ahead of time, generic and empty.  For an
invocation the engine lays the inputs out in a shared-memory context
(:mod:`.memory`), takes a ready sandbox, passes it the context and the function's
code, and waits for its report.  Inside (:mod:`.child`) the sandbox has closed
every descriptor but its channel, set ``no_new_privs`` and rlimits on CPU time and address
space, and installs a seccomp-bpf allow-list before it deserializes the code and the
inputs; a native function runs under seccomp strict mode.  The sandbox exits afterwards —
but for one made ready for a Python function (``reuse_sandboxes``, on by default where the
kernel can): it is reset by its zygote to the state it had before any code reached it
(``c/snapshot.h``) and serves that function again, provably as a fresh one would.

A forbidden system call, the memory or CPU limit, a crash or the wall-clock timeout fail
that invocation only, with a :class:`~dandelion.errors.SandboxViolation` or
:class:`~dandelion.errors.FunctionTimeout` that names the function and what happened.
See ``docs/isolation.rst``.
"""

from __future__ import annotations

import builtins
import collections
import json
import os
import signal
import threading
from typing import Any, Callable, NoReturn, Sequence

from dandelion import errors
from dandelion.backends.engines.process import _sandboxc, native, pool
from dandelion.backends.engines.process.ahead import Ahead
from dandelion.backends.engines.process.filter import syscall_name
from dandelion.backends.engines.process.layout import ELEMENT_CODES
from dandelion.backends.engines.process.memory import SharedContext, SharedDomain
from dandelion.backends.engines.process.protocol import (
    ASSIGN,
    ASSIGN_MAGIC,
    DONE,
    DONE_TAG,
    GONE,
    GONE_TAG,
    KIND_NATIVE,
    KIND_PYTHON,
    MAX_REPORT,
    NATV,
    NATV_TAG,
    OKAY,
    OKAY_TAG,
    READY,
    SEGMENT,
)
from dandelion.codec import ndarray_class
from dandelion.errors import (
    BackendError,
    DandelionError,
    FunctionError,
    FunctionTimeout,
    SandboxViolation,
)
from dandelion.ir.nodes import FunctionSpec, Implementation, Param
from dandelion.ir.types import DataType, ElementType
from dandelion.runtime.batch import BatchedFunction, BatchRun, Failed
from dandelion.runtime.engine import Context, FunctionCall, Invocation, ItemSets
from dandelion.runtime.engine import Engine as EngineBase
from dandelion.runtime.store import ArtifactStore, StoredCode, default_store
from dandelion.runtime.tracebacks import format_traceback

_MIB = 1 << 20
#: The largest code :meth:`ProcessEngine.begin` hands to a sandbox: well inside what a
#: channel's buffer takes at once, so that handing it over never waits for the sandbox.
BEGIN_MAX_PAYLOAD = 64 * 1024
#: How much of native functions' segments, cut out of their ELFs, the engine keeps.
CUT_CACHE_BYTES = 64 * _MIB
_SIGNALS = {signal.SIGSEGV: "invalid memory access", signal.SIGBUS: "bus error",
            signal.SIGFPE: "arithmetic fault", signal.SIGILL: "illegal instruction",
            signal.SIGABRT: "abort", signal.SIGTRAP: "trap"}
_HINT_SYSCALL = ("a compute function runs without a system interface (no files, network, "
                 "processes, signals or clocks beyond reading time); move I/O into an I/O "
                 "function, and import libraries at module level so the sandbox preloads "
                 "them")


class ProcessEngine(EngineBase):
    """Runs Python and native functions in fresh seccomp sandboxes.

    Args:
        memory_limit: bytes of address space a function may use beyond the runtime and its
            context (RLIMIT_AS; default 1 GiB).
        cpu_limit: seconds of CPU time per sandbox (RLIMIT_CPU; default 300; ``None``: none).
        output_limit: bytes of output (heap) a function may write into its context
            (default 64 MiB).
        pool_size: generic sandboxes kept forked ahead of time per zygote (default: two per
            core).
        store: the :class:`~dandelion.runtime.store.ArtifactStore` (default: the
            process-wide one); ``artifact_dir`` makes a store in that directory instead.
        warm_sandboxes: run a probe function through each generic sandbox before it
            waits, so that the page faults of the Python path happen off the critical path
            (halves the latency of a small function at some CPU per sandbox).  Only while
            fewer of the zygote's invocations run than there are CPUs: sandboxes forked
            while every CPU runs one skip the warm-up (:meth:`.pool.Zygote.adapt`).
        ready_functions: Python functions at most (the most recently invoked ones that
            repeat) whose next invocation begun without waiting (:meth:`begin`: from an
            event loop, or from a script's thread for a run of one call,
            :mod:`dandelion.runtime.here`) finds a sandbox given its code ahead, unpickled
            already (:mod:`.ahead`; default: a
            quarter of ``pool_size``, at least 1; 0: none).
        reuse_sandboxes: a sandbox made ready for a function is reset to a snapshot after
            each invocation of it that succeeded, and made ready for it again, instead of
            ended and replaced by a fresh fork (``docs/isolation.rst``, reusing a sandbox;
            Linux 6.7 or later, x86-64; default on: where the kernel cannot, sandboxes are
            forked per invocation as with it off).  It serves only that function's code,
            and any difference its reset cannot undo discards it.  A function has up to
            ``pool_size // ready_functions`` of them (those of its invocations that overlap
            make more), all discarded when it is pushed out or registered again.
    """

    name = "process"
    kinds = frozenset({"python", "native"})
    isolated = True
    enforces_timeout = True

    def __init__(self, memory_limit: int = 1 << 30, cpu_limit: int | None = 300,
                 output_limit: int = 64 * _MIB, pool_size: int | None = None,
                 store: ArtifactStore | None = None, artifact_dir: str | None = None,
                 warm_sandboxes: bool = True, ready_functions: int | None = None,
                 reuse_sandboxes: bool = True) -> None:
        super().__init__()
        self.memory_limit = memory_limit
        self.cpu_limit = cpu_limit
        self.output_limit = output_limit
        self.pool_size = pool_size if pool_size is not None else 2 * (os.cpu_count() or 1)
        self.warm_sandboxes = warm_sandboxes
        self.store = store or (ArtifactStore(artifact_dir) if artifact_dir else default_store())
        self.domain = SharedDomain()
        self.reuse_sandboxes = reuse_sandboxes
        functions = max(1, self.pool_size // 4) if ready_functions is None \
            else ready_functions
        # as many reusable sandboxes in all as the pool holds generic ones
        self.ahead = Ahead(functions, memory_limit, reuse_sandboxes,
                           self.pool_size // max(1, functions))
        self.lean = self._zygote(())
        self._zygotes: dict[Any, pool.Zygote] = {}  # requires -> zygote
        #: native digest -> (segment table, the segments' bytes) as a sandbox takes them;
        #: least recently used first, at most CUT_CACHE_BYTES (always the newest one)
        self._tables: collections.OrderedDict[str, tuple[StoredCode, tuple[bytes, bytes]]] = \
            collections.OrderedDict()
        self._tables_size = 0
        self._tables_lock = threading.Lock()
        #: id(spec) -> (spec, params, results, declared) as a context's layout takes them
        self._shapes: dict[int, tuple[Any, list[Any], list[Any], bytes]] = {}
        #: (id(spec), k) -> the spec of a batch of k instances; id(artifact) -> its wrapper
        self._batch_specs: dict[tuple[int, int], tuple[FunctionSpec, FunctionSpec]] = {}
        self._batched: dict[int, tuple[Any, BatchedFunction]] = {}

    def _zygote(self, preload: tuple[str, ...]) -> pool.Zygote:
        return pool.zygote(preload, self.pool_size, self.cpu_limit, self.warm_sandboxes,
                           memory_limit=self.memory_limit, reuse=self.reuse_sandboxes)

    def native_zygote(self) -> pool.Zygote:
        """The zygote of native sandboxes: the C one when it can be built, else unfiltered
        Python sandboxes (which can enter strict mode)."""
        z = self._zygotes.get("<native>")
        if z is None or z.closed:
            exe = native.executable()
            z = self._zygotes["<native>"] = pool.zygote(
                (), self.pool_size, self.cpu_limit, False, exe)
        return z

    def zygote_for(self, code: StoredCode) -> pool.Zygote:
        """The zygote whose sandboxes have every library ``code`` needs preloaded."""
        return self._preloading(code.requires)

    def _preloading(self, requires: tuple[str, ...]) -> pool.Zygote:
        """The zygote with ``requires`` loaded (started on first use): the lean one if it
        has them all."""
        z = self._zygotes.get(requires)
        if z is None or z.closed:
            lean = self.lean
            if lean.closed:
                lean = self.lean = self._zygote(())
            missing = tuple(r for r in requires if r not in lean.modules)
            z = self._zygotes[requires] = self._zygote(missing) if missing else lean
        return z

    def prepare(self, call: FunctionCall) -> None:
        """Start the zygote that the sandboxes of ``call`` fork from (its code stored now,
        if it is not yet): the first function needing, say, numpy waited for it (~0.2 s)."""
        impl = call.implementation
        self._zygote_of(self.store.get(impl.digest, call.artifact, impl.kind), call, ())

    def run(self, context: Context, call: FunctionCall) -> float | None:
        assert isinstance(context, SharedContext)
        code = self._lay_out(context, call)
        zygote = self._zygote_of(code, call, context.inputs)
        sandbox = zygote.take()
        try:
            return self._invoke(zygote, sandbox, context, code, call)
        finally:
            # The report may be forged by the function itself, which could then go on
            # burning CPU: whatever it reported, its sandbox ends with its invocation (a
            # no-op for one that has exited already).
            self._end(zygote, sandbox, context)

    def _end(self, zygote: pool.Zygote, sandbox: pool.Sandbox, context: SharedContext) -> None:
        """End ``sandbox`` (SIGKILL), keeping ``context``, which it ran in, out of use
        until it has exited: the kill lands on its CPU a little later, and until then a
        function that forged its report may still write the context (released meanwhile,
        it goes back once the zygote has reaped the sandbox: :meth:`SharedDomain.hold`)."""
        domain = self.domain
        assert isinstance(domain, SharedDomain)
        domain.hold(context)
        zygote.end(sandbox, lambda: domain.unhold(context))

    def begin(self, context: Context, call: FunctionCall) -> Started | None:
        """Hand ``call`` to a sandbox that is forked already, and return without waiting
        for its report (see :class:`Started`); ``None`` when no sandbox is forked, or the
        code is larger than :data:`BEGIN_MAX_PAYLOAD` (then :meth:`run` it on a thread)."""
        assert isinstance(context, SharedContext)
        code = self._lay_out(context, call)
        zygote = self._zygote_of(code, call, context.inputs)
        digest = call.implementation.digest
        sandbox = self.ahead.take(digest, code.data, zygote) if code.kind == "python" \
            else None
        if sandbox is not None:  # given this very code ahead: only the context goes now
            header, payload = ASSIGN.pack(ASSIGN_MAGIC, KIND_PYTHON, context.capacity,
                                          self.memory_limit, 0, 0, 0), b""
        else:
            header, payload = self._assignment(context, code, call)
            if len(payload) > BEGIN_MAX_PAYLOAD:
                return None
            sandbox = zygote.take_forked()
            if sandbox is None:
                return None
        try:
            _sandboxc.assign(sandbox.channel, context.fd, header, payload, call.timeout or 0.0)
        except BaseException:
            self._end(zygote, sandbox, context)
            raise
        zygote.adapt()  # (after the hand-over: it counts this invocation as running)
        started = Started(self, zygote, sandbox, context, code, call)
        started.again = code.kind == "python" and self.ahead.seen(digest)
        return started

    def wake_when_ready(self, call: FunctionCall, wake: Callable[[], None],
                        inputs: ItemSets = ()) -> bool:
        """After :meth:`begin` found no sandbox forked: ``wake`` once one is (its zygote
        forks one now); ``False`` for code too large to begin from a loop at all."""
        code = self.store.get(call.implementation.digest, call.artifact,
                              call.implementation.kind)
        if len(self._payload(call, code)) > BEGIN_MAX_PAYLOAD:
            return False
        self._zygote_of(code, call, inputs).when_forked(wake)
        return True

    def _payload(self, call: FunctionCall, code: StoredCode) -> bytes:
        """The code a sandbox receives for ``call``: a native function's segments one
        after the other, else the stored code itself."""
        return self._cut(call.implementation.digest, code)[1] if code.kind == "native" \
            else code.data

    def _zygote_of(self, code: StoredCode, call: FunctionCall, inputs: ItemSets
                   ) -> pool.Zygote:
        """The zygote whose sandboxes run ``code`` for ``call`` on ``inputs``: for Python
        code, the one with the libraries it needs, and numpy as well where the items hold
        arrays (:func:`_holds_arrays`), which a sandbox decodes or encodes with numpy though
        the code may never name it."""
        if code.kind != "python":
            return self.native_zygote()
        z = self.zygote_for(code)
        if "numpy" in z.modules or not _holds_arrays(call, inputs):
            return z
        return self._preloading((*code.requires, "numpy"))

    def _lay_out(self, context: SharedContext, call: FunctionCall) -> StoredCode:
        """Lay ``context`` out for the results of ``call``; the code it runs."""
        spec = call.spec
        impl = call.implementation
        code = self.store.get(impl.digest, call.artifact, impl.kind)
        shape = self._shapes.get(id(spec))
        if shape is None or shape[0] is not spec:
            if len(self._shapes) > 4096:
                self._shapes.clear()
            results = [(r.name, ELEMENT_CODES[r.type.element]) for r in spec.results]
            shape = self._shapes[id(spec)] = (
                spec, [(p.name, ELEMENT_CODES[p.type.element]) for p in spec.params], results,
                bytes([code for _, code in results]))
        context.layout(shape[1], shape[2], shape[3], self.output_limit)
        return code

    def run_batch(self, call: FunctionCall, inputs: Sequence[ItemSets]) -> BatchRun | None:
        """Run the Python function of ``call`` on several instances in one sandbox (a
        :class:`~dandelion.runtime.batch.BatchedFunction`), each instance's failure apart;
        ``None`` when the sandbox failed as a whole (crash, limit, timeout of the batch,
        which gets the instances' timeouts together)."""
        spec = call.spec
        k = len(inputs)
        if call.implementation.kind != "python" or not spec.params or k < 2:
            return None
        n = len(spec.params)
        flat: list[Any] = []
        for one in inputs:
            flat += [one[p] if p < len(one) else () for p in range(n)]
        bcall = FunctionCall(self._batch_spec(spec, k), Implementation(
            "python", "batch" + call.implementation.digest, call.implementation.entry),
            self._batch_artifact(call.artifact),
            call.timeout * k if call.timeout else None)
        context = self.domain.acquire()
        try:
            context.place(flat)
            seconds = self.run(context, bcall)
            outputs = context.extract()
        except DandelionError:
            return None
        finally:
            self.domain.release(context)
        r = len(spec.results)
        what = _what(call)
        outcomes: list[tuple[Any, str]] = []
        reports = outputs[-1] if outputs else ()
        for i in range(k):
            report = reports[i].value if i < len(reports) else "{}"
            if report == "":
                outcomes.append((list(outputs[i * r:(i + 1) * r]), ""))
                continue
            try:
                body = json.loads(report)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                outcomes.append((Failed(SandboxViolation(
                    f"{what} wrote a malformed report on its channel", function=spec.name)),
                    ""))
                continue
            logs = str(body.get("logs") or "")
            if body.get("ok") is True:
                outcomes.append((list(outputs[i * r:(i + 1) * r]), logs))
            elif body.get("kind") == "memory":
                outcomes.append((Failed(SandboxViolation(
                    f"{what} exceeded its memory limit of {self.memory_limit // _MIB} MiB",
                    function=spec.name, hint="raise engine_options={'memory_limit': bytes}",
                    logs=logs)), logs))
            else:
                outcomes.append((Failed(_rebuild(body, what, spec.name)), logs))
        return BatchRun(outcomes, seconds)

    def _batch_spec(self, spec: FunctionSpec, k: int) -> FunctionSpec:
        """The declaration of a batch of ``k`` instances of ``spec``: each instance's
        parameters and results in turn, then the outcomes."""
        key = (id(spec), k)
        known = self._batch_specs.get(key)
        if known is not None and known[0] is spec:
            return known[1]
        if len(self._batch_specs) > 1024:
            self._batch_specs.clear()
        batch = FunctionSpec(
            spec.name,
            [Param(f"{p.name}.{i}", p.type) for i in range(k) for p in spec.params],
            [*(Param(f"{r.name}.{i}", r.type) for i in range(k) for r in spec.results),
             Param("outcomes", DataType(ElementType.STR, True))], spec.kind)
        self._batch_specs[key] = (spec, batch)
        return batch

    def _batch_artifact(self, artifact: Any) -> BatchedFunction:
        """The one wrapper of ``artifact`` (the artifact store trusts the same object)."""
        known = self._batched.get(id(artifact))
        if known is None or known[0] is not artifact:
            known = self._batched[id(artifact)] = (artifact, BatchedFunction(artifact))
        return known[1]

    def _cut(self, digest: str, code: StoredCode) -> tuple[bytes, bytes]:
        """A native function's segment table and its segments' bytes one after the other,
        as a sandbox reads them (``c/segments.h``); cached by digest (a native digest is the
        ELF's content's) while the store keeps that very ``code`` in memory: code it loaded
        anew (a worker's cold start) is cut anew."""
        with self._tables_lock:
            found = self._tables.get(digest)
            if found is not None and found[0] is code:
                self._tables.move_to_end(digest)
                return found[1]
        assert code.native is not None
        table, body, at = [], [], 0
        for vaddr, memsz, prot, offset, filesz in code.native.segments:
            table.append(SEGMENT.pack(vaddr, memsz, prot, at, filesz))
            body.append(code.data[offset:offset + filesz])
            at += filesz
        cut = (b"".join(table), b"".join(body))
        with self._tables_lock:
            old = self._tables.pop(digest, None)
            if old is not None:
                self._tables_size -= len(old[1][0]) + len(old[1][1])
            self._tables[digest] = (code, cut)
            self._tables_size += len(cut[0]) + len(cut[1])
            while self._tables_size > CUT_CACHE_BYTES and len(self._tables) > 1:
                _, (_, gone) = self._tables.popitem(last=False)
                self._tables_size -= len(gone[0]) + len(gone[1])
        return cut

    def _assignment(self, context: SharedContext, code: StoredCode, call: FunctionCall
                    ) -> tuple[bytes, bytes]:
        """The header and payload that hand ``call`` to a sandbox."""
        if code.kind == "native":
            assert code.native is not None
            table, payload = self._cut(call.implementation.digest, code)
            header = ASSIGN.pack(ASSIGN_MAGIC, KIND_NATIVE, context.capacity, self.memory_limit,
                                 len(payload), code.native.entry, len(code.native.segments)
                                 ) + table  # the segment table precedes the segments
        else:
            payload = code.data
            header = ASSIGN.pack(ASSIGN_MAGIC, KIND_PYTHON, context.capacity, self.memory_limit,
                                 len(payload), 0, 0)
        return header, payload

    def _invoke(self, zygote: pool.Zygote, sandbox: pool.Sandbox,
                context: SharedContext, code: StoredCode, call: FunctionCall) -> float | None:
        """Run ``call`` in ``sandbox``; the seconds the function itself ran (a Python
        function's sandbox measures them), or raise the error it reported."""
        header, payload = self._assignment(context, code, call)
        try:
            data = _sandboxc.exchange(sandbox.channel, context.fd, header, payload,
                                      call.timeout or 0.0, not sandbox.ready, MAX_REPORT)
        except TimeoutError:  # run()'s finally ends (kills) the sandbox
            raise _timeout(call) from None
        return self._outcome(zygote, sandbox, context, code, call, data)

    def _outcome(self, zygote: pool.Zygote, sandbox: pool.Sandbox, context: SharedContext,
                 code: StoredCode, call: FunctionCall, data: bytes) -> float | None:
        """What the sandbox's report ``data`` says: the seconds the function ran, or the
        error it failed with (asking the zygote how the sandbox ended, if it ended without
        a report)."""
        tag, size = data[:4], len(data)
        context.logs = ""
        if tag == OKAY_TAG and size == OKAY.size:
            return float(OKAY.unpack(data)[1]) / 1e9
        if tag == NATV_TAG and size == NATV.size and NATV.unpack(data)[1] == 0:
            return None
        what = _what(call)  # a failure, or a success with what the function printed
        if tag == DONE_TAG and size >= DONE.size:
            report = self._report(data, what, call)
            if report.get("ok") is True:
                context.logs = str(report.get("logs") or "")
                elapsed = report.get("elapsed")
                return elapsed / 1e9 if isinstance(elapsed, int) else None
            self._python_error(report, what, call)
        elif tag == NATV_TAG and size == NATV.size:
            raise FunctionError(f"{what} returned error code {NATV.unpack(data)[1]}",
                                function=call.spec.name)
        elif tag == GONE_TAG and size == GONE.size:
            raise self._fatal(GONE.unpack(data), what, call)
        else:
            raise self._died(zygote, sandbox.pid, what, call, code.kind, tag)

    @staticmethod
    def _report(data: bytes, what: str, call: FunctionCall) -> dict[str, Any]:
        """The JSON body of a ``DONE`` report: an error, or a success with what the
        function printed (a plain success is an ``OKAY`` message)."""
        (_tag, length) = DONE.unpack_from(data)
        try:
            report = json.loads(data[DONE.size:]) if len(data) == DONE.size + length else None
        except (ValueError, RecursionError):
            report = None
        if not isinstance(report, dict):
            raise SandboxViolation(f"{what} wrote a malformed report on its channel",
                                   function=call.spec.name)
        return report

    def _python_error(self, report: dict[str, Any], what: str, call: FunctionCall) -> NoReturn:
        """Raise the error a sandbox reported, with what the function printed."""
        name = call.spec.name
        kind = report.get("kind")
        logs = str(report.get("logs") or "")
        if kind == "memory" or report.get("type") == "MemoryError":
            raise SandboxViolation(f"{what} exceeded its memory limit of "
                                   f"{self.memory_limit // _MIB} MiB", function=name,
                                   hint="raise engine_options={'memory_limit': bytes}",
                                   logs=logs)
        if kind == "output":
            raise SandboxViolation(
                f"{what} returned more output than its limit of {self.output_limit // _MIB} "
                f"MiB (an item of {report.get('needed', 0)} bytes did not fit)",
                function=name, hint="raise engine_options={'output_limit': bytes}", logs=logs)
        error = _rebuild(report, what, name)
        if isinstance(error, FunctionError):
            error.logs = logs
        raise error

    def _fatal(self, fields: tuple[Any, ...], what: str, call: FunctionCall) -> FunctionError:
        _tag, signo, nr, _code, addr = fields
        name = call.spec.name
        if signo == signal.SIGSYS:
            return SandboxViolation(f"{what} attempted forbidden system call "
                                    f"{syscall_name(nr)}", function=name, hint=_HINT_SYSCALL,
                                    syscall=nr)
        if signo == signal.SIGXCPU:
            return FunctionTimeout(f"{what} exceeded its CPU time limit of {self.cpu_limit} s "
                                   "and was killed", function=name,
                                   hint="raise engine_options={'cpu_limit': seconds}")
        sig = signal.Signals(signo).name if signo in signal.Signals._value2member_map_ else \
            str(signo)
        why = _SIGNALS.get(signo, "fatal signal")
        extra = f" at {addr:#x}" if signo in (signal.SIGSEGV, signal.SIGBUS) else ""
        return SandboxViolation(f"{what} crashed with {sig} ({why}{extra})", function=name,
                                hint="unbounded recursion overflows the stack this way too",
                                signal=signo)

    def _died(self, zygote: pool.Zygote, pid: int, what: str, call: FunctionCall,
              kind: str, tag: bytes) -> FunctionError:
        name = call.spec.name
        if tag:
            zygote.kill(pid)
            return SandboxViolation(f"{what} wrote to its channel outside the protocol",
                                    function=name)
        status = zygote.wait_status(pid)
        if status is None:
            return SandboxViolation(f"{what}: its sandbox vanished without a report",
                                    function=name)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGKILL and kind == "native":
                return SandboxViolation(
                    f"{what} attempted a system call other than read, write or exit and was "
                    "killed by seccomp strict mode", function=name, hint=_HINT_SYSCALL)
            if sig == signal.SIGKILL:
                return SandboxViolation(f"{what} was killed (SIGKILL: its CPU time hard limit "
                                        "or the kernel's out-of-memory killer)", function=name)
            return SandboxViolation(f"{what} was killed by {signal.Signals(sig).name}",
                                    function=name)
        return SandboxViolation(f"{what} exited (status {os.WEXITSTATUS(status)}) without "
                                "returning its outputs", function=name,
                                hint="a compute function returns its results; it does not "
                                     "exit the process")

    def close(self) -> None:
        """End the sandboxes made ready for functions, and release the contexts."""
        self.ahead.close()
        super().close()

    def __repr__(self) -> str:
        return f"<ProcessEngine pool={self.pool_size} memory_limit={self.memory_limit}>"


class Started(Invocation):
    """An invocation handed to a sandbox by :meth:`ProcessEngine.begin`: its report is read
    from the sandbox's channel as it arrives, exactly as :meth:`ProcessEngine.run` reads it
    (a leading ``READY`` dropped, at most :data:`~.protocol.MAX_REPORT` bytes of body)."""

    def __init__(self, engine: ProcessEngine, zygote: pool.Zygote, sandbox: pool.Sandbox,
                 context: SharedContext, code: StoredCode, call: FunctionCall) -> None:
        self.engine, self.zygote, self.sandbox = engine, zygote, sandbox
        self.context, self.code, self.call = context, code, call
        self.fd = sandbox.channel
        self.timeout = call.timeout
        self._skip_ready = not sandbox.ready
        self._data = bytearray()
        self._report = b""
        #: the function repeats (:meth:`.Ahead.seen`): once this invocation succeeded, its
        #: next one gets a sandbox made ready for it
        self.again = False
        self._succeeded = False
        #: the sandbox reported and waits to be ended, not counted as running
        self._aside = False
        self._ended = False

    def feed(self) -> bool:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return False
        except OSError:  # reset: whatever arrived is the report
            chunk = b""
        if not chunk:
            self._report = bytes(self._data)
            return True
        if self._skip_ready and not self._data and chunk[:1] == READY:
            chunk = chunk[1:]
        self._skip_ready = False
        self._data += chunk
        size = _sandboxc.report_size(self._data, MAX_REPORT)
        if size and len(self._data) >= size:
            self._report = bytes(self._data[:size])
            return True
        return False

    def needs_thread(self) -> bool:
        # no report, or not one of the protocol's: how the sandbox ended is asked of its
        # zygote, which answers from another process
        return self._report[:4] not in (OKAY_TAG, DONE_TAG, NATV_TAG, GONE_TAG)

    def outcome(self) -> float | None:
        # The sandbox reported: it runs no more, though its driver may end it later
        # (handoff.RELEASE_AFTER), and the zygote's choice of warming the sandboxes it
        # forks (Zygote.adapt) counts the invocations that run
        try:
            self.zygote.set_aside(self.sandbox)
            self._aside = True
        except BackendError:  # its zygote is gone: end() says so
            pass
        seconds = self.engine._outcome(self.zygote, self.sandbox, self.context, self.code,
                                       self.call, self._report)
        self._succeeded = True
        return seconds

    def timed_out(self) -> DandelionError:
        return _timeout(self.call)

    def end(self) -> None:
        """End the sandbox and, after a success of a function that repeats, make a
        sandbox ready for its next invocation (the caller ends an invocation after
        answering it: this is off the request's path)."""
        if self._ended:  # (a time-out ended it; its driver ends it again)
            return
        self._ended = True
        if self._aside:
            self._aside = False
            self.zygote.resume(self.sandbox)
        if self.sandbox.reusable and self._succeeded and self.code.kind == "python":
            # until its zygote has stopped it, the sandbox may run on (a function that
            # forged its report) and write its context: kept out of use until then
            domain, context = self.engine.domain, self.context
            assert isinstance(domain, SharedDomain)
            domain.hold(context)
            self.engine.ahead.reset(self.call.implementation.digest, self.code.data,
                                    self.zygote, self.sandbox,
                                    lambda: domain.unhold(context))
            return
        self.engine._end(self.zygote, self.sandbox, self.context)
        if self.again and self._succeeded:
            self.again = False
            self.engine.ahead.make_ready(self.call.implementation.digest, self.code.data,
                                         self.zygote)


def _holds_arrays(call: FunctionCall, inputs: ItemSets) -> bool:
    """Whether a sandbox needs numpy for the items of ``call`` on ``inputs`` though the
    function's code may never name it (``def gram(m): return m @ m.T``, given an array):
    an array among the inputs, which the sandbox decodes as one, or a parameter or result
    declared ``ndarray``."""
    spec = call.spec
    for p in (*spec.params, *spec.results):
        if p.type.element is ElementType.NDARRAY:
            return True
    ndarray = ndarray_class()
    if ndarray is None:  # no array exists in this process
        return False
    return any(isinstance(item.value, ndarray) for items in inputs for item in items)


def _timeout(call: FunctionCall) -> FunctionTimeout:
    """The error of ``call`` once it ran past its timeout."""
    return FunctionTimeout(f"{_what(call)} ran past its timeout of {call.timeout:g} s and "
                           "was killed", function=call.spec.name,
                           hint="raise the function's timeout (timeouts={name: s})")


def _what(call: FunctionCall) -> str:
    """How errors name the function of ``call``."""
    return f"{call.spec.kind} function '{call.spec.name}'"


def _rebuild(report: dict[str, Any], what: str, name: str) -> errors.DandelionError:
    """The worker-side error for an exception raised inside a sandbox."""
    type_name = str(report.get("type", "Exception"))
    message = str(report.get("message", ""))
    hint = report.get("hint") if isinstance(report.get("hint"), str) else None
    frames = report.get("frames")
    tb = format_traceback(
        [(str(f[0]), int(f[1]), str(f[2])) for f in frames
         if isinstance(f, list) and len(f) == 3 and isinstance(f[1], int)]
        if isinstance(frames, list) else [],
        type_name if report.get("module") in ("builtins", None)
        else f"{report.get('module')}.{type_name}", message)
    if report.get("module") == "dandelion.errors":
        cls = getattr(errors, type_name, None)
        if isinstance(cls, type) and issubclass(cls, errors.DandelionError):
            try:
                err = cls(message, hint=hint)
            except TypeError:
                err = None
            if isinstance(err, FunctionError):
                err.function = err.function or name
            if err is not None:
                return err
    error = FunctionError(f"{what} raised {type_name}: {message}", function=name,
                          traceback=tb)
    cause = getattr(builtins, type_name, None)
    if report.get("module") == "builtins" and isinstance(cause, type) and \
            issubclass(cause, Exception):
        try:
            error.__cause__ = cause(message)
        except Exception:  # pragma: no cover - exotic constructor
            pass
    return error


Engine = ProcessEngine
