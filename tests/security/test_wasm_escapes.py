"""Wasm functions run in a fresh wasmtime instance that imports nothing: reads and writes
outside its linear memory, stack exhaustion, loops, huge outputs, memory growth and error
codes fail only their own invocation, naming the function and what it did, and the worker
goes on serving; nothing one invocation leaves in its memory reaches the next."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dandelion as dd
from dandelion.errors import BackendError, FunctionError, FunctionTimeout, SandboxViolation
from dandelion.sdk import build_wasm

from .conftest import MEMORY_LIMIT, OUTPUT_LIMIT, build_each, one_call

pytestmark = [
    pytest.mark.skipif(shutil.which("clang") is None or shutil.which("wasm-ld") is None,
                       reason="needs clang and lld (apt-get install clang lld)"),
    pytest.mark.skipif(importlib.util.find_spec("wasmtime") is None,
                       reason="needs wasmtime (pip install 'dandelion[wasm]')"),
]

SOURCES = {
    "read_outside": """
        #include <dandelion.h>
        int dandelion_main(void) { return *(volatile int *)0xfffffff0u; }""",
    "write_outside": """
        #include <dandelion.h>
        int dandelion_main(void) { *(volatile int *)0x7ffffff0u = 1; return 0; }""",
    "spin": """
        #include <dandelion.h>
        int dandelion_main(void) { for (volatile int i = 0;; i++) {} return 0; }""",
    "overflow": """
        #include <dandelion.h>
        static int down(volatile int n) { volatile char pad[256]; pad[0] = n;
                                          return down(n + 1) + pad[0]; }
        int dandelion_main(void) { return down(0); }""",
    "deep": """
        #include <dandelion.h>
        static volatile int sink;
        static int down(int n) { if (!n) return 0; int r = down(n - 1); sink = r;
                                 return r + 1; }
        int dandelion_main(void) { return down(1 << 30) == 0; }""",
    "big_frame": """
        #include <dandelion.h>
        int dandelion_main(void) {
            volatile char big[2 << 20];  /* more than the whole 1 MiB stack */
            for (unsigned i = 0; i < sizeof big; i += 4096) big[i] = 1;
            return big[0] - 1;
        }""",
    "too_much": """
        #include <dandelion.h>
        int dandelion_main(void) { return dd_alloc(1ULL << 40) ? 0 : 9; }""",
    "flood": """
        #include <dandelion.h>
        int dandelion_main(void) {
            static char chunk[4096];
            for (;;) { int r = dd_add_output(0, chunk, sizeof chunk, 0, 0);
                       if (r) return 10 - r; }
        }""",
    "grow": """
        #include <dandelion.h>
        int dandelion_main(void) {
            /* a page at a time until refused: the memory limit stops it */
            unsigned long pages = 0;
            while (__builtin_wasm_memory_grow(0, 1) != (unsigned long)-1) pages++;
            return pages * 65536ull <= LIMIT ? 11 : 12;
        }""".replace("LIMIT", str(MEMORY_LIMIT)),
    "fails": """
        #include <dandelion.h>
        int dandelion_main(void) { return 7; }""",
    "leave_secret": """
        #include <dandelion.h>
        static volatile long long secret;
        static volatile char scratch[1 << 16];
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in) != 0) return 1;
            secret = 0x5ec2e7;
            for (int i = 0; i < (1 << 16); i++) scratch[i] = 0x5e;
            /* and in the context's heap, past what it returns */
            char *h = dd_alloc(1 << 16);
            for (int i = 0; h && i < (1 << 16); i++) h[i] = 0x5e;
            long long found = secret;
            return dd_add_output(0, &found, 8, in.key, 0);
        }""",
    "peek_then_leave": """
        #include <dandelion.h>
        static volatile long long secret;
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in) != 0) return 1;
            long long seen = secret;  /* what an earlier instance of this module left */
            char *h = dd_alloc(1 << 16);
            for (int i = 0; h && i < (1 << 16); i++) { seen += h[i]; h[i] = 0x5e; }
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
            long long seen = secret;
            for (int i = 0; i < (1 << 16); i++) seen += scratch[i];
            char *h = dd_alloc(1 << 16);
            for (int i = 0; h && i < (1 << 16); i++) seen += h[i];
            return dd_add_output(0, &seen, 8, in.key, 0);
        }""",
}


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_each(SOURCES, tmp_path_factory.mktemp("wasm"), ".wasm", build_wasm)


@pytest.fixture(scope="module")
def wasm_runtime() -> Iterator[dd.Runtime]:
    """A wasm-engine runtime with the security suite's limits (3 s, 256 MiB, 8 MiB)."""
    rt = dd.Runtime(engine="wasm", workers=2, timeout=3.0,
                    engine_options={"memory_limit": MEMORY_LIMIT, "output_limit": OUTPUT_LIMIT})
    try:
        yield rt
    finally:
        rt.close()



def _still_serving(rt: dd.Runtime, modules: dict[str, Path]) -> None:
    assert rt.run(one_call("look_for_secret", wasm=modules["look_for_secret"]), 5) == 0


@pytest.mark.parametrize(("name", "error", "fragment"), [
    ("read_outside", SandboxViolation, "read or wrote outside its memory"),
    ("write_outside", SandboxViolation, "read or wrote outside its memory"),
    ("spin", FunctionTimeout, "ran past its timeout of 3 s"),
    ("overflow", SandboxViolation, "exhausted its stack (wasm trap: call stack exhausted)"),
    ("deep", SandboxViolation, "exhausted its stack"),
    ("big_frame", SandboxViolation, "outside its memory"),  # the shadow stack runs under 0
    ("fails", FunctionError, "returned error code 7"),
    ("too_much", FunctionError, "returned error code 9"),
    ("flood", FunctionError, "returned error code 12"),  # dd_add_output said -2: full
    ("grow", FunctionError, "returned error code 11"),   # refused within the limit
])
def test_wasm_failures_are_reported_and_the_worker_goes_on(wasm_runtime, modules, name,
                                                            error, fragment):
    with pytest.raises(error) as info:
        wasm_runtime.run(one_call(name, wasm=modules[name]), 1)
    assert f"compute function '{name}'" in str(info.value)
    assert fragment in str(info.value)
    assert info.value.function == name
    _still_serving(wasm_runtime, modules)


def test_nothing_an_invocation_leaves_in_its_memory_reaches_the_next(wasm_runtime, modules):
    leave = one_call("leave_secret", wasm=modules["leave_secret"])
    look = one_call("look_for_secret", wasm=modules["look_for_secret"])
    for _ in range(3):
        assert wasm_runtime.run(leave, 1) == 0x5ec2e7
        assert wasm_runtime.run(look, 1) == 0


def test_an_instance_sees_nothing_an_earlier_instance_of_its_module_left(wasm_runtime, modules):
    # instances come from a pool of memory slots, reused for the same module first
    peek = one_call("peek_then_leave", wasm=modules["peek_then_leave"])
    assert [wasm_runtime.run(peek, i) for i in range(5)] == [0] * 5  # no cache hits


def test_a_module_that_imports_anything_is_refused(tmp_path):
    src = tmp_path / "calls_out.c"
    src.write_text("#include <dandelion.h>\nint host_open(const char *);\n"
                   "int dandelion_main(void) { return host_open(\"/etc/passwd\"); }\n")
    with pytest.raises(BackendError, match="undefined symbol: host_open"):
        build_wasm([src], tmp_path / "calls_out.wasm")
    # linked anyway, it is refused where it is loaded, before anything runs it
    with pytest.raises(BackendError, match="'calls_out': imports 1 function or value; a "
                                           "wasm function may import nothing"):
        build_wasm([src], tmp_path / "calls_out.wasm", extra=["-Wl,--allow-undefined"])
    with pytest.raises(BackendError, match="may import nothing"):
        dd.compute(lambda x: x, name="calls_out",
                   wasm=(tmp_path / "calls_out.wasm").read_bytes())


#: A user's program: the wasm functions that trap by a fault (an access outside memory, a
#: stack overflow, ``unreachable``) run with wasmtime's signal handlers installed, then after
#: the program installs handlers of its own for those signals (as Ray's driver does at
#: ``ray.init``; Python's handler returns, so a fault taken by it would fault again forever)
FOREIGN_HANDLERS = """
import signal
import sys

import dandelion as dd
from dandelion.backends.engines.wasm import capi
from dandelion.errors import SandboxViolation


def one_call(name, module):
    def body(x: int) -> int:
        return x

    body.__name__ = body.__qualname__ = name
    fn = dd.compute(body, wasm=module)

    @dd.composition
    def one(x: int) -> int:
        return fn(x)

    return one


modules = dict(arg.split("=", 1) for arg in sys.argv[1:])
with dd.Runtime(engine="wasm", workers=1, timeout=3.0) as rt:
    for handlers in ("wasmtime's", "foreign"):
        print(handlers, "intact:", capi.handlers_intact(), flush=True)
        for name in ("read_outside", "overflow", "unreachable"):
            try:
                rt.run(one_call(name, modules[name]), 1)
            except SandboxViolation as e:
                print(name, "failed its invocation:", str(e).splitlines()[0], flush=True)
        for sig in (signal.SIGSEGV, signal.SIGILL, signal.SIGFPE):
            signal.signal(sig, lambda *args: None)
    print("still serving:", rt.run(one_call("fails_not", modules["fails_not"]), 5))
"""


def test_a_fault_fails_its_invocation_after_a_library_replaced_wasmtimes_signal_handlers(
        tmp_path: Path, modules: dict[str, Path]) -> None:
    """Compiled code traps by signals while wasmtime's handlers are installed; once a user
    program installs its own handlers of SIGSEGV, SIGILL and SIGFPE, the engine runs
    invocations on code that checks every access itself, so an access outside memory, a
    stack overflow and ``unreachable`` still fail only their own invocation, and the
    process goes on (without that, Python's handler returns and the fault repeats)."""
    built = build_each({"unreachable": """
        #include <dandelion.h>
        int dandelion_main(void) { __builtin_trap(); }""", "fails_not": """
        #include <dandelion.h>
        int dandelion_main(void) { dd_item in; if (dd_input_item(0, 0, &in)) return 1;
                                   return dd_add_output(0, in.data, in.size, in.key, 0); }"""},
                       tmp_path, ".wasm", build_wasm)
    script = tmp_path / "program.py"
    script.write_text(FOREIGN_HANDLERS)
    args = [f"{name}={path}" for name, path in
            {**built, "read_outside": modules["read_outside"],
             "overflow": modules["overflow"]}.items()]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "wasmtime's intact: True" and lines[4] == "foreign intact: False"
    for block in (lines[1:4], lines[5:8]):
        assert [line.split(" failed")[0] for line in block] == \
            ["read_outside", "overflow", "unreachable"]
        assert "read or wrote outside its memory" in block[0]
        assert "exhausted its stack" in block[1] and "reached unreachable code" in block[2]
    assert lines[8] == "still serving: 5"
