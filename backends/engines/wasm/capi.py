"""The hot path of the ``wasm`` engine, straight on wasmtime's C API.

The ``wasmtime`` package's Python classes wrap every call of the C API in a few layers of
Python: type checks, value conversion, a wrapper object per export.  For a function that
runs for microseconds those layers cost more than the sandbox itself (measured: a no-op
invocation 127 us through the classes, of which ~60 us Python), and so does ctypes' own
argument conversion (0.5-1.3 us a call, eleven calls an invocation).  An invocation's calls
of the C API are therefore made in C, by the extension ``_wasmc`` (``c/wasmc.c``, a
reused :class:`Instance`: open, grow, call, close), on the functions of the library the
package loaded and the structure layout it declares (``wasmtime._bindings``; the
package's version range is pinned in ``pyproject.toml``), handed over once by address
when this module is imported.  Measured, a no-op: 43 us through ctypes, 37 us without
guard pages, 26 us with its calls declared by address into buffers made once, 19 us in C.
Compiling, checking and serializing modules stay on the package's public classes.

Instances come from wasmtime's **pooling allocator** (:func:`pooled`): linear memories
live in slots of address space reserved once per process, so that instantiating and
dropping an instance maps and unmaps nothing; a slot is wiped when its instance is dropped
(its pages given back to the kernel, to fault in as zeros when the next instance touches
them), so nothing of one instance is visible to the next.  The reservation makes a
``fork`` of the worker process slower (measured: +2 ms); the process engine forks from a
zygote of its own and is not affected.

:func:`handlers_intact` says whether wasmtime's signal handlers are still installed, which
code compiled to trap by signals needs (``engine.WasmEngine.run``).
"""

from __future__ import annotations

import ctypes
import queue
from ctypes import POINTER, byref

import wasmtime
from wasmtime import _bindings as capi

from dandelion.errors import BackendError

try:
    from dandelion.backends.engines.wasm import _wasmc
except ImportError:  # pragma: no cover - setup.py builds it
    raise BackendError("the wasm engine's C extension (_wasmc) is not built",
                       hint="install dandelion again (pip install -e .), which builds it; "
                            "it needs a C compiler and the Python headers") from None

#: Instances (and linear memories) that may exist at once in this process: slots of
#: address space (4 GiB each) reserved when the engine is made, none resident.
SLOTS = 1000
#: Bytes of a slot's linear memory kept resident and zeroed in place when it is reused;
#: beyond this the pages are returned to the kernel (and fault in, zero, when touched).
#: None: a function's first pages are its 1 MiB shadow stack's far end, which a small
#: function never touches, so zeroing them costs (measured: 256 KiB, +5 us a no-op)
#: without saving a fault.
KEEP_RESIDENT = 0
#: The most linear memory an instance can ever have (wasm32: 4 GiB); an engine's
#: ``memory_limit`` is enforced below it, per store.
MAX_MEMORY = 4 << 30
_free: queue.SimpleQueue[None] = queue.SimpleQueue()  # a token per free slot: beyond the
for _ in range(SLOTS):                                  # pool, an instance waits for one
    _free.put(None)


def pooled(config: wasmtime.Config, guard: bool = True) -> None:
    """Make the engine of ``config`` allocate instances from a pool of :data:`SLOTS`; with
    ``guard=False``, its linear memories without guard pages.

    An engine whose compiled code traps by signals (the default) needs its guard pages:
    an access past a memory's size faults there.  One whose code checks every access
    against the memory's size (``engine._explicit_traps``) does not: guard pages protect
    nothing there, and without them a slot's pages stay read-write once an instance has
    grown them, instead of being protected again for every instance and opened again when
    it grows (two ``mprotect`` calls of the whole context, measured: 4-5 us a no-op).
    Either way they are wiped (given back to the kernel) when the instance is dropped, and
    no instance can reach past its own size.
    """
    pool = capi.wasmtime_pooling_allocation_config_new()
    try:
        capi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, SLOTS)
        capi.wasmtime_pooling_allocation_config_total_memories_set(pool, SLOTS)
        capi.wasmtime_pooling_allocation_config_total_tables_set(pool, SLOTS)
        capi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, MAX_MEMORY)
        capi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(
            pool, KEEP_RESIDENT)
        capi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        capi.wasmtime_pooling_allocation_config_delete(pool)
    if not guard:
        capi.wasmtime_config_memory_guard_size_set(config.ptr(), 0)


class Pre:
    """A module ready to instantiate: imports resolved (there are none) and its types
    checked once, not at every instantiation."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module) -> None:
        self.module = module  # the pre-instance refers to it
        self.engine = ctypes.cast(engine.ptr(), ctypes.c_void_p).value
        self._engine = engine  # and the engine
        linker = wasmtime.Linker(engine)
        self.ptr = POINTER(capi.wasmtime_instance_pre_t)()
        error = capi._wasmtime_linker_instantiate_pre(linker.ptr(), module.ptr(),
                                                      byref(self.ptr))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        self.address = ctypes.cast(self.ptr, ctypes.c_void_p).value

    def __del__(self) -> None:
        if getattr(self, "ptr", None):
            capi._wasmtime_instance_pre_delete(self.ptr)


def _failure(error: int, trap: int) -> Exception:
    """The exception of a wasmtime error or trap (addresses; 0: none), which it takes."""
    failure: Exception  # typed here: wasmtime's stubs are absent where it is not installed
    if trap:
        failure = wasmtime.Trap._from_ptr(ctypes.cast(trap, POINTER(capi.wasm_trap_t)))
    else:
        failure = wasmtime.WasmtimeError._from_ptr(
            ctypes.cast(error, POINTER(capi.wasmtime_error_t)))
    return failure


#: handlers_intact() -> whether wasmtime's handlers of SIGSEGV, SIGILL and SIGFPE are the
#: ones installed (in C: ``sigaction`` and ``dladdr``, about 1 us)
handlers_intact = _wasmc.handlers_intact

_wasmc.bind(tuple(ctypes.cast(capi.dll[f"wasmtime_{name}"],  # type: ignore[attr-defined,unused-ignore]
                              ctypes.c_void_p).value for name in _wasmc.FUNCTIONS.split()),
            capi.wasmtime_extern_t.of.offset, capi.wasmtime_val_t.of.offset, _failure)


class Instance(_wasmc.Sandbox):  # type: ignore[misc]
    """The sandbox of one invocation at a time: :meth:`open` instantiates a module in a
    store of its own, :meth:`close` drops the store, and with it the instance and its
    memory.  The object is reused; its calls of the C API are made in C (``_wasmc``).

    Inherited from ``_wasmc.Sandbox``: ``grow_to(size)`` (raises
    ``wasmtime.WasmtimeError`` beyond the memory limit), ``view(offset)`` (a memoryview of
    the linear memory from ``offset`` on, valid until :meth:`close`: pooled memories do
    not move), ``call(argument)`` (``dandelion_entry``'s result; raises ``wasmtime.Trap``),
    ``global_i32(name)``, and the attributes ``address`` and ``size`` of the memory.
    """

    __slots__ = ()

    def open(self, pre: Pre, memory_limit: int, deadline: int) -> None:
        """A fresh instance of ``pre``'s module, in a fresh store whose linear memory may
        not exceed ``memory_limit`` bytes and which traps past epoch ``deadline``.

        Raises:
            wasmtime.WasmtimeError: it could not be instantiated (e.g. its memory would
                exceed ``memory_limit``).
            wasmtime.Trap: its start function trapped.
        """
        _free.get()
        try:
            _wasmc.Sandbox.open(self, pre.engine, pre.address, memory_limit, deadline)
        except BaseException:
            _free.put(None)
            raise

    def close(self) -> None:
        """Drop the store: the instance and its memory (its pool slot is wiped)."""
        if _wasmc.Sandbox.close(self):
            _free.put(None)


