"""The worker's side of a zygote: start it, keep a small pool of generic sandboxes ready,
learn how each sandbox ended.

Sandboxes are generic (never specific to a function) and single-use: :meth:`Zygote.take`
hands one out, and the zygote forks a replacement when it exits, so process creation stays
off the critical path as long as requests do not outrun the pool.
"""

from __future__ import annotations

import atexit
import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from dandelion.backends.engines.process import _sandboxc
from dandelion.backends.engines.process.protocol import (
    CONTROL,
    ENDED,
    FORK,
    FORKED,
    KILL,
    RESET,
    RESET_DONE,
    SNAP,
    SNAPPED,
    STARTED,
    WAIT,
    WARM,
)
from dandelion.errors import BackendError

#: Environment of a zygote: nothing of the worker's but what locates Python and keeps
#: numerical libraries single-threaded (a sandbox cannot create threads).
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TMPDIR")

#: How a Python zygote starts, before it imports anything: its arenas follow one another
#: from then on (``_sandboxc.heap_arenas``), so that huge pages can back them.  The
#: extension is loaded from its file, ahead of its package: importing ``dandelion`` first
#: (attrs, the items) left some 4 MiB of arenas where no huge page could back them, each of
#: their 4 KiB pages a page-table entry that every fork copies.
_ARENAS = ("import sys\n"
           "from importlib.util import module_from_spec, spec_from_file_location\n"
           f"spec = spec_from_file_location({_sandboxc.__name__!r}, {_sandboxc.__file__!r})\n"
           "sys.modules[spec.name] = module = module_from_spec(spec)\n"
           "spec.loader.exec_module(module)\n"
           "module.heap_arenas()\n")
_BOOT = _ARENAS + ("from dandelion.backends.engines.process.zygote import main\n"
                   "main(sys.argv[1:])\n")


#: The zygote's answers to a snapshot or a reset (:meth:`Zygote.snapshot`)
KILLED, DONE, AS_IT_WAS = 0, 1, 2

#: CPUs this process may run on: while as many of a zygote's invocations run, the sandboxes
#: it forks skip their warm-up (:meth:`Zygote.adapt`)
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
    os.cpu_count() or 1


class Sandbox:
    """One forked sandbox: its pid, the worker's end of its channel (a descriptor, -1 once
    ended), a pidfd (-1 if the kernel has none), and whether it is known to wait for work
    already (a Python sandbox writes ``READY`` on its channel once locked down and
    warmed up)."""

    __slots__ = ("pid", "channel", "pidfd", "ready", "reusable", "trackable")

    def __init__(self, pid: int, channel: int, pidfd: int = -1, ready: bool = False,
                 trackable: bool = True) -> None:
        self.pid = pid
        self.channel = channel
        self.pidfd = pidfd
        self.ready = ready
        #: its zygote holds a snapshot of it and resets it on request (:meth:`Zygote.reset`)
        self.reusable = False
        #: it may be snapshotted: forked to warm up, so tracking the pages it writes (one
        #: forked while warm-ups are off, :meth:`Zygote.adapt`, is not: a snapshot of it
        #: is refused, after costing its zygote a stop of it, and it serves one invocation)
        self.trackable = trackable


def _waiting(sandbox: Sandbox) -> int:
    """1 if ``sandbox`` waits for work (its READY byte is taken now if not yet), 0 if it is
    still warming up, -1 if it wrote something else or is gone."""
    if sandbox.ready:
        return 1
    state = _sandboxc.ready(sandbox.channel)
    sandbox.ready = state == 1
    return int(state)


#: The longest control message after the zygote's first (``CONTROL``, with room to spare).
CONTROL_MAX = 64


class Zygote:
    """A running zygote and its pool of ready sandboxes.

    Args:
        preload: libraries imported before forking (``()`` for the lean zygote).
        pool_size: sandboxes kept forked ahead of time.
        cpu_seconds: RLIMIT_CPU of each sandbox (``None``: none).
        warm: run a probe function through each sandbox before it waits (moves page
            faults off the critical path at the price of a little CPU per sandbox) — while
            fewer of this zygote's invocations run than there are CPUs (see
            :meth:`adapt`).
        native: the native zygote's executable: a C process forking sandboxes for native
            functions only (``preload`` and ``warm`` are then ignored).
        memory_limit: sandboxes for Python functions only, filtered before they wait, with
            this memory limit (``None``: unfiltered until assigned; they run native code too).
        reuse: filtered Python sandboxes track the pages they write, so that the zygote can
            snapshot one that waits for work and reset it after an invocation
            (:meth:`snapshot`, :meth:`reset`; ``c/snapshot.h``).
    """

    def __init__(self, preload: tuple[str, ...], pool_size: int, cpu_seconds: int | None,
                 warm: bool = True, native: Path | None = None,
                 memory_limit: int | None = None, reuse: bool = False) -> None:
        self.preload = preload
        self.reuse = reuse and native is None and memory_limit is not None
        self.native = native
        self.warm = warm
        #: whether the zygote's sandboxes warm up now (see :meth:`adapt`)
        self.warming = warm and native is None
        #: sandboxes taken and not yet ended: invocations running (see :meth:`adapt`)
        self.running = 0
        #: sandboxes taken and set aside for a later invocation (:meth:`set_aside`)
        self.aside = 0
        self.pool_size = max(0, pool_size)
        #: single-use sandboxes alive (waiting, running or held ready for a function) up to
        #: which the zygote replaces exited ones; reusable ones count toward no cap (the
        #: engines bound them: each of a worker's engines may have as many as the pool
        #: holds, so that two engines' could fill the cap, and no exited sandbox was
        #: replaced), and their exits are not replaced (:meth:`refill` replaced each when
        #: it was made reusable: the pool grew by one with each one retired)
        self.cap = (3 if self.reuse else 2) * self.pool_size
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
        # LD_BIND_NOW: the zygote resolves every symbol of the interpreter and the C library
        # as it starts (extension modules are loaded with RTLD_NOW already), so that no
        # sandbox writes a resolved address into their tables (each such first call was a
        # symbol lookup and a copied page: 14 of a sandbox's page faults)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                   PYTHONDONTWRITEBYTECODE="1", LD_BIND_NOW="1")
        if native is not None:
            cmd = [str(native), str(theirs.fileno()), str(cpu_seconds or 0), str(self.cap)]
        else:
            cmd = [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(cpu_seconds or 0),
                   "1" if warm else "0", str(memory_limit or 0), str(self.cap),
                   "1" if self.reuse else "0", *preload]
        self.process = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], env=env,
                                        stdin=subprocess.DEVNULL, cwd="/")
        theirs.close()
        self.ctrl = ours
        self.owner = os.getpid()
        self._cond = threading.Condition()
        self._ready: collections.deque[Sandbox] = collections.deque()
        self._pending = 0
        #: a sandbox that warms up was asked for while warm-ups are off (want_trackable)
        self._asked_trackable = False
        self._statuses: collections.OrderedDict[int, int] = collections.OrderedDict()
        #: called once the next sandbox is forked (or the zygote is gone): when_forked
        self._waiters: list[Callable[[], None]] = []
        #: pid -> called with the zygote's answer to its snapshot or reset (snapshot, reset)
        self._answers: dict[int, Callable[[int], None]] = {}
        #: pid -> called once that ended sandbox has exited (:meth:`end`)
        self._exits: dict[int, Callable[[], None]] = {}
        self._started = False
        self.closed = False
        #: modules loaded in the zygote (and so in every sandbox it forks)
        self.modules: frozenset[str] = frozenset()
        self._reader = threading.Thread(target=self._read, name="dandelion-zygote", daemon=True)
        self._reader.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._started or self.closed, timeout=60):
                self.close()
                raise BackendError("the sandbox zygote did not start within 60 s")
        if self.closed:
            raise BackendError(f"the sandbox zygote exited at start "
                               f"(status {self.process.poll()})",
                               hint="run the worker with stderr visible to see why")
        self.refill()

    def _read(self) -> None:
        while True:
            # (a datagram each: only the first, STARTED with the modules loaded, is long;
            # a buffer of 1 MiB for every message was a 1 MiB malloc and a shrink per
            # message, which moved the caller's freed arrays around the heap: a run's output
            # then took new memory, faulted in on the run's path)
            size = 1 << 20 if not self._started else CONTROL_MAX
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.ctrl, size, 2)
            except OSError:
                msg, fds = b"", []
            if len(msg) < CONTROL.size:
                with self._cond:
                    self.closed = True
                    self._cond.notify_all()
                    waiters, self._waiters = self._waiters, []
                    answers, self._answers = list(self._answers.values()), {}
                    exits, self._exits = list(self._exits.values()), {}
                for callback in waiters + exits:  # (the zygote killed what it had)
                    callback()
                for answer in answers:
                    answer(KILLED)
                return
            op, pid, status = CONTROL.unpack_from(msg)
            waiters = []
            if op in (SNAPPED, RESET_DONE):
                with self._cond:
                    reply = self._answers.pop(pid, None)
                if reply is not None:
                    reply(status)
                continue
            with self._cond:
                if op == FORKED and fds:
                    self._statuses.pop(pid, None)  # a reused pid: the old status is stale
                    self._pending = max(0, self._pending - 1)
                    self._ready.append(Sandbox(pid, fds[0], fds[1] if len(fds) > 1 else -1,
                                               self.native is not None, status == 0))
                    if status == 0:
                        self._asked_trackable = False
                    waiters, self._waiters = self._waiters, []
                elif fds:  # descriptors with anything but a fork report: not ours to keep
                    for fd in fds:
                        os.close(fd)
                elif op == ENDED:
                    exited = self._exits.pop(pid, None)
                    if exited is not None:
                        waiters = [exited]
                    else:
                        self._statuses[pid] = status
                        while len(self._statuses) > 4096:
                            self._statuses.popitem(last=False)
                elif op == STARTED:
                    self.modules = frozenset(msg[CONTROL.size:].decode().split("\n"))
                    self._started = True
                self._cond.notify_all()
            for callback in waiters:
                callback()

    def _send(self, op: bytes, value: int) -> None:
        try:
            self.ctrl.send(CONTROL.pack(op, value, 0))
        except OSError as e:
            raise BackendError(f"the sandbox zygote is gone: {e}") from None

    def refill(self) -> None:
        """Fork as many sandboxes as the pool lacks (one taken for good, say made
        reusable, is not replaced by the zygote: only those that exit are)."""
        if self.closed:
            return
        with self._cond:
            want = self.pool_size - len(self._ready) - self._pending
            if want <= 0:
                return
            self._pending += want
        self._send(FORK, want)

    def take(self, timeout: float = 30.0) -> Sandbox:
        """A never used sandbox (forking one now if the pool is empty).

        The most recently forked one among those that already wait for work: it ran (its
        warm-up) last, so more of its memory is still in the CPU's caches and TLB than that
        of one that has waited longer — on this kind of machine the Python path of a
        sandbox that waited tens of milliseconds runs several times slower than that of one
        that waited a few.  If none is done warming up yet (the pool is being outrun), the
        oldest, which will be first."""
        sandbox = self.take_forked()
        if sandbox is None:  # requests outran the pool: fork one for us now
            self._send(FORK, 1)
            with self._cond:
                if not self._cond.wait_for(lambda: self._ready or self.closed, timeout):
                    raise BackendError(f"no sandbox was forked within {timeout:g} s")
                if self.closed:
                    raise BackendError("the sandbox zygote exited",
                                       hint="see the worker's stderr for why")
                sandbox = self._ready.popleft()
                self.running += 1
        self.adapt()
        return sandbox  # the zygote replaces it when it exits

    def take_forked(self, trackable: bool = False) -> Sandbox | None:
        """:meth:`take`'s choice among the sandboxes forked already, without waiting for
        one (``None``: there is none).  The caller calls :meth:`adapt` (once the sandbox
        has its work: only the sandboxes forked later depend on it).

        ``trackable``: only one that waits for work already and can be snapshotted
        (:attr:`Sandbox.trackable`), for a sandbox to be made reusable: past a burst the
        newest ready ones were often forked while warm-ups were off, and the pool keeps
        older ones, which can."""
        with self._cond:
            return self._pick(trackable)

    def want_trackable(self) -> None:
        """Have one sandbox forked that warms up, so that it can be snapshotted, while
        warm-ups are off for now (:meth:`adapt`; not if they are off for good): for a
        reusable sandbox to be made of, where the pool holds none that can be
        (:meth:`take_forked`).  Past saturation every sandbox is forked without warming
        up, so once its reusable sandboxes were retired (after 256 resets each) a function
        got no new one and ran on fresh sandboxes; one warm-up (some 0.5 ms of CPU) buys up
        to 256 resets.  One is asked for at a time; while warm-ups are off, the others'
        invocations take it last (:meth:`_pick`)."""
        with self._cond:
            if self.closed or not self.reuse or not self.warm or self.warming or \
                    self._asked_trackable:
                return
            self._asked_trackable = True
            self._pending += 1
            # under the lock, in order: this fork warms up, those after it do not
            self._send(WARM, 1)
            self._send(FORK, 1)
            self._send(WARM, 0)

    def when_forked(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once a sandbox is forked (forking one now, as :meth:`take`
        does when the pool is empty), or the zygote is gone: from the thread that learns
        it, or at once if a sandbox is forked already."""
        with self._cond:
            now = bool(self._ready) or self.closed
            if not now:
                self._waiters.append(callback)
        if now:
            callback()
        else:
            self._send(FORK, 1)

    def set_aside(self, sandbox: Sandbox) -> None:
        """A taken sandbox waits for a later invocation (given its function's code
        ahead): it does not count as running (:meth:`adapt`) until :meth:`resume`."""
        with self._cond:
            self.running -= 1
            self.aside += 1
        self.adapt()

    def resume(self, sandbox: Sandbox) -> None:
        """A sandbox set aside is taken again (to run, or to be ended): running again.
        The caller calls :meth:`adapt` or :meth:`end`."""
        with self._cond:
            self.running += 1
            self.aside -= 1

    def adapt(self) -> None:
        """Turn the warm-up of the sandboxes forked from now on off while as many of this
        zygote's invocations run as there are CPUs, and on again once fewer do (one
        control message per change).

        A warm-up takes the page faults of an invocation's Python path ahead of it: the
        invocation that meets a warmed sandbox on a free CPU is shorter (by 0.6-1 ms on the
        matrix workload).  But it costs CPU (some 0.5 ms per sandbox there, ``python
        benchmarks/bench_sandbox.py --only cpu``), which, while every CPU has an invocation
        of this worker to run, only delays them (11-18 % fewer requests per second at
        saturation).  The worker's own invocations decide, not the machine's idle time:
        what other processes do is not made faster by skipping a warm-up, while this
        worker's requests are made slower (the paper's experiment measured a worker one
        request at a time while Ray's processes kept the machine busy: warm-ups off, 6.1 ms
        against 3.9 ms)."""
        if not self.warm or self.native is not None or self.closed:
            return
        want = self.running < _CPUS
        if want == self.warming:
            return
        with self._cond:  # sent under the lock: the zygote sees the changes in order
            if want != self.warming:
                self.warming = want
                self._send(WARM, int(want))

    def _pick(self, trackable: bool = False) -> Sandbox | None:
        """The newest sandbox that waits for work already (and, if ``trackable``, can be
        snapshotted), else the oldest (the one most likely to be done with its warm-up;
        none if ``trackable``).  While warm-ups are off, one that cannot be snapshotted is
        taken first if any waits: those that can are kept for reusable sandboxes to be made
        of.  Called with the lock held."""
        passes = ((True,) if trackable else (False, None) if not self.warming else (None,))
        for wanted in passes:
            for i in range(len(self._ready) - 1, -1, -1):
                s = self._ready[i]
                if wanted is not None and s.trackable != wanted:
                    continue
                state = _waiting(s)
                if state == 0:
                    continue  # still warming up
                del self._ready[i]
                self.running += 1
                if state < 0:  # died before it was ready: the zygote replaces it
                    self.end(s)
                    continue
                return s
        if trackable or not self._ready:
            return None
        self.running += 1
        return self._ready.popleft()

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until the pool is full of sandboxes that wait for work (forked, locked down
        and warmed up, or set aside for a function), so that no refill is running: for
        benchmarks and tests that want an invocation to meet a quiet node.  ``False`` if
        that takes longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self.adapt()
        with self._cond:
            while not self.closed:
                waiting = sum(_waiting(s) == 1 for s in self._ready) + self.aside
                if waiting >= self.pool_size and self._pending == 0:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.001))  # READY bytes arrive without a notify
        return False

    def snapshot(self, sandbox: Sandbox, answer: Callable[[int], None]) -> None:
        """Have the zygote snapshot ``sandbox`` (taken, waiting for work, nothing sent to
        it yet), so that it can be reset after each invocation; ``answer`` is called, from
        the thread that reads the zygote's messages, with :data:`DONE`, :data:`KILLED`
        (the caller ends it) or :data:`AS_IT_WAS` (not snapshotted: it serves one
        invocation, as any other)."""
        self._ask(SNAP, sandbox, answer)

    def reset(self, sandbox: Sandbox, answer: Callable[[int], None]) -> None:
        """Have the zygote reset ``sandbox`` to its snapshot (its invocation answered);
        ``answer`` as for :meth:`snapshot` (:data:`DONE` or :data:`KILLED`)."""
        self._ask(RESET, sandbox, answer)

    def _ask(self, op: bytes, sandbox: Sandbox, answer: Callable[[int], None]) -> None:
        with self._cond:
            gone = self.closed or not self.reuse
            if not gone:
                self._answers[sandbox.pid] = answer
        if gone:
            answer(AS_IT_WAS if op == SNAP and not self.closed else KILLED)
            return
        try:
            self._send(op, sandbox.pid)
        except BackendError:
            with self._cond:
                mine = self._answers.pop(sandbox.pid, None)
            if mine is not None:
                mine(KILLED)

    def kill(self, pid: int) -> None:
        """Ask the zygote (the sandbox's parent) to SIGKILL ``pid`` if it still runs."""
        self._send(KILL, pid)

    def end(self, sandbox: Sandbox, exited: Callable[[], None] | None = None) -> None:
        """SIGKILL a taken sandbox if it still runs and drop the worker's hold on it.

        With a pidfd this is one system call and no message to the zygote (a pidfd names
        the process itself, so a reused pid is never hit); without, the zygote kills it.
        The kill comes before the hang-up, so that a sandbox never sees the end of its
        channel and exits by itself first (it ends by SIGKILL, whatever it was doing).
        Ending it again does nothing (its pid may be another process's by then).

        The kill lands on the sandbox's CPU a little later: until then it may still run,
        and write the memory it maps.  ``exited`` is called once it cannot any more — it
        has exited and its zygote reaped it (asked with a :data:`WAIT`, answered from the
        thread that reads the zygote's messages) — or at once if it had exited already
        (without a pidfd: at once, after the zygote was asked to kill it)."""
        with self._cond:
            if sandbox.channel < 0:
                return
            channel, sandbox.channel = sandbox.channel, -1
            self.running -= 1
        self.adapt()  # before the kill: its replacement is forked as fewer run
        pidfd, sandbox.pidfd = sandbox.pidfd, -1
        running = pidfd >= 0
        if pidfd < 0:
            self.kill(sandbox.pid)
        else:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:  # it has exited, and been reaped, already
                running = False
            finally:
                os.close(pidfd)
        os.close(channel)
        if exited is None:
            return
        if running:
            with self._cond:
                gone = self.closed
                if not gone:
                    self._exits[sandbox.pid] = exited
            if not gone:
                try:
                    self._send(WAIT, sandbox.pid)
                    return
                except BackendError:  # the zygote is gone: it killed what it had
                    with self._cond:
                        if self._exits.pop(sandbox.pid, None) is None:
                            return  # (called by the thread that saw it go)
        exited()

    def wait_status(self, pid: int, timeout: float = 5.0) -> int | None:
        """The wait status of sandbox ``pid`` once the zygote has reaped it."""
        self._send(WAIT, pid)
        with self._cond:
            self._cond.wait_for(lambda: pid in self._statuses or self.closed, timeout)
            return self._statuses.pop(pid, None)

    def idle_pids(self) -> list[int]:
        """Pids of the sandboxes waiting in the pool."""
        with self._cond:
            return [s.pid for s in self._ready]

    def close(self) -> None:
        """Stop the zygote; it kills the sandboxes it still has."""
        with self._cond:
            self.closed = True
            ready = list(self._ready)
            self._ready.clear()
        for s in ready:
            os.close(s.channel)
            if s.pidfd >= 0:
                os.close(s.pidfd)
        try:
            self.ctrl.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ctrl.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.process.kill()


_zygotes: dict[tuple[Any, ...], Zygote] = {}
_lock = threading.Lock()


def zygote(preload: tuple[str, ...], pool_size: int, cpu_seconds: int | None,
           warm: bool = True, native: Path | None = None, memory_limit: int | None = None,
           reuse: bool = False) -> Zygote:
    """The process-wide zygote for these settings, started on first use."""
    key = (tuple(sorted(preload)), pool_size, cpu_seconds, warm, native, memory_limit, reuse)
    with _lock:
        z = _zygotes.get(key)
        if z is not None and (z.closed or z.owner != os.getpid()):
            _zygotes.pop(key)
            z = None
        if z is None:
            z = _zygotes[key] = Zygote(key[0], pool_size, cpu_seconds, warm, native,
                                       memory_limit, reuse)
        return z


def running() -> list[Zygote]:
    """The zygotes of this process."""
    with _lock:
        return [z for z in _zygotes.values() if not z.closed and z.owner == os.getpid()]


@atexit.register
def shutdown() -> None:
    """Stop every zygote of this process (also run at exit)."""
    with _lock:
        zs = [z for z in _zygotes.values() if z.owner == os.getpid()]
        _zygotes.clear()
    for z in zs:
        z.close()

