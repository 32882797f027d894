"""Native functions on the kvm engine run at CPL3 in a virtual machine with no guest OS:
system-call instructions, interrupts, port I/O, ``hlt``, reads and writes outside their
memory, writes to their code, stack exhaustion, loops and huge outputs fail only their own
invocation, naming the function and what it did, and the engine goes on serving; nothing
one invocation leaves in the VM's memory or registers reaches the next."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import dandelion as dd
from dandelion.backends.engines.kvm.engine import unavailable_reason
from dandelion.errors import FunctionError, FunctionTimeout, SandboxViolation
from dandelion.sdk import build

from .conftest import MEMORY_LIMIT, build_each, one_call

_WHY = unavailable_reason()
pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
    pytest.mark.skipif(_WHY is not None, reason=f"needs KVM: {_WHY}"),
]


def _asm(body: str) -> str:
    return "#include <dandelion.h>\nint dandelion_main(void) {\n" + body + "\n}"


SOURCES = {
    "getpid": _asm('long r; __asm__ volatile ("syscall" : "=a"(r) : "a"(39L) : "rcx", "r11", '
                   '"memory"); return (int)r;'),
    "sysenter": _asm('__asm__ volatile ("sysenter" ::: "memory"); return 0;'),
    "int80": _asm('long r; __asm__ volatile ("int $0x80" : "=a"(r) : "a"(20L) : "memory"); '
                  'return (int)r;'),
    "halt": _asm('__asm__ volatile ("hlt"); return 0;'),
    "port_out": _asm('__asm__ volatile ("outb %%al, %%dx" :: "a"(65), "d"(0x3f8)); return 0;'),
    "port_in": _asm('unsigned char v; __asm__ volatile ("inb %%dx, %%al" : "=a"(v) : '
                    '"d"(0x60)); return v;'),
    "port_out16": _asm('__asm__ volatile ("outw %%ax, %%dx" :: "a"(65), "d"(0x3f8)); return 0;'),
    "cli": _asm('__asm__ volatile ("cli"); for (;;) {} return 0;'),
    "read_outside": _asm("return *(volatile int *)0xfffffff0u;"),
    "write_outside": _asm("*(volatile int *)0x7ffffff0u = 1; return 0;"),
    "segfault": _asm("*(volatile int *)0xdeadbeef000 = 1; return 0;"),
    "null": _asm("return *(volatile int *)0;"),
    "self_modify": """
        #include <dandelion.h>
        int dandelion_main(void) {
            volatile unsigned char *code = (volatile unsigned char *)&dandelion_main;
            code[0] = 0xc3;  /* ret */
            return 0;
        }""",
    "run_data": """
        #include <dandelion.h>
        static unsigned char code[16] = {0xb8, 0x2a, 0, 0, 0, 0xc3};  /* mov eax, 42; ret */
        int dandelion_main(void) { return ((int (*)(void))(void *)code)(); }""",
    "spin": _asm("for (volatile int i = 0;; i++) {} return 0;"),
    "overflow": """
        #include <dandelion.h>
        static int down(volatile int n) { volatile char pad[256]; pad[0] = n;
                                          return down(n + 1) + pad[0]; }
        int dandelion_main(void) { return down(0); }""",
    "divide": _asm("volatile int z = 0, one = 1; return one / z;"),
    "fails": _asm("return 7;"),
    "too_much": _asm("return dd_alloc(1ULL << 40) ? 0 : 9;"),
    "flood": """
        #include <dandelion.h>
        int dandelion_main(void) {
            static char chunk[4096];
            for (;;) { int r = dd_add_output(0, chunk, sizeof chunk, 0, 0);
                       if (r) return 10 - r; }
        }""",
    "leave_secret": """
        #include <dandelion.h>
        static volatile long long secret;
        static volatile char scratch[1 << 16];
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in) != 0) return 1;
            secret = 0x5ec2e7;
            for (int i = 0; i < (1 << 16); i++) scratch[i] = 0x5e;
            /* in the context's heap, past what it returns, on its stack, in a register */
            char *h = dd_alloc(1 << 16);
            for (int i = 0; h && i < (1 << 16); i++) h[i] = 0x5e;
            volatile char deep[1 << 16];
            for (int i = 0; i < (1 << 16); i++) deep[i] = 0x5e;
            __asm__ volatile ("movq %0, %%xmm7\\n movq %0, %%r15" :: "r"(secret)
                              : "xmm7", "r15");
            long long found = secret + deep[7] - 0x5e;
            return dd_add_output(0, &found, 8, in.key, 0);
        }""",
    "peek_then_leave": """
        #include <dandelion.h>
        static volatile long long secret = 1;  /* initialized data: from the image */
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in) != 0) return 1;
            long long seen = secret;  /* what an earlier invocation left */
            secret = 0x5ec2e7;
            return dd_add_output(0, &seen, 8, in.key, 0);
        }""",
    "look_for_secret": """
        #include <dandelion.h>
        static volatile long long secret;
        static volatile char scratch[1 << 16];
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in) != 0) return 1;
            long long seen = secret, reg = 0;
            for (int i = 0; i < (1 << 16); i++) seen += scratch[i];
            char *h = dd_alloc(1 << 16);
            for (int i = 0; h && i < (1 << 16); i++) seen += h[i];
            volatile char deep[1 << 16];
            for (int i = 0; i < (1 << 16); i++) seen += deep[i];
            __asm__ volatile ("movq %%xmm7, %0" : "=r"(reg)); seen += reg;
            __asm__ volatile ("movq %%r15, %0" : "=r"(reg)); seen += reg;
            return dd_add_output(0, &seen, 8, in.key, 0);
        }""",
}


@pytest.fixture(scope="module")
def elves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_each(SOURCES, tmp_path_factory.mktemp("kvm"), ".elf", build)


@pytest.fixture
def kvm_runtime(kvm_sandboxed: dd.Runtime) -> dd.Runtime:
    """The kvm-engine runtime with the security suite's limits (3 s, 256 MiB, 8 MiB)."""
    return kvm_sandboxed



def _still_serving(rt: dd.Runtime, elves: dict[str, Path]) -> None:
    assert rt.run(one_call("look_for_secret", native=elves["look_for_secret"]), 5) == 0


@pytest.mark.parametrize(("name", "error", "fragment"), [
    ("getpid", SandboxViolation, "attempted a system call (syscall)"),
    ("sysenter", SandboxViolation, "attempted a system call (sysenter)"),
    ("int80", SandboxViolation, "attempted a system call (int 0x80)"),
    ("halt", SandboxViolation, "attempted hlt"),
    ("port_out", SandboxViolation, "attempted port I/O"),
    ("port_in", SandboxViolation, "attempted port I/O"),
    ("port_out16", SandboxViolation, "attempted port I/O"),
    ("cli", SandboxViolation, "attempted cli"),
    ("read_outside", SandboxViolation, "read outside its memory (page fault at 0xfffffff0"),
    ("write_outside", SandboxViolation, "wrote outside its memory (page fault at 0x7ffffff0"),
    ("segfault", SandboxViolation, "wrote outside its memory (page fault at 0xdeadbeef000"),
    ("null", SandboxViolation, "read outside its memory (page fault at 0x0,"),
    ("self_modify", SandboxViolation, "wrote its code, which is read-only"),
    ("run_data", SandboxViolation, "executed memory that is not code"),
    ("spin", FunctionTimeout, "ran past its timeout of 3 s"),
    ("overflow", SandboxViolation, "exhausted its stack of 8 MiB"),
    ("divide", SandboxViolation, "divided by zero (#DE)"),
    ("fails", FunctionError, "returned error code 7"),
    ("too_much", FunctionError, "returned error code 9"),
    ("flood", FunctionError, "returned error code 12"),  # dd_add_output said -2: full
])
def test_kvm_failures_are_reported_and_the_engine_goes_on(kvm_runtime, elves, name, error,
                                                          fragment):
    with pytest.raises(error) as info:
        kvm_runtime.run(one_call(name, native=elves[name]), 1)
    assert f"compute function '{name}'" in str(info.value)
    assert fragment in str(info.value)
    assert info.value.function == name
    _still_serving(kvm_runtime, elves)


def test_nothing_an_invocation_leaves_in_its_vm_reaches_the_next(kvm_runtime, elves):
    leave = one_call("leave_secret", native=elves["leave_secret"])
    look = one_call("look_for_secret", native=elves["look_for_secret"])
    for _ in range(3):
        assert kvm_runtime.run(leave, 1) == 0x5ec2e7
        assert kvm_runtime.run(look, 1) == 0


def test_an_invocation_sees_nothing_an_earlier_one_of_the_same_function_left(elves):
    # one VM, so that the second invocation surely runs where the first one did
    with dd.Runtime(engine="kvm", workers=1, cache=False,
                    engine_options={"pool_size": 1, "memory_limit": MEMORY_LIMIT}) as rt:
        peek = one_call("peek_then_leave", native=elves["peek_then_leave"])
        assert [rt.run(peek, i) for i in range(4)] == [1] * 4
