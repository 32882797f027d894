"""The hot path of the ``wasm`` engine, straight on wasmtime's C API.

The ``wasmtime`` package's Python classes wrap every call of the C API in a few layers of
Python: type checks, value conversion, a wrapper object per export.  For a function that
runs for microseconds those layers cost more than the sandbox itself (measured: a no-op
invocation 127 us through the classes, of which ~60 us Python), so an invocation here calls
the C functions directly, through the ctypes declarations the package already makes
(``wasmtime._bindings``; the package's version range is pinned in ``pyproject.toml``).
Compiling, checking and serializing modules stay on the package's public classes.

Instances come from wasmtime's **pooling allocator** (:func:`pooled`): linear memories
live in slots of address space reserved once per process, so that instantiating and
dropping an instance maps and unmaps nothing; a slot is wiped when its instance is dropped
(its pages given back to the kernel, to fault in as zeros when the next instance touches
them), so nothing of one instance is visible to the next.  The reservation makes a
``fork`` of the worker process slower (measured: +2 ms); the process engine forks from a
zygote of its own and is not affected.
"""

from __future__ import annotations

import ctypes
import threading
from ctypes import POINTER, byref
from typing import Any

import wasmtime
from wasmtime import _bindings as capi

#: Instances (and linear memories) that may exist at once in this process: slots of
#: address space (4 GiB + guard each) reserved when the engine is made, none resident.
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
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
_I32 = 0  # WASMTIME_I32
_free = threading.BoundedSemaphore(SLOTS)  # an instance beyond the pool waits for a slot


def pooled(config: wasmtime.Config) -> None:
    """Make the engine of ``config`` allocate instances from a pool of :data:`SLOTS`."""
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


class Pre:
    """A module ready to instantiate: imports resolved (there are none) and its types
    checked once, not at every instantiation."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module) -> None:
        self.engine = engine
        self.module = module  # the pre-instance refers to it
        linker = wasmtime.Linker(engine)
        self.ptr = POINTER(capi.wasmtime_instance_pre_t)()
        error = capi._wasmtime_linker_instantiate_pre(linker.ptr(), module.ptr(),
                                                      byref(self.ptr))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)

    def __del__(self) -> None:
        if getattr(self, "ptr", None):
            capi._wasmtime_instance_pre_delete(self.ptr)


class Instance:
    """One instance of a module in a store of its own: the sandbox of one invocation.
    :meth:`close` drops the store, and with it the instance and its memory.

    Raises (from the constructor):
        wasmtime.WasmtimeError: it could not be instantiated (e.g. its memory would
            exceed ``memory_limit``, or every slot is in use).
        wasmtime.Trap: its start function trapped.
    """

    __slots__ = ("store", "context", "instance", "memory", "entry")

    def __init__(self, pre: Pre, memory_limit: int, deadline: int) -> None:
        _free.acquire()
        self.store = capi._wasmtime_store_new(pre.engine.ptr(), None, _NO_FINALIZER)
        self.context = capi._wasmtime_store_context(self.store)
        capi._wasmtime_store_limiter(self.store, memory_limit, -1, -1, -1, -1)
        capi._wasmtime_context_set_epoch_deadline(self.context, deadline)
        self.instance = capi.wasmtime_instance_t()
        trap = POINTER(capi.wasm_trap_t)()
        error = capi._wasmtime_instance_pre_instantiate(pre.ptr, self.context,
                                                        byref(self.instance), byref(trap))
        if error or trap:
            self.close()
            _raise(error, trap)
        self.memory = capi.wasmtime_extern_t()
        self.entry = capi.wasmtime_extern_t()
        capi._wasmtime_instance_export_get(self.context, byref(self.instance), b"memory", 6,
                                           byref(self.memory))
        capi._wasmtime_instance_export_get(self.context, byref(self.instance),
                                           b"dandelion_entry", 15, byref(self.entry))

    def global_i32(self, name: bytes) -> int:
        """The value of the exported i32 global ``name``."""
        found = capi.wasmtime_extern_t()
        capi._wasmtime_instance_export_get(self.context, byref(self.instance), name,
                                           len(name), byref(found))
        value = capi.wasmtime_val_t()
        capi._wasmtime_global_get(self.context, byref(found.of.global_), byref(value))
        return int(value.of.i32)

    def size(self) -> int:
        """Bytes of linear memory the instance has."""
        return int(capi._wasmtime_memory_data_size(self.context, byref(self.memory.of.memory)))

    def grow(self, pages: int) -> None:
        """Grow the linear memory by ``pages`` wasm pages.

        Raises:
            wasmtime.WasmtimeError: beyond the memory limit.
        """
        previous = ctypes.c_uint64()
        error = capi._wasmtime_memory_grow(self.context, byref(self.memory.of.memory), pages,
                                           byref(previous))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)

    def view(self, offset: int) -> Any:
        """The linear memory from ``offset`` on, as a ctypes byte array (valid until the
        memory grows or the instance is closed)."""
        memory = byref(self.memory.of.memory)
        address = ctypes.addressof(capi._wasmtime_memory_data(self.context, memory).contents)
        length = capi._wasmtime_memory_data_size(self.context, memory)
        return (ctypes.c_ubyte * (length - offset)).from_address(address + offset)

    def call(self, argument: int) -> int:
        """Call ``dandelion_entry(argument)`` and return what it returns.

        Raises:
            wasmtime.Trap: the function trapped (or ran past its epoch deadline).
        """
        arg, result = capi.wasmtime_val_t(), capi.wasmtime_val_t()
        arg.kind = capi.wasmtime_valkind_t(_I32)
        arg.of.i32 = argument
        trap = POINTER(capi.wasm_trap_t)()
        error = capi._wasmtime_func_call(self.context, byref(self.entry.of.func), byref(arg),
                                         1, byref(result), 1, byref(trap))
        if error or trap:
            _raise(error, trap)
        return int(result.of.i32)

    def close(self) -> None:
        """Drop the store: the instance and its memory (its pool slot is wiped)."""
        if self.store:
            capi._wasmtime_store_delete(self.store)
            self.store = None
            _free.release()


def _raise(error: Any, trap: Any) -> None:
    if trap:
        raise wasmtime.Trap._from_ptr(trap)
    raise wasmtime.WasmtimeError._from_ptr(error)
