"""The hot path of the ``wasm`` engine, straight on wasmtime's C API.

The ``wasmtime`` package's Python classes wrap every call of the C API in a few layers of
Python: type checks, value conversion, a wrapper object per export.  For a function that
runs for microseconds those layers cost more than the sandbox itself (measured: a no-op
invocation 127 us through the classes, of which ~60 us Python), so an invocation here calls
the C functions directly, from the library and with the structures the package declares
(``wasmtime._bindings``; the package's version range is pinned in ``pyproject.toml``).
Those calls are declared again here with plain addresses for pointers, and what they write
goes into buffers made once per sandbox (:class:`Instance`), so that an invocation makes
no ctypes objects (measured: a no-op 37 -> 26 us).  Compiling, checking and serializing
modules stay on the package's public classes.

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
import queue
from ctypes import POINTER, byref
from typing import Any

import wasmtime
from wasmtime import _bindings as capi

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
#: Bytes of a wasm page.
PAGE = 1 << 16
_free: queue.SimpleQueue[None] = queue.SimpleQueue()  # a token per free slot: beyond the
for _ in range(SLOTS):                                  # pool, an instance waits for one
    _free.put(None)


def pooled(config: wasmtime.Config) -> None:
    """Make the engine of ``config`` allocate instances from a pool of :data:`SLOTS`, and
    its linear memories without guard pages.

    The engine checks every access of compiled code against the memory's size (it takes
    no signals: ``engine._explicit_traps``), so guard pages protect nothing; without them
    a slot's pages stay read-write once an instance has grown them, instead of being
    protected again for every instance and opened again when it grows (two ``mprotect``
    calls of the whole context, measured: 4-5 us a no-op).  They are still wiped (given
    back to the kernel) when the instance is dropped, and no instance can reach past its
    own size.
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
    capi.wasmtime_config_memory_guard_size_set(config.ptr(), 0)


class Pre:
    """A module ready to instantiate: imports resolved (there are none) and its types
    checked once, not at every instantiation.

    Attributes:
        initial: bytes of linear memory a new instance has (the module's minimum).
    """

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module) -> None:
        self.module = module  # the pre-instance refers to it
        self.engine = ctypes.cast(engine.ptr(), ctypes.c_void_p).value
        self._engine = engine  # and the engine
        memory = next(e.type for e in module.exports if e.name == "memory")
        assert isinstance(memory, wasmtime.MemoryType)
        self.initial = memory.limits.min * PAGE
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


class _Scratch(ctypes.Structure):
    """What the C API writes for an invocation: allocated once per :class:`Instance`."""

    _fields_ = [("instance", capi.wasmtime_instance_t), ("memory", capi.wasmtime_extern_t),
                ("entry", capi.wasmtime_extern_t), ("trap", ctypes.c_void_p),
                ("value", ctypes.c_uint64 * 2), ("pages", ctypes.c_uint64)]


def _function(name: str, restype: Any, *argtypes: Any) -> Any:
    """The C function ``name``, declared with plain addresses (``c_void_p``) for its
    pointers: a call then converts Python integers, not ctypes objects made per call.  A
    fresh function object, so the package's own declaration stays as it is."""
    function = capi.dll[name]  # type: ignore[attr-defined]
    function.restype = restype
    function.argtypes = argtypes
    return function


_P, _U64, _I64 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64
_store_new = _function("wasmtime_store_new", _P, _P, _P, _P)
_store_context = _function("wasmtime_store_context", _P, _P)
_store_limiter = _function("wasmtime_store_limiter", None, _P, _I64, _I64, _I64, _I64, _I64)
_set_deadline = _function("wasmtime_context_set_epoch_deadline", None, _P, _U64)
_instantiate = _function("wasmtime_instance_pre_instantiate", _P, _P, _P, _P, _P)
_export = _function("wasmtime_instance_export_get", ctypes.c_bool, _P, _P, ctypes.c_char_p,
                    ctypes.c_size_t, _P)
_grow = _function("wasmtime_memory_grow", _P, _P, _P, _U64, _P)
_data = _function("wasmtime_memory_data", _P, _P, _P)
_call = _function("wasmtime_func_call_unchecked", _P, _P, _P, _P, ctypes.c_size_t, _P)
_global_get = _function("wasmtime_global_get", None, _P, _P, _P)
_store_delete = _function("wasmtime_store_delete", None, _P)
_OF = capi.wasmtime_extern_t.of.offset  # where an extern's memory or function starts


class Instance:
    """The sandbox of one invocation at a time: :meth:`open` instantiates a module in a
    store of its own, :meth:`close` drops the store, and with it the instance and its
    memory.  The object is reused (an engine runs one invocation at a time); what the C API
    writes goes into buffers made once, passed by address.

    Attributes:
        address: where the instance's linear memory starts in this process.
        size: bytes of linear memory the instance has (after :meth:`grow_to`).
    """

    __slots__ = ("store", "context", "address", "size", "_scratch", "_instance", "_memory",
                 "_entry", "_trap", "_value", "_pages")

    def __init__(self) -> None:
        self.store: int | None = None
        self.context = self.address = self.size = 0
        scratch = self._scratch = _Scratch()
        at = ctypes.addressof(scratch)
        self._instance = at + _Scratch.instance.offset
        self._memory = at + _Scratch.memory.offset  # the extern; its memory at + _OF
        self._entry = at + _Scratch.entry.offset
        self._trap = at + _Scratch.trap.offset
        self._value = at + _Scratch.value.offset
        self._pages = at + _Scratch.pages.offset

    def open(self, pre: Pre, memory_limit: int, deadline: int) -> None:
        """A fresh instance of ``pre``'s module, in a fresh store whose linear memory may
        not exceed ``memory_limit`` bytes and which traps past epoch ``deadline``.

        Raises:
            wasmtime.WasmtimeError: it could not be instantiated (e.g. its memory would
                exceed ``memory_limit``).
            wasmtime.Trap: its start function trapped.
        """
        _free.get()
        store = self.store = _store_new(pre.engine, None, None)
        context = self.context = _store_context(store)
        _store_limiter(store, memory_limit, -1, -1, -1, -1)
        _set_deadline(context, deadline)
        scratch = self._scratch
        scratch.trap = None
        error = _instantiate(pre.address, context, self._instance, self._trap)
        if error or scratch.trap:
            trap = scratch.trap
            self.close()
            _raise(error, trap)
        _export(context, self._instance, b"memory", 6, self._memory)
        _export(context, self._instance, b"dandelion_entry", 15, self._entry)
        self.address = _data(context, self._memory + _OF)
        self.size = pre.initial

    def global_i32(self, name: bytes) -> int:
        """The value of the exported i32 global ``name``."""
        found, value = capi.wasmtime_extern_t(), capi.wasmtime_val_t()
        _export(self.context, self._instance, name, len(name), ctypes.addressof(found))
        _global_get(self.context, ctypes.addressof(found) + _OF, ctypes.addressof(value))
        return int(value.of.i32)

    def grow_to(self, size: int) -> None:
        """Grow the linear memory to at least ``size`` bytes (whole wasm pages).

        Raises:
            wasmtime.WasmtimeError: beyond the memory limit.
        """
        if size > self.size:
            pages = -(-(size - self.size) // PAGE)
            error = _grow(self.context, self._memory + _OF, pages, self._pages)
            if error:
                _raise(error, None)
            self.size = (self._scratch.pages + pages) * PAGE

    def view(self, offset: int) -> Any:
        """The linear memory from ``offset`` to :attr:`size`, as a ctypes byte array (valid
        until the instance is closed: pooled memories do not move when they grow)."""
        return (ctypes.c_ubyte * (self.size - offset)).from_address(self.address + offset)

    def call(self, argument: int) -> int:
        """Call ``dandelion_entry(argument)`` (checked to be ``(i32) -> i32`` when the
        module was loaded) and return what it returns.

        Raises:
            wasmtime.Trap: the function trapped (or ran past its epoch deadline).
        """
        scratch = self._scratch
        scratch.value[0] = argument
        scratch.trap = None
        error = _call(self.context, self._entry + _OF, self._value, 1, self._trap)
        if error or scratch.trap:
            _raise(error, scratch.trap)
        return ctypes.c_int32(scratch.value[0]).value

    def close(self) -> None:
        """Drop the store: the instance and its memory (its pool slot is wiped)."""
        if self.store:
            _store_delete(self.store)
            self.store = None
            _free.put(None)


def _pointer(address: int, kind: Any) -> Any:
    return ctypes.cast(address, ctypes.POINTER(kind))


def _raise(error: int | None, trap: int | None) -> None:
    if trap:
        raise wasmtime.Trap._from_ptr(_pointer(trap, capi.wasm_trap_t))
    assert error is not None
    raise wasmtime.WasmtimeError._from_ptr(_pointer(error, capi.wasmtime_error_t))
