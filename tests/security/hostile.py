"""Compute functions that try to escape their sandbox, one way each.

Every one takes an ``int`` (a port, a pid, a size …) and would return an ``int`` (or an
array) if it got that far.  ``wrap`` turns one into a single-application composition.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from typing import Any, Callable

import numpy as np

import dandelion as dd


@dd.compute
def open_file(x: int) -> int:
    with open("/etc/hostname", "rb") as f:
        return len(f.read())


@dd.compute
def list_directory(x: int) -> int:
    return len(os.listdir("/"))


@dd.compute
def open_socket(x: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    return s.fileno()


@dd.compute
def connect_local(port: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", port))
    s.sendall(b"escaped")
    return 1


@dd.compute
def exec_program(x: int) -> int:
    os.execv("/bin/true", ["true"])
    return 0


@dd.compute
def fork_process(x: int) -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


@dd.compute
def signal_worker(pid: int) -> int:
    os.kill(pid, signal.SIGTERM)
    return 0


@dd.compute
def ptrace_self(x: int) -> int:
    libc = ctypes.CDLL(None)
    return int(libc.ptrace(0, 0, None, None))  # PTRACE_TRACEME


@dd.compute
def raise_priority(x: int) -> int:
    os.setpriority(os.PRIO_PROCESS, 0, 0)  # back to its zygote's, ahead of its zygote
    return x


@dd.compute
def read_environ(x: int) -> int:
    with open("/proc/self/environ", "rb") as f:
        return len(f.read())


@dd.compute
def raw_syscall(x: int) -> int:
    libc = ctypes.CDLL(None)
    return int(libc.syscall(102))  # getuid, through the libc syscall() wrapper


@dd.compute(cacheable=False)
def working_directory(x: int) -> str:
    return os.getcwd()


@dd.compute
def write_stdout(x: int) -> int:
    return os.write(1, b"leak\n")


@dd.compute
def write_other_fd(fd: int) -> int:
    return os.write(fd, b"leak\n")


@dd.compute
def allocate_forever(x: int) -> int:
    hoard = []
    while True:
        hoard.append(bytearray(16 << 20))


@dd.compute
def spin(x: int) -> int:
    while True:
        x += 1


@dd.compute
def recurse(x: int) -> int:
    def down(n: int) -> int:
        return down(n + 1) + 1

    return down(0)


@dd.compute
def recurse_past_the_stack(x: int) -> int:
    sys.setrecursionlimit(10 ** 8)

    def down(n: int) -> list[int]:
        return list(map(down, [n + 1]))  # through C, so each level takes C stack

    return len(down(0))


@dd.compute
def huge_output(n: int) -> bytes:
    return b"x" * n


@dd.compute
def segfault(x: int) -> int:
    return len(ctypes.string_at(0xDEADBEEF000, 16))  # never mapped


@dd.compute
def exit_process(x: int) -> int:
    os._exit(3)


@dd.compute
def entropy(x: int) -> int:
    return len(os.urandom(8))


@dd.compute
def forge_report(x: int) -> int:
    body = b"[1, 2]"
    os.write(3, b"DONE" + len(body).to_bytes(4, "little") + body)  # 3: the channel
    while True:
        pass


@dd.compute
def forge_deep_report(x: int) -> int:
    body = b"[" * 100_000 + b"]" * 100_000  # deeper than the worker's json can read
    os.write(3, b"DONE" + len(body).to_bytes(4, "little") + body)
    while True:
        pass


@dd.compute
def forge_success(x: int) -> int:
    os.write(3, b"OKAY" + bytes(8))  # "done, in 0 ns" - and then keep the CPU busy
    while True:
        pass


@dd.compute
def garbage_on_channel(x: int) -> int:
    os.write(3, b"\xff" * 64)
    while True:
        pass


@dd.compute
def well_behaved(n: int) -> int:
    return sum(i * i for i in range(n))


def wrap(fn: dd.compute) -> dd.composition:
    """A composition that applies ``fn`` once to its input ``x``."""
    @dd.composition
    def one(x: int):  # noqa: ANN202 - the output type is fn's
        return fn(x)

    one.__name__ = f"run_{fn.name}"
    return one


def _outputs_frame() -> Any:
    """The frame that is about to write this invocation's outputs: ``_run_python`` inside a
    process sandbox (locals ``ctx``, ``artifact``), or the inline engine's ``run`` in the
    caller's process (local ``context``)."""
    frame = sys._getframe(2)
    while frame is not None:
        if "ctx" in frame.f_locals and "artifact" in frame.f_locals:
            return frame
        if hasattr(frame.f_locals.get("context"), "outputs"):
            return frame
        frame = frame.f_back
    raise RuntimeError("no outputs in reach")


def _forge_inline(context: Any, forge: Callable[[list], list]) -> None:
    """Make the next write of ``context.outputs`` store ``forge(outputs)`` (once)."""
    base = type(context)

    class Forged(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        @property
        def outputs(self) -> Any:
            return base.outputs.__get__(self)

        @outputs.setter
        def outputs(self, value: Any) -> None:
            self.__class__ = base
            base.outputs.__set__(self, forge(value))

    context.__class__ = Forged


@dd.compute
def forge_extra_item(x: int) -> int:
    """Leaves two items for its one-item result when ``x`` is 2 (one written into the
    sandbox's context behind the runtime's back, or added as the inline engine stores it)."""
    if x == 2:
        frame = _outputs_frame()
        if "ctx" in frame.f_locals:
            code = frame.f_globals["ELEMENT_CODES"][
                frame.f_locals["artifact"].results[0][1].type.element]
            frame.f_globals["add_outputs"](frame.f_locals["ctx"], 0, code, [dd.Item(x)])
        else:
            _forge_inline(frame.f_locals["context"], lambda outs: [o + o for o in outs])
    return x


@dd.compute
def forge_no_item(x: int) -> int:
    """Leaves no item for its one-item result when ``x`` is 2 (reports success on the
    sandbox's channel before writing any, or empties what the inline engine stores)."""
    if x == 2:
        frame = _outputs_frame()
        if "ctx" in frame.f_locals:
            channel, okay = frame.f_globals["CHANNEL_FD"], frame.f_globals["OKAY"]
            os.write(channel, okay.pack(b"OKAY", 0))
            while True:
                pass
        _forge_inline(frame.f_locals["context"], lambda outs: [() for _ in outs])
    return x


def _npy(shape: str, descr: str = "<i8", data: bytes = bytes(64)) -> bytes:
    """A ``.npy`` item of ``data`` whose header says ``descr`` and ``shape``."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n".encode()
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


#: ``.npy`` items a sandbox may leave for an ``ndarray`` result, each malformed one way:
#: more data claimed than written, an array of Python objects (a pickle), a shape whose
#: size overflows, a header longer than the item, no ``.npy`` at all
FORGED_NPY = (_npy("(128, 128)"), _npy("(1,)", "|O"), _npy("(4294967296, 4294967296, "
                                                          "4294967296, 4294967296)"),
              _npy("(1,)")[:8] + b"\xff\xff{'descr': '<i8'", b"not an array")


@dd.compute
def forge_npy_output(x: int) -> np.ndarray:
    """Leaves :data:`FORGED_NPY` ``[x]`` as its result, written into its context behind the
    runtime's back (as bytes, then retyped ``ndarray`` in the output table), ahead of the
    array it returns."""
    frame = _outputs_frame()
    ctx = frame.f_locals["ctx"]
    frame.f_globals["add_outputs"](ctx, 0, 1, [dd.Item(FORGED_NPY[x])])
    ctx[len(ctx) - 48 + 36] = 7  # the entry written last lies lowest; ndarray
    return np.zeros(2)
