"""Native functions run under seccomp strict mode on the process engine: any system call but
read, write and exit kills them; on every engine that runs native ELFs (process, kvm),
crashes, loops, error codes and the wrong number of items fail only their own invocation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import dandelion as dd
from dandelion.errors import FunctionError, FunctionTimeout, SandboxViolation
from dandelion.sdk import build

from .conftest import build_each, one_call

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

SOURCES = {
    "getpid": """
        #include <dandelion.h>
        int dandelion_main(void) {
            long r;
            __asm__ volatile ("syscall" : "=a"(r) : "a"(39L) : "rcx", "r11", "memory");
            return (int)r;
        }""",
    "open_file": """
        #include <dandelion.h>
        int dandelion_main(void) {
            static const char path[] = "/etc/hostname";
            long r;
            __asm__ volatile ("syscall" : "=a"(r) : "a"(2L), "D"(path), "S"(0L)
                              : "rcx", "r11", "memory");
            return (int)r;
        }""",
    "spin": """
        #include <dandelion.h>
        int dandelion_main(void) { for (volatile int i = 0;; i++) {} return 0; }""",
    "segfault": """
        #include <dandelion.h>
        int dandelion_main(void) { *(volatile int *)0xdeadbeef000 = 1; return 0; }""",
    "fails": """
        #include <dandelion.h>
        int dandelion_main(void) { return 7; }""",
    "overflow": """
        #include <dandelion.h>
        static int down(volatile int n) { volatile char pad[256]; pad[0] = n;
                                          return down(n + 1) + pad[0]; }
        int dandelion_main(void) { return down(0); }""",
    "too_much": """
        #include <dandelion.h>
        int dandelion_main(void) { return dd_alloc(1ULL << 40) ? 0 : 9; }""",
    "echo": """
        #include <dandelion.h>
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in)) return 1;
            return dd_add_output(0, in.data, in.size, in.key, 0);
        }""",
    "no_output": """
        #include <dandelion.h>
        int dandelion_main(void) { return 0; }""",
    "two_outputs": """
        #include <dandelion.h>
        #include <stdint.h>
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in) != 0) return 1;
            int64_t *out = dd_alloc(16);
            if (!out) return 2;
            out[0] = out[1] = *(const int64_t *)in.data;
            if (dd_add_output(0, out, 8, in.key, 0) != 0) return 3;
            return dd_add_output(0, out + 1, 8, in.key, 0);
        }""",
}


@pytest.fixture(scope="module")
def elves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_each(SOURCES, tmp_path_factory.mktemp("native"), ".elf", build)



@pytest.mark.parametrize("name", ["getpid", "open_file"])
def test_any_system_call_kills_a_native_function(sandboxed, elves, name):
    with pytest.raises(SandboxViolation, match=f"'{name}'.*seccomp strict mode"):
        sandboxed.run(one_call(name, native=elves[name]), 1)
    assert sandboxed.run(_still_serving(), 5) == 5


#: what each engine says of a crash (the rest is the same on both)
CRASHES = {
    "process": {"segfault": "crashed with SIGSEGV (invalid memory access at 0xdeadbeef000)",
                "overflow": "crashed with SIGSEGV"},
    "kvm": {"segfault": "wrote outside its memory (page fault at 0xdeadbeef000",
            "overflow": "exhausted its stack"},
}


@pytest.mark.parametrize(("name", "error", "fragment"), [
    ("spin", FunctionTimeout, "timeout of 3 s"),
    ("segfault", SandboxViolation, None),
    ("overflow", SandboxViolation, None),
    ("fails", FunctionError, "returned error code 7"),
    ("too_much", FunctionError, "returned error code 9"),
])
def test_native_failures_are_reported_and_the_worker_goes_on(native_engine, native_runtime,
                                                              elves, name, error, fragment):
    with pytest.raises(error) as info:
        native_runtime.run(one_call(name, native=elves[name]), 1)
    assert f"'{name}'" in str(info.value)
    assert (fragment or CRASHES[native_engine][name]) in str(info.value)
    assert info.value.function == name
    assert native_runtime.run(one_call("echo", native=elves["echo"]), 5) == 5


def _still_serving() -> dd.composition:
    @dd.compute
    def fine(x: int) -> int:
        return x

    @dd.composition
    def ok(x: int) -> int:
        return fine(x)

    return ok


@pytest.mark.parametrize(("name", "fragment"), [
    ("no_output", "returned no item for result 'result', which is one item"),
    ("two_outputs", "returned 2 items for result 'result', which is one item"),
])
def test_a_native_function_leaving_the_wrong_number_of_items_is_named(native_runtime, elves,
                                                                     name, fragment):
    with pytest.raises(FunctionError, match=f"compute function '{name}', its instance: "
                                            f"{fragment}") as info:
        native_runtime.run(one_call(name, native=elves[name]), 1)
    assert info.value.function == name


def test_two_items_from_a_native_producer_blame_it_not_its_consumer(sandboxed, elves):
    # (the consumer is a Python function: the process engine runs both)
    def two_outputs(x: int) -> int:
        return x

    producer = dd.compute(two_outputs, native=elves["two_outputs"])

    @dd.compute
    def inc(x: int) -> int:
        return x + 1

    @dd.composition
    def consumed(x: int) -> int:
        return inc(producer(x))

    with pytest.raises(FunctionError, match="compute function 'two_outputs'") as info:
        sandboxed.run(consumed, 1)
    assert info.value.function == "two_outputs" and "'inc'" not in str(info.value)
