"""Each hostile compute function is stopped with an error that names the function and the
violation; the worker keeps serving, and a well-behaved invocation running at the same time
still returns the right result."""

from __future__ import annotations

import os
import socket
import sys
import threading

import pytest

import dandelion as dd
from dandelion.errors import FunctionError, FunctionTimeout, SandboxViolation
from tests.security import hostile as h

GOOD_N = 200_000
GOOD = sum(i * i for i in range(GOOD_N))


def _stopped(rt: dd.Runtime, fn: dd.compute, arg: int, error: type[Exception],
             *fragments: str) -> FunctionError:
    """Run ``fn(arg)`` next to a well-behaved invocation; check both outcomes."""
    good = rt.submit(h.wrap(h.well_behaved), GOOD_N)
    with pytest.raises(error) as info:
        rt.run(h.wrap(fn), arg)
    message = str(info.value)
    assert f"'{fn.name}'" in message
    for fragment in fragments:
        assert fragment in message
    assert good.result(timeout=30) == GOOD
    assert rt.run(h.wrap(h.well_behaved), 10) == 285  # the worker still serves
    return info.value


@pytest.mark.parametrize(("fn", "syscall"), [
    (h.open_file, "openat"),
    (h.list_directory, "openat"),
    (h.open_socket, "socket"),
    (h.exec_program, "execve"),
    (h.fork_process, "clone"),
    (h.ptrace_self, "ptrace"),
    (h.raise_priority, "setpriority"),
    (h.read_environ, "openat"),
    (h.raw_syscall, "getuid"),
    (h.write_stdout, "write"),
    (h.entropy, "getrandom"),
], ids=lambda v: getattr(v, "name", v))
def test_forbidden_system_call_is_named(sandboxed, fn, syscall):
    err = _stopped(sandboxed, fn, 0, SandboxViolation,
                   f"attempted forbidden system call {syscall}")
    assert err.function == fn.name


def test_the_working_directory_a_sandbox_sees_is_the_root(sandboxed):
    """getcwd is allowed (Pillow's save asks it) and tells nothing of the worker: a
    sandbox's directory is /, whatever the worker's."""
    assert os.getcwd() != "/"
    assert sandboxed.run(h.wrap(h.working_directory), 0) == "/"


def test_signal_to_the_worker_is_blocked(sandboxed):
    _stopped(sandboxed, h.signal_worker, os.getpid(), SandboxViolation,
             "forbidden system call kill")


def test_descriptor_it_was_not_given_is_unwritable(sandboxed):
    r, w = os.pipe()
    try:
        _stopped(sandboxed, h.write_other_fd, w, SandboxViolation, "forbidden system call write")
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 10)
    finally:
        os.close(r)
        os.close(w)


def test_connecting_to_a_local_server_never_reaches_it(sandboxed):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            accepted.append(server.accept()[0])
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    try:
        _stopped(sandboxed, h.connect_local, port, SandboxViolation,
                 "forbidden system call socket")
    finally:
        t.join()
        server.close()
    assert accepted == []


def test_unbounded_allocation_hits_the_memory_limit(sandboxed):
    _stopped(sandboxed, h.allocate_forever, 0, SandboxViolation, "memory limit of 256 MiB")


def test_endless_loop_is_killed_at_its_timeout(sandboxed):
    _stopped(sandboxed, h.spin, 0, FunctionTimeout, "timeout of 3 s", "killed")


def test_endless_loop_is_killed_at_the_cpu_limit_without_a_timeout():
    with dd.Runtime(engine="process", workers=1, engine_options={"cpu_limit": 1}) as rt:
        _stopped(rt, h.spin, 0, FunctionTimeout, "CPU time limit of 1 s")


def test_unbounded_recursion_raises_recursion_error(sandboxed):
    err = _stopped(sandboxed, h.recurse, 0, FunctionError, "raised RecursionError")
    causes = []
    while err is not None:
        causes.append(err)
        err = err.__cause__
    assert any(isinstance(c, RecursionError) for c in causes)


def test_recursion_past_the_c_stack_fails_only_its_invocation(sandboxed):
    if sys.version_info >= (3, 12):  # the interpreter bounds C recursion itself
        _stopped(sandboxed, h.recurse_past_the_stack, 0, FunctionError,
                 "raised RecursionError")
    else:  # the C stack overflows: the sandbox crashes, the worker reports it
        _stopped(sandboxed, h.recurse_past_the_stack, 0, SandboxViolation,
                 "crashed with SIGSEGV")


def test_huge_output_is_refused(sandboxed):
    _stopped(sandboxed, h.huge_output, 9 << 20, SandboxViolation, "output", "limit of 8 MiB")


def test_output_within_the_limit_comes_back_whole(sandboxed):
    assert sandboxed.run(h.wrap(h.huge_output), 4 << 20) == b"x" * (4 << 20)


def test_segmentation_fault_fails_only_that_invocation(sandboxed):
    _stopped(sandboxed, h.segfault, 0, SandboxViolation, "crashed with SIGSEGV",
             "invalid memory access at 0xdeadbeef000")


def test_a_forged_report_on_the_channel_is_refused(sandboxed):
    _stopped(sandboxed, h.forge_report, 0, SandboxViolation, "malformed report")


def test_a_forged_report_nested_too_deeply_is_refused(sandboxed):
    _stopped(sandboxed, h.forge_deep_report, 0, SandboxViolation, "malformed report")


@pytest.mark.parametrize(("x", "why"), [
    (0, "the .npy data is shorter than its shape (128, 128) needs"),
    (1, "an ndarray of Python objects cannot be decoded"),
    (2, "the .npy data is shorter than its shape (4294967296, 4294967296, 4294967296, "
        "4294967296) needs"),
    (3, "truncated .npy header"),
    (4, "does not start with the .npy magic"),
])
def test_a_forged_array_output_fails_its_own_invocation_with_the_reason(sandboxed, x, why):
    """The worker reads a plain array's ``.npy`` in C (``c/npy.c``) and leaves anything
    else to the codec: a malformed or hostile one fails only its invocation, saying why."""
    _stopped(sandboxed, h.forge_npy_output, x, FunctionError, why)


def test_garbage_on_the_channel_is_refused_and_the_sandbox_killed(sandboxed):
    _stopped(sandboxed, h.garbage_on_channel, 0, SandboxViolation, "outside the protocol")


def test_exiting_the_process_is_reported(sandboxed):
    _stopped(sandboxed, h.exit_process, 0, SandboxViolation, "exited (status 3)")


def test_many_violations_in_parallel_leave_good_work_intact(sandboxed):
    bad = [sandboxed.submit(h.wrap(fn), 0) for fn in (h.open_file, h.segfault, h.exec_program,
                                                       h.fork_process) * 3]
    good = [sandboxed.submit(h.wrap(h.well_behaved), n) for n in range(1, 40)]
    for f in bad:
        with pytest.raises(SandboxViolation):
            f.result(timeout=60)
    assert [f.result(timeout=60) for f in good] == [sum(i * i for i in range(n))
                                                    for n in range(1, 40)]


def test_a_sandbox_that_lies_about_being_done_is_still_ended(sandboxed):
    import time

    with pytest.raises(FunctionError, match="'forge_success', its instance: returned no item "
                       "for result 'result'"):  # what the forged report left: nothing
        sandboxed.run(h.wrap(h.forge_success), 0)
    time.sleep(0.5)
    spinning = [p for p in _sandbox_processes() if _cpu_seconds(p) > 0.4]
    assert spinning == []


def _sandbox_processes() -> list[int]:
    from dandelion.backends.engines.process import pool

    pids = []
    for z in pool.running():
        try:
            children = open(f"/proc/{z.process.pid}/task/{z.process.pid}/children").read()
        except OSError:
            continue
        pids += [int(p) for p in children.split()]
    return pids


def _cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
