"""The zygote: a lean process holding only the trusted runtime, forking generic sandboxes.

It is started once per set of preloaded libraries (``()`` — the lean one — or e.g.
``("numpy",)``), with a clean environment and single-threaded math libraries.  It imports the
runtime, builds the seccomp filter once, freezes its heap (``gc.freeze``) and then forks
sandboxes on request.  Each sandbox gets a fresh socket pair; the zygote passes the worker's
end over the control socket (``SCM_RIGHTS``) and keeps none.  The zygote is the sandboxes'
parent: it reaps them, reports how each ended, and kills one on the worker's request (no
pid-reuse race, since a child is never reaped before it is killed).

Control messages (``SOCK_SEQPACKET``): worker -> zygote ``F<n>`` fork n, ``K<pid>`` kill,
``W<pid>`` report how pid ended; zygote -> worker ``R`` ready, ``C<pid>`` + descriptors
(the channel and, where the kernel has them, a pidfd of the sandbox, with which the worker
ends it after its invocation), ``X<pid><wait status>``.  The zygote keeps the pool's size
by itself: every sandbox that exits (after its one invocation) is replaced by a new one, so
a normal invocation costs the worker no control message at all.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import signal
import socket
import struct
import sys

from dandelion.backends import _sandbox_child, _sandboxc
from dandelion.backends._sandbox_filter import build_filter
from dandelion.runtime import pickling

MSG = struct.Struct("<cii")

#: Modules every sandbox has loaded before its filter is installed (the trusted runtime and
#: what unpickling a function and its items needs).
RUNTIME = ("cloudpickle", "typeguard", "json", "ast", "struct", "pickle", "copyreg",
           "dandelion.authoring.compute", "dandelion.authoring.annotations", "dandelion.codec",
           "dandelion.runtime.pickling",
           "dandelion.backends._sandbox_layout", "encodings.latin_1", "encodings.ascii",
           "encodings.utf_8", "collections", "functools", "itertools", "math", "operator",
           "re", "typing", "dataclasses", "decimal", "fractions", "statistics", "random",
           "hashlib", "base64", "string", "datetime", "ctypes")


def main(argv: list[str]) -> None:
    """``python -m dandelion.backends._sandbox_zygote FD CPU WARM MEMORY CAP PRELOAD...``.

    ``MEMORY`` > 0: sandboxes for Python functions, filtered before they wait, with that
    memory limit; 0: unfiltered until assigned (they may also run native functions).
    ``CAP``: exited sandboxes are replaced while fewer than this many are alive.
    """
    fd, cpu, warm = int(argv[0]), int(argv[1]) or None, argv[2] == "1"
    memory, cap = int(argv[3]) or None, int(argv[4])
    for name in RUNTIME + tuple(argv[5:]):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    program = build_filter(_sandbox_child.CHANNEL_FD)
    pickling.warm()  # the globals function pickles name: resolved once, here
    samples = _probe_pickles()
    _sandbox_child.warm_up(samples)
    if "numpy" in sys.modules:
        _warm_numpy()
    ctrl = socket.socket(fileno=fd)
    live: set[int] = set()
    statuses: dict[int, int] = {}
    wanted: set[int] = set()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # wakes the loop through wake_w
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.collect()
    gc.freeze()  # keep refcount/GC writes from dirtying inherited pages
    loaded = sorted(sys.modules)  # packages and submodules: a function may need either
    ctrl.send(MSG.pack(b"R", os.getpid(), 0) + "\n".join(loaded).encode())
    poller = select.poll()
    poller.register(ctrl, select.POLLIN)
    poller.register(wake_r, select.POLLIN)

    def fork(n: int) -> None:
        for _ in range(max(0, min(n, 64))):
            pid = _fork(ctrl, program, cpu, live, samples if warm else (), memory)
            statuses.pop(pid, None)  # pids are reused: what an earlier one did is stale
            wanted.discard(pid)

    try:
        while True:
            events = dict(poller.poll())
            if wake_r in events:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                replace = 0
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    live.discard(pid)
                    replace += 1  # a used sandbox exited: keep the pool's size
                    if pid in wanted:
                        wanted.discard(pid)
                        ctrl.send(MSG.pack(b"X", pid, status))
                    else:
                        statuses[pid] = status
                        if len(statuses) > 1024:
                            statuses.pop(next(iter(statuses)))
                fork(min(replace, cap - len(live)))
            if ctrl.fileno() not in events:
                continue
            msg = ctrl.recv(64)
            if len(msg) != MSG.size:
                break  # the worker is gone
            op, a, _b = MSG.unpack(msg)
            if op == b"F":
                fork(a)
            elif op == b"K" and a in live:
                try:
                    os.kill(a, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            elif op == b"W":
                if a in statuses:
                    ctrl.send(MSG.pack(b"X", a, statuses.pop(a)))
                else:
                    wanted.add(a)
    except OSError:  # the worker went away
        pass
    for pid in list(live):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(0)


def _warm_numpy() -> None:
    """Run numpy's lazy one-time setup (ufunc loops, matmul, BLAS buffers) here, once,
    rather than in every sandbox, where its memory mappings would count as the function's."""
    import numpy as np

    for dtype in (np.int64, np.float64, np.float32):
        a = np.arange(64, dtype=dtype).reshape(8, 8)
        b = a @ a.T
        (a * 2 + b).sum(axis=0).max()
        np.dot(a, b)
    np.frombuffer(bytes(64), dtype=np.int64).reshape(8, 1).copy()


def _probe_pickles() -> tuple[bytes, ...]:
    """Pickles of the runtime's probe functions (:func:`._sandbox_child.warm_up`)."""
    import cloudpickle

    from dandelion.authoring.compute import ComputeFunction

    fns = [_sandbox_child.probe]
    if "numpy" in sys.modules:
        fns.append(_sandbox_child.probe_matrix())
    cloudpickle.register_pickle_by_value(_sandbox_child)
    try:
        return tuple(pickling.dumps(ComputeFunction(fn).artifact) for fn in fns)
    finally:
        cloudpickle.unregister_pickle_by_value(_sandbox_child)


def _fork(ctrl: socket.socket, program: bytes, cpu: int | None, live: set[int],
          samples: tuple[bytes, ...], memory: int | None) -> int:
    if memory is not None:
        # Python sandboxes: channel, fork, lock-down and hand-over in C, so that neither
        # the child before its lock-down nor this zygote after the fork writes to pages
        # they share (each such write is a page copy)
        pid, baseline = _sandboxc.spawn_sandbox(ctrl.fileno(), cpu or 0, memory,
                                                None if samples else program)
        if pid == 0:
            if samples:
                _sandbox_child.warm_up(samples)
                _sandbox_child.limit_and_filter(baseline, memory, program)
            _sandbox_child.serve_filtered(baseline)
        live.add(pid)
        return int(pid)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = _sandboxc.fork_raw()  # no Python at-fork hooks: they would dirty hundreds of pages
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(theirs.fileno(), _sandbox_child.CHANNEL_FD, inheritable=False)
        _sandbox_child.serve(program, cpu, samples)
    _handed_over(ctrl, pid, ours, theirs, live)
    return int(pid)


def _handed_over(ctrl: socket.socket, pid: int, ours: socket.socket, theirs: socket.socket,
                 live: set[int]) -> None:
    live.add(pid)
    theirs.close()
    fds = [ours.fileno()]
    try:  # lets the worker end this sandbox itself, race-free, without a message to us
        fds.append(os.pidfd_open(pid))
    except OSError:
        pass
    try:
        socket.send_fds(ctrl, [MSG.pack(b"C", pid, 0)], fds)
    finally:
        ours.close()
        for fd in fds[1:]:
            os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1:])
