"""The ``wasm`` engine: every invocation in a fresh instance of its function's module.

A wasm function is the C SDK's function built for ``wasm32``
(``dandelion build func.c --target wasm``): a module that imports nothing, so there is
nothing it can call; all it can touch is its own linear memory.  A module is compiled once
per worker (ahead of time: the compiled code is kept in the artifact store beside the
module, so a cold worker deserializes it instead of compiling) and **instantiated per
invocation**: the instance, with a linear memory of its own, is the sandbox, and it is
dropped when the invocation ends.

The context is laid out in the instance's linear memory at ``__heap_base`` (rounded up to a
wasm page), at the same layout as the process engine's contexts
(:mod:`dandelion.backends.engines.process.layout`, the structs of ``dandelion.h``), and
``dandelion_entry`` is called with its address.  The outputs are read back from there, as
untrusted data.

Timeouts are enforced with wasmtime's epoch interruption (a clock thread advances the epoch
every :data:`TICK` seconds while functions run), memory with the store's limit on linear
memory.  A trap (an access outside linear memory, a stack overflow, ``unreachable`` …) fails
its invocation with a :class:`~dandelion.errors.SandboxViolation` naming the function and
the trap.  See ``docs/isolation.rst``.

Compiled code traps by signals (an access outside linear memory faults in the guard pages
after it, caught by wasmtime's handlers), with no bounds check of its own: the matrix
function takes 1.62 ms instead of 2.06 ms with a check compiled into every access.  A
library that installs its own handler of those signals later (Ray's driver does, at
``ray.init``) would take such a fault from wasmtime's and crash the process; so before each
invocation the engine checks that wasmtime's handlers are still installed
(:func:`capi.handlers_intact`), and where they are not it runs the invocation on a second
wasmtime engine whose compiled code checks every access itself (:func:`_explicit_traps`,
made when first needed; its modules are compiled, and kept in the artifact store, apart).
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import importlib.metadata
import math
import threading
import time
from typing import Any

import wasmtime

from dandelion.backends.engines.process.layout import invocation, read_items, write_inputs
from dandelion.backends.engines.wasm import capi
from dandelion.errors import BackendError, FunctionError, FunctionTimeout, SandboxViolation
from dandelion.ir.nodes import FunctionSpec
from dandelion.runtime.engine import Context, FunctionCall, ObjectContext
from dandelion.runtime.engine import Engine as EngineBase
from dandelion.runtime.store import ArtifactStore, StoredCode, default_store
from dandelion.runtime.wasm import WasmFunction

_MIB = 1 << 20
_PAGE = 1 << 16  # a wasm page
#: Seconds between two epochs: the resolution of timeouts.
TICK = 0.01
#: Ticks without any function running after which the clock thread sleeps.
IDLE_TICKS = 100
#: How many compiled modules a worker keeps (least recently used first out).
MODULES = 256
_TRAPS = {
    wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS: "read or wrote outside its memory",
    wasmtime.TrapCode.STACK_OVERFLOW: "exhausted its stack",
    wasmtime.TrapCode.UNREACHABLE: "reached unreachable code",
    wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO: "divided an integer by zero",
    wasmtime.TrapCode.INTEGER_OVERFLOW: "overflowed an integer division",
    wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER: "converted a float out of range to an integer",
    wasmtime.TrapCode.INDIRECT_CALL_TO_NULL: "called a null function pointer",
    wasmtime.TrapCode.BAD_SIGNATURE: "called a function pointer of the wrong type",
    wasmtime.TrapCode.TABLE_OUT_OF_BOUNDS: "called a function pointer out of range",
}


def _explicit_traps(config: Any) -> None:
    """Compile bounds checks into the code instead of catching faults with signal handlers
    (the engine for invocations while wasmtime's handlers are not installed).

    wasmtime installs its SIGSEGV/SIGILL/SIGFPE handlers once per process; a library that
    installs its own afterwards (Ray's driver does, at ``ray.init``) takes the signal from
    it, and a function reading outside its memory would then crash the whole worker instead
    of failing its invocation.  The Python binding has no setter for this, so the C API's is
    called.
    """
    from wasmtime import _bindings

    dll = getattr(_bindings, "dll", None)
    setter = getattr(dll, "wasmtime_config_signals_based_traps_set", None)
    if setter is None:  # pragma: no cover - older wasmtime: signals it is
        return
    setter.restype = None
    setter.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    setter(ctypes.cast(config.ptr(), ctypes.c_void_p), False)


class _Clock:
    """A wasmtime engine of this process, and the thread that advances its epoch while
    functions run; it goes to sleep after :data:`IDLE_TICKS` ticks without any, so that a
    busy worker does not wake it for every invocation.  ``signals``: its compiled code traps
    by signals, in guard pages (else it checks every access itself, and its memories have
    no guard pages)."""

    def __init__(self, signals: bool = True) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.cranelift_opt_level = "speed"
        if not signals:
            _explicit_traps(config)
        capi.pooled(config, guard=signals)
        self.signals = signals
        self.engine = wasmtime.Engine(config)  # (with signals: installs wasmtime's handlers)
        #: names the compiler and its settings for compiled code in the artifact store
        traps = "signals pooling guard" if signals else "explicit-traps pooling no-guard"
        self.tag = "wasmtime-" + hashlib.sha256(
            f"{importlib.metadata.version('wasmtime')} epoch speed {traps}".encode()
        ).hexdigest()[:16]
        #: one entry per invocation running (list.append and pop are atomic: no lock)
        self._running: list[None] = []
        self._started = 0  # invocations begun (about: unlocked), the thread sees if any did
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> None:
        self._running.append(None)
        self._started += 1
        if not self._wake.is_set():
            self._wake.set()
            if self._thread is None:
                with self._lock:
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._tick, daemon=True,
                                                        name="dandelion-wasm-epoch")
                        self._thread.start()

    def __exit__(self, *exc: Any) -> None:
        self._running.pop()

    def _tick(self) -> None:
        idle, seen = 0, -1
        while self._wake.wait():
            time.sleep(TICK)
            self.engine.increment_epoch()
            idle = 0 if self._running or self._started != seen else idle + 1
            seen = self._started
            if idle >= IDLE_TICKS:
                self._wake.clear()
                # an invocation that began as it went to sleep has seen it awake: wake it
                if self._running or self._started != seen:
                    self._wake.set()


_clocks: dict[bool, _Clock] = {}
_clock_lock = threading.Lock()


def clock(signals: bool = True) -> _Clock:
    """The process's wasmtime engine and epoch clock (made on first use): the one whose code
    traps by signals, or (``signals=False``) the one whose code checks every access."""
    with _clock_lock:
        found = _clocks.get(signals)
        if found is None:
            found = _clocks[signals] = _Clock(signals)
        return found


class _Compiled:
    """A compiled module, ready to instantiate, and where its instances' context goes."""

    __slots__ = ("code", "module", "pre", "base")

    def __init__(self, code: StoredCode, engine: wasmtime.Engine, module: wasmtime.Module
                 ) -> None:
        self.code = code  # what it was compiled from (kept while the store keeps it)
        self.module = module
        self.pre = capi.Pre(engine, module)
        self.base: int | None = None  # __heap_base rounded up to a page, after one instance


class WasmEngine(EngineBase):
    """Runs wasm functions, each invocation in a fresh wasmtime instance.

    Args:
        memory_limit: bytes of linear memory an instance may have: its stack and data,
            the context (inputs and ``output_limit``) and anything it grows (default 1 GiB).
        cpu_limit: seconds a function may run when it has no timeout (default 300).
        output_limit: bytes of output (heap) a function may write into its context
            (default 64 MiB).
        store: the :class:`~dandelion.runtime.store.ArtifactStore` (default: the
            process-wide one); ``artifact_dir`` makes a store in that directory instead.
    """

    name = "wasm"
    kinds = frozenset({"wasm"})
    isolated = True
    enforces_timeout = True

    def __init__(self, memory_limit: int = 1 << 30, cpu_limit: float | None = 300,
                 output_limit: int = 64 * _MIB, store: ArtifactStore | None = None,
                 artifact_dir: str | None = None) -> None:
        super().__init__()
        self.memory_limit = memory_limit
        self.cpu_limit = cpu_limit
        self.output_limit = output_limit
        self.store = store or (ArtifactStore(artifact_dir) if artifact_dir else default_store())
        self.clock = clock()
        self._modules: collections.OrderedDict[str, _Compiled] = collections.OrderedDict()
        self._lock = threading.Lock()
        #: sandboxes not in use, each reused (a worker's engine runs one invocation at a
        #: time; one called from several threads makes one per invocation at once)
        self._idle: list[capi.Instance] = []

    def compiled(self, call: FunctionCall, by: _Clock | None = None) -> _Compiled:
        """The module of ``call``'s implementation compiled by the engine of ``by`` (default:
        :attr:`clock`'s): from memory (while the store keeps the very code it was compiled
        from in memory), else from the code compiled ahead of time in the artifact store,
        else compiled now (and kept there).  A module is checked (:func:`_check_module`)
        the first time its digest is compiled here, not again when its code comes back from
        the store (a cold invocation: 54 us saved).

        Raises:
            BackendError: the module is not a wasm function (saying why).
        """
        by = by or self.clock
        digest = call.implementation.digest
        key = digest if by.signals else f"{digest} explicit-traps"
        with self._lock:
            found = self._modules.get(key)
        if found is not None and found.code is self.store.in_memory(digest):
            with self._lock:
                self._modules.move_to_end(key)
            return found
        artifact = call.artifact
        if artifact is not None and not isinstance(artifact, WasmFunction):
            # a binding of a .dd file names the module's file
            artifact = WasmFunction.from_file(artifact.path, call.spec.name)
        code = self.store.get(digest, artifact, "wasm")
        engine = by.engine
        aot = self.store.compiled(digest, by.tag)
        try:
            module = wasmtime.Module.deserialize(engine, aot) if aot is not None else None
        except wasmtime.WasmtimeError:  # compiled by another build of wasmtime: recompile
            module = None
        if module is None:
            try:
                module = wasmtime.Module(engine, code.data)
            except wasmtime.WasmtimeError as e:
                raise BackendError(f"wasm function '{call.spec.name}' does not compile: {e}",
                                   hint="build it with `dandelion build func.c --target "
                                        "wasm`") from None
            self.store.keep_compiled(digest, by.tag, module.serialize())
        if found is None:  # (else this digest's module, the same bytes, passed already)
            _check_module(call.spec.name, module)
        compiled = _Compiled(code, engine, module)
        with self._lock:
            self._modules[key] = compiled
            while len(self._modules) > MODULES:
                self._modules.popitem(last=False)
        return compiled

    def prepare(self, call: FunctionCall) -> None:
        """Compile ``call``'s module now (kept in the artifact store, and in memory), so
        that no invocation waits for its compilation (a worker does this at registration)."""
        self.compiled(call)

    def run(self, context: Context, call: FunctionCall) -> None:
        assert isinstance(context, ObjectContext)
        # code that traps by signals only while wasmtime's handlers take them (module doc)
        by = self.clock if capi.handlers_intact() else clock(signals=False)
        compiled = self.compiled(call, by)
        spec = call.spec
        limit = call.timeout or self.cpu_limit
        try:
            instance = self._idle.pop()
        except IndexError:
            instance = capi.Instance()
        try:
            instance.open(compiled.pre, self.memory_limit,
                          math.ceil(limit / TICK) + 1 if limit else 1 << 62)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
            self._idle.append(instance)
            raise SandboxViolation(f"{_what(spec)} could not be instantiated within its memory "
                                   f"limit of {self.memory_limit // _MIB} MiB: {e}",
                                   function=spec.name,
                                   hint="raise engine_options={'memory_limit': bytes}"
                                   ) from None
        try:
            base = compiled.base
            if base is None:
                base = compiled.base = -(-instance.global_i32(b"__heap_base") // _PAGE) * _PAGE
            sets, results = invocation(spec, context.inputs)
            self._grow(instance, base + self.output_limit + _MIB, spec)
            view = instance.view(base)
            capacity = write_inputs(view, sets, results, self.output_limit)
            if capacity < 0:
                self._grow(instance, base - capacity, spec)
                view = instance.view(base)
                capacity = write_inputs(view, sets, results, self.output_limit)
            try:
                with by:
                    code = instance.call(base)
            except wasmtime.Trap as e:
                raise self._trapped(e, call, limit) from None
            if code != 0:
                raise FunctionError(f"{_what(spec)} returned error code {code}", function=spec.name)
            declared = bytes(code for _, code in results)
            context.outputs = list(read_items(view, capacity, True, declared, True))
        finally:
            instance.close()
            self._idle.append(instance)

    def _grow(self, instance: capi.Instance, size: int, spec: FunctionSpec) -> None:
        """Grow the instance's memory to at least ``size`` bytes."""
        try:
            instance.grow_to(size)
        except wasmtime.WasmtimeError:
            raise SandboxViolation(
                f"{_what(spec)}: its context of {size // _MIB} MiB (inputs and the output "
                f"limit of {self.output_limit // _MIB} MiB) does not fit in its memory limit "
                f"of {self.memory_limit // _MIB} MiB", function=spec.name,
                hint="raise engine_options={'memory_limit': bytes}, or lower "
                     "'output_limit'") from None

    def _trapped(self, trap: wasmtime.Trap, call: FunctionCall,
                 limit: float | None) -> FunctionError:
        what = _what(call.spec)
        name = call.spec.name
        code = trap.trap_code
        if code is wasmtime.TrapCode.INTERRUPT:
            if call.timeout:
                return FunctionTimeout(f"{what} ran past its timeout of {call.timeout:g} s "
                                       "and was stopped", function=name,
                                       hint="raise the function's timeout (timeouts={name: s})")
            return FunctionTimeout(f"{what} exceeded its CPU time limit of {limit:g} s and "
                                   "was stopped", function=name,
                                   hint="raise engine_options={'cpu_limit': seconds}")
        why = _TRAPS.get(code, "trapped") if code is not None else "trapped"
        detail = next((line.strip() for line in trap.message.splitlines()
                       if line.strip().startswith("wasm trap:")), "wasm trap")
        return SandboxViolation(f"{what} {why} ({detail})", function=name,
                                hint="unbounded recursion exhausts the stack this way"
                                if code is wasmtime.TrapCode.STACK_OVERFLOW
                                or code is wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS else None)

    def close(self) -> None:
        with self._lock:
            self._modules.clear()
        super().close()

    def __repr__(self) -> str:
        return f"<WasmEngine memory_limit={self.memory_limit}>"


def _what(spec: FunctionSpec) -> str:
    return f"{spec.kind} function '{spec.name}'"


def _check_module(name: str, module: wasmtime.Module) -> None:
    """A wasm function imports nothing and exports its memory and entry point."""
    def bad(why: str) -> BackendError:
        return BackendError(f"wasm function '{name}': {why}",
                            hint="build it with `dandelion build func.c --target wasm`")

    if module.imports:
        raise bad(f"imports {', '.join(f'{i.module}.{i.name}' for i in module.imports)}; a "
                  "wasm function may import nothing")
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise bad("exports no 'memory'")
    entry = exports.get("dandelion_entry")
    if not isinstance(entry, wasmtime.FuncType) or \
            [str(t) for t in entry.params] != ["i32"] or \
            [str(t) for t in entry.results] != ["i32"]:
        raise bad("exports no 'dandelion_entry(i32) -> i32'")
    if not isinstance(exports.get("__heap_base"), wasmtime.GlobalType):
        raise bad("exports no '__heap_base'")


Engine = WasmEngine
