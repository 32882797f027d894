"""The ``kvm`` engine: native functions in tiny KVM virtual machines with no guest OS.

A native function's ELF (``dandelion build func.c``, the same image the process engine runs:
``--target native`` images run here as they are) is mapped into a virtual machine of its
own address space, built by the host (``c/kvmc.c``): long mode, host-built page tables, a
GDT with user segments and a TSS, an IDT whose exception gates report to the host.  The
function runs at **CPL3** (on nested KVM the guest's kernel mode is emulated, about ten
times slower) with nothing to call: the machine has no devices and no guest OS.  The inputs
are laid out in the guest's memory at the documented context layout
(:mod:`dandelion.backends.engines.process.layout`), ``dandelion_entry`` is entered with the
context's address, and its return leads to an exit stub that hands the return value to the
host.  The outputs are read back from the guest's memory, as untrusted data.

VMs are created ahead of time (one per core, more on demand) and **reset between
invocations**: every page the function wrote (KVM's dirty log says which) and the inputs are
restored — zeros, or the image's bytes for its data — and the general registers and the
FPU/SSE/AVX state are set anew; a VM whose invocation failed is closed and replaced.  Only
the image's read-only pages stay, which the function cannot write.

Anything but returning fails the invocation with a :class:`~dandelion.errors.SandboxViolation`
naming the function and what it did: an exception (a page fault outside its memory, a write
to its code, a jump into its data, ``syscall``/``sysenter``/``int``/``hlt``/port I/O, which
fault at CPL3), a triple fault; a wall-clock timeout (a timer signal to the thread in
``KVM_RUN``) with :class:`~dandelion.errors.FunctionTimeout`.  The VM that ran it is
discarded and the engine goes on serving.  See ``docs/isolation.rst``.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any

from dandelion.backends.engines.process.layout import invocation, read_items, write_inputs
from dandelion.errors import BackendError, FunctionError, FunctionTimeout, SandboxViolation
from dandelion.ir.nodes import FunctionSpec
from dandelion.runtime.engine import Context, FunctionCall, ObjectContext
from dandelion.runtime.engine import Engine as EngineBase
from dandelion.runtime.native import NativeImage
from dandelion.runtime.store import ArtifactStore, StoredCode, default_store

_MIB = 1 << 20
#: How many images' segments (cut out of their ELFs) the engine keeps.
IMAGES = 256
_VECTORS = {0: "divided by zero (#DE)", 1: "hit a debug trap (#DB)", 3: "hit a breakpoint (#BP)",
            4: "overflowed (#OF)", 5: "exceeded a bound (#BR)",
            6: "executed an invalid instruction (#UD)", 7: "used an unavailable FPU (#NM)",
            8: "double-faulted (#DF)", 10: "hit an invalid TSS (#TS)",
            11: "used a segment that is not present (#NP)", 12: "faulted on its stack (#SS)",
            13: "violated protection (#GP)", 14: "page-faulted (#PF)",
            16: "raised a floating-point error (#MF)", 17: "accessed unaligned memory (#AC)",
            18: "raised a machine check (#MC)", 19: "raised a SIMD floating-point error (#XM)"}
#: instructions a function may try in order to leave its sandbox, by their first bytes
_INSTRUCTIONS = {b"\x0f\x05": "a system call (syscall)", b"\x0f\x34": "a system call (sysenter)",
                 b"\xcd\x80": "a system call (int 0x80)", b"\xf4": "hlt", b"\xfa": "cli",
                 b"\xfb": "sti", b"\x0f\x01\xc1": "vmcall", b"\x0f\x01\xd9": "vmmcall"}
_PORT_IO = {0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F}
_HINT_SYSCALL = ("a native function runs without a system interface: no system calls, "
                 "interrupts or I/O ports; it computes on its context and returns")


def unavailable_reason() -> str | None:
    """Why this machine cannot run the kvm engine, or ``None`` where it can: ``/dev/kvm``
    must exist and open for reading and writing, and a virtual machine must start.

    >>> reason = unavailable_reason()
    >>> reason is None or "kvm" in reason
    True
    """
    if not os.path.exists("/dev/kvm"):
        return "there is no /dev/kvm (no KVM: a machine without hardware virtualization, " \
               "or a VM without nested virtualization)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user (add it to group kvm)"
    try:
        from dandelion.backends.engines.kvm import _kvmc

        _kvmc.Vm(16 * _MIB).close()
    except ImportError:
        return "the kvm engine's C extension (_kvmc) is not built"
    except OSError as e:
        return f"a KVM virtual machine does not start: {e}"
    return None


class _Image:
    """A native function's segments as a VM maps them, and its entry point."""

    __slots__ = ("code", "entry", "segments")

    def __init__(self, code: StoredCode, native: NativeImage) -> None:
        self.code = code  # what it was cut from
        self.entry = native.entry
        self.segments = tuple((vaddr, memsz, prot, code.data[offset:offset + filesz])
                              for vaddr, memsz, prot, offset, filesz in native.segments)


class KvmEngine(EngineBase):
    """Runs native functions, each invocation in a reset KVM virtual machine at CPL3.

    Args:
        memory_limit: bytes of guest memory per VM: the image, the context (inputs and
            ``output_limit``) and an 8 MiB stack (default 1 GiB; pages are allocated as
            the function touches them).
        cpu_limit: seconds a function may run when it has no timeout (default 300).
        output_limit: bytes of output (heap) a function may write into its context
            (default 64 MiB).
        pool_size: VMs created ahead of time (default: one per core); more are created
            when all are busy.
        store: the :class:`~dandelion.runtime.store.ArtifactStore` (default: the
            process-wide one); ``artifact_dir`` makes a store in that directory instead.

    Raises:
        BackendError: this machine cannot run KVM virtual machines (saying why).
    """

    name = "kvm"
    kinds = frozenset({"native"})
    isolated = True
    enforces_timeout = True

    def __init__(self, memory_limit: int = 1 << 30, cpu_limit: float | None = 300,
                 output_limit: int = 64 * _MIB, pool_size: int | None = None,
                 store: ArtifactStore | None = None, artifact_dir: str | None = None) -> None:
        super().__init__()
        self.memory_limit = memory_limit
        self.cpu_limit = cpu_limit
        self.output_limit = output_limit
        self.store = store or (ArtifactStore(artifact_dir) if artifact_dir else default_store())
        self._images: collections.OrderedDict[str, _Image] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._free: list[Any] = []
        try:
            from dandelion.backends.engines.kvm import _kvmc
        except ImportError:
            raise self._unavailable("the kvm engine's C extension (_kvmc) is not built") \
                from None
        self._kvmc = _kvmc
        for _ in range(pool_size if pool_size is not None else os.cpu_count() or 1):
            self._free.append(self._new_vm())

    @staticmethod
    def _unavailable(why: str) -> BackendError:
        return BackendError(f"the kvm engine is unavailable on this machine: {why}",
                            hint="run native functions with engine='process'")

    def _new_vm(self) -> Any:
        try:
            return self._kvmc.Vm(self.memory_limit)
        except OSError as e:
            raise self._unavailable(f"a KVM virtual machine does not start: {e}") from None
        except ValueError as e:
            raise BackendError(f"the kvm engine's memory_limit of {self.memory_limit} bytes "
                               f"is unusable: {e}",
                               hint="engine_options={'memory_limit': bytes}") from None

    def _image(self, call: FunctionCall) -> _Image:
        """The segments of ``call``'s image, cut once while the store keeps that very code
        in memory: code it loaded anew (a worker's cold start) is cut anew, and mapped anew
        into each VM (a VM keeps the image it mapped while it is this object)."""
        digest = call.implementation.digest
        with self._lock:
            found = self._images.get(digest)
        if found is not None and found.code is self.store.in_memory(digest):
            with self._lock:
                self._images.move_to_end(digest)
            return found
        code = self.store.get(digest, call.artifact, "native")
        if code.native is None:
            raise BackendError(f"{_what(call.spec)} is not a native function",
                               hint="build it with `dandelion build func.c -o func.elf`")
        image = _Image(code, code.native)
        with self._lock:
            self._images[digest] = image
            while len(self._images) > IMAGES:
                self._images.popitem(last=False)
        return image

    def run(self, context: Context, call: FunctionCall) -> None:
        assert isinstance(context, ObjectContext)
        spec = call.spec
        image = self._image(call)
        with self._lock:
            vm = self._free.pop() if self._free else None
        if vm is None:
            vm = self._new_vm()
        keep = False
        capacity = 0
        try:
            try:
                vm.load(image, image.segments)
            except ValueError as e:
                raise SandboxViolation(f"{_what(spec)} does not fit in its memory limit of "
                                       f"{self.memory_limit // _MIB} MiB: {e}",
                                       function=spec.name,
                                       hint="raise engine_options={'memory_limit': bytes}"
                                       ) from None
            sets, results = invocation(spec, context.inputs)
            with memoryview(vm) as view:
                capacity = write_inputs(view, sets, results, self.output_limit)
            if capacity < 0:
                raise SandboxViolation(
                    f"{_what(spec)}: its context of {-capacity // _MIB} MiB (inputs and the "
                    f"output limit of {self.output_limit // _MIB} MiB) does not fit in its "
                    f"memory limit of {self.memory_limit // _MIB} MiB", function=spec.name,
                    hint="raise engine_options={'memory_limit': bytes}, or lower "
                         "'output_limit'")
            limit = call.timeout or self.cpu_limit or 0.0
            try:
                outcome, a, b, c, d = vm.run(image.entry, float(limit))
            except OSError as e:
                raise SandboxViolation(f"{_what(spec)}: its virtual machine failed: {e}",
                                       function=spec.name) from None
            if outcome != self._kvmc.DONE:
                raise self._failed(vm, call, outcome, a, b, c, d, limit)
            keep = True
            if a != 0:
                raise FunctionError(f"{_what(spec)} returned error code {a}",
                                    function=spec.name)
            declared = bytes(code for _, code in results)
            with memoryview(vm) as view:
                context.outputs = list(read_items(view, capacity, True, declared, True))
        finally:
            if keep:
                vm.reset(max(capacity - self.output_limit, 0))
                with self._lock:
                    self._free.append(vm)
            else:  # its state is unknown: a fresh VM takes its place
                vm.close()
        return None

    def _failed(self, vm: Any, call: FunctionCall, outcome: int, a: int, b: int, c: int,
                d: int, limit: float) -> FunctionError:
        """The error of a run that did not return."""
        spec = call.spec
        what, name = _what(spec), spec.name
        k = self._kvmc
        if outcome == k.TIMEOUT:
            if call.timeout:
                return FunctionTimeout(f"{what} ran past its timeout of {call.timeout:g} s "
                                       "and was stopped", function=name,
                                       hint="raise the function's timeout (timeouts={name: s})")
            return FunctionTimeout(f"{what} exceeded its CPU time limit of {limit:g} s and "
                                   "was stopped", function=name,
                                   hint="raise engine_options={'cpu_limit': seconds}")
        if outcome == k.FAULT:
            return self._fault(vm, spec, a, b, c, d)
        if outcome == k.SHUTDOWN:
            return SandboxViolation(f"{what} triple-faulted its virtual machine", function=name)
        if outcome == k.IO:
            return SandboxViolation(f"{what} did port I/O ({'out' if b else 'in'} on port "
                                    f"{a:#x}) at {d:#x}", function=name, hint=_HINT_SYSCALL)
        return SandboxViolation(f"{what} stopped its virtual machine (KVM exit reason {a}, "
                                f"{b:#x})", function=name)

    def _fault(self, vm: Any, spec: FunctionSpec, vector: int, code: int, rip: int,
               cr2: int) -> SandboxViolation:
        what, name = _what(spec), spec.name
        k = self._kvmc
        if vector == 14 and rip in (k.SYSCALL_STUB, k.SYSENTER_STUB):
            vector = 32 if rip == k.SYSCALL_STUB else 33  # nested KVM went there at CPL3
            rip = 0
        if vector in (32, 33):  # syscall's and sysenter's targets
            where = f" at {rip:#x}" if rip else ""
            return SandboxViolation(f"{what} attempted a system call "
                                    f"({'syscall' if vector == 32 else 'sysenter'}){where}, "
                                    "which a sandboxed function cannot do", function=name,
                                    hint=_HINT_SYSCALL)
        insn = vm.read(rip, 8).lstrip(b"\x66\xf2\xf3")  # operand-size and rep prefixes
        tried = next((t for b, t in _INSTRUCTIONS.items() if insn.startswith(b)), None)
        if tried is None and insn[:1] and insn[0] in _PORT_IO and vector == 13:
            tried = "port I/O"
        if tried is None and vector == 13 and code & 2:  # an IDT vector: `int n`
            tried = f"a software interrupt (int {code >> 3:#x})"
        if tried is not None:
            return SandboxViolation(f"{what} attempted {tried} at {rip:#x}, which a "
                                    "sandboxed function cannot do", function=name,
                                    hint=_HINT_SYSCALL)
        if vector == 14:
            access = "executed" if code & 16 else "wrote" if code & 2 else "read"
            why = "outside its memory" if not code & 1 else \
                "its code, which is read-only" if access == "wrote" else \
                "memory that is not code" if access == "executed" else "protected memory"
            stack = vm.stack_guard(cr2)
            if stack:
                return SandboxViolation(f"{what} exhausted its stack of "
                                        f"{self._kvmc.STACK_SIZE // _MIB} MiB (page fault at "
                                        f"{cr2:#x}, rip {rip:#x})", function=name,
                                        hint="unbounded recursion exhausts the stack this way")
            return SandboxViolation(f"{what} {access} {why} (page fault at {cr2:#x}, rip "
                                    f"{rip:#x})", function=name)
        why = _VECTORS.get(vector, f"raised exception {vector}")
        return SandboxViolation(f"{what} {why} at {rip:#x}", function=name)

    def close(self) -> None:
        with self._lock:
            vms, self._free = self._free, []
            self._images.clear()
        for vm in vms:
            vm.close()
        super().close()

    def __repr__(self) -> str:
        return f"<KvmEngine memory_limit={self.memory_limit}>"


def _what(spec: FunctionSpec) -> str:
    return f"{spec.kind} function '{spec.name}'"


Engine = KvmEngine
