"""Sandboxes reset to a snapshot instead of forked anew (``reuse_sandboxes``,
``c/snapshot.h``): a reset sandbox serves its function again exactly as a fresh one would —
whatever an invocation changed is gone — and anything its reset cannot undo discards it,
failing nothing but that invocation, if anything."""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dandelion as dd
from dandelion.backends.engines.process import pool
from dandelion.backends.engines.process.engine import ProcessEngine
from dandelion.errors import DandelionError
from dandelion.ir.nodes import Implementation
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.store import ArtifactStore


def _kernel() -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return (0,)


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.uname().machine != "x86_64"
    or _kernel() < (6, 7), reason="needs Linux 6.7 or later on x86-64 (PAGEMAP_SCAN)")


@dd.compute
def state(x: int) -> str:
    """What an invocation finds of earlier ones in the sandbox's preloaded modules, then
    leaves behind itself: ``x`` selects something an invocation may do besides."""
    import builtins
    import ctypes
    import json
    import random

    seen = repr((getattr(json, "_dd_seen", None), getattr(builtins, "_dd_list", [])[:3],
                 random.random()))
    json._dd_seen = x  # type: ignore[attr-defined]
    builtins._dd_list = [*getattr(builtins, "_dd_list", []), x]  # type: ignore[attr-defined]
    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    if x == 1:  # a new mapping, written
        ctypes.memset(libc.mmap(None, 1 << 20, 3, 0x22, -1, 0), 1, 4096)
    elif x == 2:  # a read-only page of libc made writable, written, made read-only again
        libc.strerror.restype = ctypes.c_void_p
        text = libc.strerror(1)  # in libc's read-only data
        page = ctypes.c_void_p(text & ~4095)
        libc.mprotect(page, 4096, 3)
        ctypes.memset(text, ctypes.c_ubyte.from_address(text).value, 1)  # the same byte
        libc.mprotect(page, 4096, 1)
    elif x == 3:  # 100 MB allocated and freed
        big = bytearray(100 << 20)
        big[-1] = 1
        del big
    elif x == 4:  # its userfaultfd closed
        os.close(4)
    elif x == 5:
        raise ValueError("five")
    elif x == 6:
        while True:
            pass
    elif x == 7:
        ctypes.string_at(0)
    elif x == 8:  # kernel state a reset would not put back: refused in such a sandbox
        libc.sigaltstack(None, ctypes.create_string_buffer(24))
    elif x == 10:  # a read-only page of libc made writable and left so, nothing written
        libc.strerror.restype = ctypes.c_void_p
        libc.mprotect(ctypes.c_void_p(libc.strerror(1) & ~4095), 4096, 3)
    elif x == 9:  # a success forged on the channel (3), then on and on, writing
        os.write(3, b"OKAY" + bytes(8))
        while True:
            json._dd_seen = "forged"  # type: ignore[attr-defined]
    return seen


#: in the snapshot: unpickled with :func:`blob`'s code before the sandbox's snapshot point
BLOB = bytes([0xAB]) * (16 << 10)


@dd.compute
def blob(x: int) -> bool:
    """Whether a page inside :data:`BLOB` (none of its object's head) reads as at the
    snapshot; then ``x`` 1 writes it, 2 drops it (``MADV_DONTNEED``: it reads as zeros
    after), 3 writes then drops it."""
    import ctypes

    libc = ctypes.CDLL(None)
    page = ((id(BLOB) + 32 + 4095) & ~4095) + 4096
    intact = ctypes.string_at(page, 4096) == b"\xab" * 4096
    if x in (1, 3):
        ctypes.memset(page, 0xCD, 4096)
    if x in (2, 3):
        if libc.madvise(ctypes.c_void_p(page), ctypes.c_size_t(4096), 4) != 0:
            raise OSError("madvise failed")
        if ctypes.string_at(page, 4096) != bytes(4096):
            raise AssertionError("a dropped page should read as zeros")
    return intact


@dd.compute
def scribble(x: int) -> int:
    """``x`` 0: an ordinary invocation; 1: a success forged on the channel (3), then the
    context — found in the sandbox's own frames — written on and on."""
    import os
    import sys

    if x == 1:
        frame = sys._getframe()
        while "ctx" not in frame.f_locals:
            frame = frame.f_back  # type: ignore[assignment]
        ctx = frame.f_locals["ctx"]
        os.write(3, b"OKAY" + bytes(8))
        while True:
            ctx[len(ctx) // 2:len(ctx) // 2 + 8] = b"SCRIBBLE"
    return x


def _engine(tmp_path: Path) -> ProcessEngine:
    return ProcessEngine(store=ArtifactStore(str(tmp_path)), reuse_sandboxes=True,
                         ready_functions=2)


def _reusing_zygote(tmp_path: Path) -> tuple[ProcessEngine, pool.Zygote, str, Any]:
    """An engine, a zygote of four sandboxes that reuses them, and the digest and stored
    code of ``state`` (the caller closes the zygote)."""
    engine = _engine(tmp_path)
    z = pool.Zygote((), 4, 10, memory_limit=1 << 30, reuse=True)
    call = _call(state)
    digest = call.implementation.digest
    return engine, z, digest, engine.store.get(digest, call.artifact, "python")


def _call(fn: Any, digest: str = "") -> FunctionCall:
    impl = fn.spec.implementations[0]
    if digest:
        impl = Implementation("python", digest, impl.entry)
    return FunctionCall(fn.spec, impl, fn.artifact, 2.0)


def _wait_for_a_sandbox(engine: ProcessEngine, call: FunctionCall) -> None:
    """After :meth:`ProcessEngine.begin` found no sandbox forked: wait for one as an event
    loop does (:meth:`ProcessEngine.wake_when_ready`, which forks one).  (Waiting for the
    pool to fill again, ``settle``, never ended where one of its sandboxes ran the
    overlapping invocation and the zygote had not yet reported the others' replacements:
    pool_size waiting could not be reached.)"""
    woken = threading.Event()
    assert engine.wake_when_ready(call, woken.set)
    assert woken.wait(30)


def _invoke(engine: ProcessEngine, call: FunctionCall, x: int) -> tuple[Any, int, bool]:
    """Run ``call`` on ``x`` through :meth:`ProcessEngine.begin`, as an event loop does:
    (its result or the error it raised, the sandbox's pid, whether it was a reusable one);
    then wait until a sandbox is ready for its next invocation (reset or fresh)."""
    context = engine.domain.acquire()
    digest = call.implementation.digest
    try:
        context.place([[dd.Item(x)]])
        started = engine.begin(context, call)
        if started is None:  # none forked yet: as a loop would, wait for one
            _wait_for_a_sandbox(engine, call)
            started = engine.begin(context, call)
        assert started is not None
        pid, reusable = started.sandbox.pid, started.sandbox.reusable
        wait = reusable or started.again  # a sandbox is made ready, or reset, after it
        result: Any = None
        try:
            deadline = time.monotonic() + (call.timeout or 10)
            while True:  # (feed reads at once: only once the channel is readable)
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([started.fd], [], [], left)[0]:
                    result = started.timed_out()
                    break
                if started.feed():
                    break
            if result is None:
                try:
                    started.outcome()
                    outputs = context.extract()
                    result = outputs[0][0].value if outputs and outputs[0] else outputs
                except DandelionError as e:
                    result = e
        finally:
            started.end()
    finally:
        engine.domain.release(context)
    wait = wait and not isinstance(result, DandelionError)
    deadline = time.monotonic() + (20 if wait else 0)
    while digest not in engine.ahead._ready and time.monotonic() < deadline:
        time.sleep(0.005)
    return result, pid, reusable


def _until_reusable(engine: ProcessEngine, call: FunctionCall) -> None:
    """Invoke ``call`` on 0 until a reusable sandbox is ready for it (a sandbox still
    warming up when it was to be made ready is handed the code as a single-use one: on a
    busy machine, now and then)."""
    for _ in range(10):
        ready = engine.ahead._ready.get(call.implementation.digest, [])
        if ready and ready[-1].sandbox.reusable:
            return
        _invoke(engine, call, 0)
    raise AssertionError("no reusable sandbox was made ready in 10 invocations")


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    e = _engine(tmp_path)
    yield e
    e.close()


def test_a_reset_sandbox_serves_again_and_finds_nothing_of_earlier_invocations(
        engine: ProcessEngine) -> None:
    call = _call(state)
    runs = [_invoke(engine, call, 0) for _ in range(6)]
    first = runs[0][0]
    assert first.startswith("(None, [], ")  # a fresh sandbox: nothing seen
    assert [r[0] for r in runs] == [first] * 6  # random's state too, as in a fresh fork
    reused = [pid for _, pid, reusable in runs if reusable]
    # reset each time (one sandbox; a second where, on a busy machine, a sandbox still
    # warming up served an invocation and made another reusable one after it)
    assert len(reused) >= 3 and len(set(reused)) <= 2 < len(reused)
    assert engine.ahead.resets >= 3 and engine.ahead.discarded == 0


def test_pages_left_writable_between_resets_are_put_back_every_time(
        engine: ProcessEngine) -> None:
    # a reset leaves the pages it wrote back writable, and writes them back at the next
    # reset whatever the scan reports; every 32nd protects them again (c/snapshot.h)
    call = _call(state)
    runs = [_invoke(engine, call, 0) for _ in range(40)]
    assert [r[0] for r in runs] == [runs[0][0]] * 40
    assert len({pid for _, pid, reusable in runs if reusable}) <= 2
    assert engine.ahead.resets >= 34 and engine.ahead.discarded == 0


@pytest.mark.parametrize("x, error", [
    (1, None), (2, None), (3, None), (4, None), (10, None),
    (5, "raised ValueError: five"), (6, "ran past its timeout"), (7, "crashed with SIGSEGV"),
    (8, "attempted forbidden system call sigaltstack"),
])
def test_what_an_invocation_does_fails_only_itself_and_the_next_one_is_fresh(
        engine: ProcessEngine, x: int, error: str | None) -> None:
    call = _call(state)
    first, _, _ = _invoke(engine, call, 0)
    _until_reusable(engine, call)
    result, bad_pid, reusable = _invoke(engine, call, x)
    assert reusable
    if error is None:
        assert result == first  # it found the snapshot's state too
    else:
        assert isinstance(result, DandelionError) and error in str(result)
    after, next_pid, _ = _invoke(engine, call, 0)
    assert after == first  # as a fresh sandbox would answer
    # what a reset cannot undo (10: only the memory map says so, no page was written):
    # another sandbox serves the next invocation
    if x in (1, 2, 4, 10) or error:
        assert next_pid != bad_pid
    if x in (1, 2, 4, 10):
        assert engine.ahead.discarded >= 1


def test_a_reset_asked_for_as_the_report_arrives_waits_for_the_sandbox_to_let_go(
        engine: ProcessEngine) -> None:
    """A sandbox reports before it unmaps its context (the worker wakes sooner), so the
    reset the worker asks for at once may find it still unmapping: the zygote lets it
    finish (``snapshot_settled``) instead of finding its memory map changed and
    discarding it."""
    call = _call(state)
    first, _, _ = _invoke(engine, call, 0)
    _until_reusable(engine, call)
    resets = engine.ahead.resets
    runs = [_invoke(engine, call, 0) for _ in range(20)]
    assert [r[0] for r in runs] == [first] * 20
    assert engine.ahead.resets - resets >= 15 and engine.ahead.discarded == 0


def test_a_function_that_forges_its_report_and_runs_on_is_reset_where_it_is_stopped(
        engine: ProcessEngine) -> None:
    """It never reaches the wait the zygote gives a sandbox time to reach: after that
    time it is stopped where it runs and reset (or discarded) as any; the next invocation
    finds the snapshot's state."""
    call = _call(state)
    first, _, _ = _invoke(engine, call, 0)
    _until_reusable(engine, call)
    forged, _, reusable = _invoke(engine, call, 9)
    assert reusable and forged == [()]  # "done", and no output item
    after, _, _ = _invoke(engine, call, 0)
    assert after == first
    again, _, _ = _invoke(engine, call, 0)
    assert again == first


@dd.compute
def other(x: int) -> str:
    import json

    seen = repr(getattr(json, "_dd_seen", None))
    json._dd_seen = "other"  # type: ignore[attr-defined]
    return seen


def test_a_reset_sandbox_serves_only_its_own_function(engine: ProcessEngine) -> None:
    mine, theirs = _call(state), _call(other)
    pids: dict[str, set[int]] = {"state": set(), "other": set()}
    for _ in range(5):
        for name, call in (("state", mine), ("other", theirs)):
            result, pid, _ = _invoke(engine, call, 0)
            assert result.startswith("(None, [], ") or result == "None"
            pids[name].add(pid)
    assert not pids["state"] & pids["other"]


def test_code_registered_again_never_runs_the_old_code(engine: ProcessEngine) -> None:
    call = _call(other)
    digest = call.implementation.digest
    for _ in range(4):
        assert _invoke(engine, call, 0)[0] == "None"
    code = engine.store.get(digest, other.artifact, "python")
    zygote = engine.zygote_for(code)
    ready = engine.ahead._ready[digest][-1].sandbox
    assert ready.reusable
    # other bytes under the same digest (the function registered again): the reset
    # sandbox, which holds the old code, is ended rather than served
    assert engine.ahead.take(digest, code.data + b".", zygote) is None
    assert digest not in engine.ahead._ready and ready.channel == -1


def _invoke_together(engine: ProcessEngine, call: FunctionCall, xs: list[int]
                     ) -> list[tuple[Any, int, bool]]:
    """Run ``call`` on each of ``xs`` at once, as an event loop does when requests overlap
    (each on its own sandbox): (result, pid, reusable) of each; then wait until each of the
    function's reusable sandboxes is ready again."""
    digest = call.implementation.digest
    contexts = [engine.domain.acquire() for _ in xs]
    started = []
    try:
        for context, x in zip(contexts, xs):
            context.place([[dd.Item(x)]])
            s = engine.begin(context, call)
            if s is None:
                _wait_for_a_sandbox(engine, call)
                s = engine.begin(context, call)
            assert s is not None
            started.append(s)
        results: list[Any] = [None] * len(xs)
        done = [False] * len(xs)
        deadline = time.monotonic() + 10
        while not all(done) and time.monotonic() < deadline:
            fds = [s.fd for s, d in zip(started, done) if not d]
            for fd in select.select(fds, [], [], 0.5)[0]:
                i = next(i for i, s in enumerate(started) if s.fd == fd and not done[i])
                done[i] = started[i].feed()
        assert all(done)
        for i, (s, context) in enumerate(zip(started, contexts)):
            try:
                s.outcome()
                results[i] = context.extract()[0][0].value
            except DandelionError as e:
                results[i] = e
        out = [(r, s.sandbox.pid, s.sandbox.reusable) for r, s in zip(results, started)]
    finally:
        for s in started:
            s.end()
        for context in contexts:
            engine.domain.release(context)
    ahead = engine.ahead

    def settled() -> bool:
        with ahead._lock:
            alive = [s for s in ahead._reusable.get(digest, ()) if s.channel >= 0]
            ready = {r.sandbox.pid for r in ahead._ready.get(digest, ())}
            return all(s.reusable and s.pid in ready for s in alive)
    deadline = time.monotonic() + 20
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.005)
    return out


def test_two_reusable_sandboxes_of_a_function_never_see_each_others_state(
        engine: ProcessEngine) -> None:
    call = _call(state)
    first = _invoke(engine, call, 0)[0]
    results, reused = [], set()
    for _ in range(6):
        for result, pid, reusable in _invoke_together(engine, call, [0, 0]):
            results.append(result)
            if reusable:
                reused.add(pid)
    assert engine.ahead.per_function >= 2
    assert len(reused) >= 2  # overlapping invocations made several reusable sandboxes
    assert results == [first] * len(results)  # each as a fresh sandbox would answer
    assert engine.ahead.discarded == 0


def test_code_registered_again_discards_every_reusable_sandbox_of_the_function(
        engine: ProcessEngine) -> None:
    call = _call(other)
    digest = call.implementation.digest
    for _ in range(4):
        assert [r[0] for r in _invoke_together(engine, call, [0, 0])] == ["None", "None"]
    code = engine.store.get(digest, other.artifact, "python")
    zygote = engine.zygote_for(code)
    ready = [r.sandbox for r in engine.ahead._ready[digest]]
    assert len(ready) >= 2 and all(s.reusable for s in ready)
    # the function registered again (other bytes under its digest): none of its reset
    # sandboxes, which hold the old code, serves it; all are ended
    assert engine.ahead.take(digest, code.data + b".", zygote) is None
    assert digest not in engine.ahead._ready
    assert all(s.channel == -1 for s in ready)


def test_a_page_dropped_with_madv_dontneed_is_put_back_written_or_not(
        engine: ProcessEngine) -> None:
    """A dropped page reads as zeros, and to the write-protect scan perhaps as never written;
    whether it was protected (never written since the snapshot) or left writable by the
    last reset (written), the next invocation must find the snapshot's bytes."""
    call = _call(blob)
    assert _invoke(engine, call, 0)[0] is True
    _until_reusable(engine, call)
    for x in (2, 1, 2, 3, 1, 0, 2, 3):
        result, pid, reusable = _invoke(engine, call, x)
        assert result is True, (x, result)  # what the invocation found
        after, next_pid, _ = _invoke(engine, call, 0)
        assert after is True, (x, after)  # what the reset left for the next one
        assert reusable and next_pid == pid, x  # the same sandbox, reset
    assert engine.ahead.discarded == 0


def test_a_context_is_not_used_again_while_the_sandbox_that_ran_in_it_may_write_it(
        engine: ProcessEngine) -> None:
    """A function that forges its report runs on until its zygote stops it for the reset:
    its context is kept out of use until then, so the next invocation's context never
    holds what it writes (the same context, released at once, did)."""
    call = _call(scribble)
    _until_reusable(engine, call)
    context = engine.domain.acquire()
    context.place([[dd.Item(1)]])
    started = engine.begin(context, call)
    assert started is not None and started.sandbox.reusable
    while not started.feed():
        select.select([started.fd], [], [], 5)
    started.outcome()
    assert context.extract() == [()]  # "done", and no output item
    started.end()
    engine.domain.release(context)
    following = engine.domain.acquire()
    try:
        written = False
        deadline = time.monotonic() + 0.05
        while not written and time.monotonic() < deadline:
            written = following.mm.find(b"SCRIBBLE") >= 0  # type: ignore[union-attr]
    finally:
        engine.domain.release(following)
    assert not written
    deadline = time.monotonic() + 10
    while context.held and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.005)
    assert not context.held  # type: ignore[attr-defined]  # back once the reset answered
    assert _invoke(engine, call, 0)[0] == 0


@pytest.mark.parametrize("warm", [True, False])
def test_a_sandbox_says_whether_its_zygote_can_snapshot_it(warm: bool) -> None:
    """Only a sandbox forked to warm up tracks the pages it writes (one forked while
    warm-ups are off, as past saturation, does not): the zygote says which with each fork,
    and a snapshot of it is taken exactly then.

    Each of 20 sandboxes is asked for as soon as its READY byte is read: a sandbox writes
    it just before it blocks waiting for work, and one preempted in between (on a busy
    machine, about one in a hundred) was killed rather than snapshotted or left as it was,
    until the zygote learned to let it reach its wait first."""
    z = pool.Zygote((), 2, 10, warm=warm, memory_limit=1 << 30, reuse=True)
    try:
        assert z.settle(30)
        assert [s.trackable for s in z._ready] == [warm, warm]
        for _ in range(20):
            assert z.settle(30)
            sandbox = z.take()
            answers: list[int] = []
            z.snapshot(sandbox, answers.append)
            deadline = time.monotonic() + 10
            while not answers and time.monotonic() < deadline:
                time.sleep(0.005)
            assert answers == [pool.DONE if warm else pool.AS_IT_WAS]
            z.end(sandbox)
            z.refill()  # (a snapshotted one is not replaced when it exits)
    finally:
        z.close()


def _pool_is(z: pool.Zygote, size: int, seconds: float) -> bool:
    """Whether ``z``'s pool holds ``size`` sandboxes waiting for work within ``seconds``
    (and still does a little later: no more are forked)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with z._cond:
            if len(z._ready) == size and all(pool._waiting(s) == 1 for s in z._ready) \
                    and not z._pending:
                break
        time.sleep(0.005)
    time.sleep(0.2)
    with z._cond:
        return len(z._ready) == size


def test_the_pool_keeps_its_size_whatever_the_reusable_sandboxes_alive() -> None:
    """A worker's engines share one zygote, and each may make as many reusable sandboxes as
    the pool holds: they count toward no cap, or past saturation they filled the zygote's
    (then 3 * pool_size), so that it replaced no exited sandbox and invocations waited for
    forks.  A reusable sandbox that ends is not replaced either (it was, when it was made
    reusable): the pool does not grow."""
    z = pool.Zygote((), 2, 10, memory_limit=1 << 30, reuse=True)
    reusable: list[pool.Sandbox] = []
    try:
        for _ in range(3 * z.pool_size):  # as many as the old cap, the pool's besides
            assert _pool_is(z, z.pool_size, 30)
            sandbox = z.take_forked(trackable=True)
            assert sandbox is not None
            answers: list[int] = []
            z.snapshot(sandbox, answers.append)
            deadline = time.monotonic() + 10
            while not answers and time.monotonic() < deadline:
                time.sleep(0.005)
            assert answers == [pool.DONE]
            z.set_aside(sandbox)
            reusable.append(sandbox)
            z.refill()  # as Ahead does: one forked in its place
        for _ in range(3):  # single-use invocations: each sandbox replaced as it exits
            assert _pool_is(z, z.pool_size, 30)
            z.end(z.take())
        assert _pool_is(z, z.pool_size, 30)
        for sandbox in reusable:  # retired, pushed out: not replaced
            z.resume(sandbox)
            z.end(sandbox)
        reusable = []
        assert _pool_is(z, z.pool_size, 30)
    finally:
        for sandbox in reusable:
            z.resume(sandbox)
            z.end(sandbox)
        z.close()


def test_past_saturation_a_sandbox_that_warms_up_is_forked_for_a_reusable_one(
        tmp_path: Path) -> None:
    """While as many invocations run as there are CPUs, sandboxes are forked without
    warming up, and cannot be snapshotted: once a function's reusable sandboxes were
    retired, it got no new one and every invocation ran on a fresh sandbox.  A function
    that wants a reusable sandbox and finds none that can be has one forked that warms up,
    which the other invocations take last, and its next invocation makes it reusable."""
    engine, z, digest, code = _reusing_zygote(tmp_path)
    held: list[pool.Sandbox] = []
    try:
        assert z.settle(30)
        while z._ready:  # running, as past saturation: warm-ups off
            sandbox = z.take_forked()
            assert sandbox is not None
            held.append(sandbox)
        z.adapt()
        assert not z.warming
        z.refill()
        assert z.settle(30) and not any(s.trackable for s in z._ready)
        engine.ahead.make_ready(digest, code.data, z)  # a single-use one now, and one asked
        deadline = time.monotonic() + 20
        while not [s for s in z._ready if s.trackable and pool._waiting(s) == 1] and \
                time.monotonic() < deadline:
            time.sleep(0.005)
        assert [s.trackable for s in z._ready].count(True) == 1
        other = z.take_forked()  # another invocation takes one that cannot be snapshotted
        assert other is not None and not other.trackable
        z.end(other)
        engine.ahead.make_ready(digest, code.data, z)
        deadline = time.monotonic() + 20
        while not any(r.sandbox.reusable for r in engine.ahead._ready.get(digest, ())) and \
                time.monotonic() < deadline:
            time.sleep(0.005)
        assert [r.sandbox.reusable for r in engine.ahead._ready[digest]] == [False, True]
        assert not z.warming  # (and the sandboxes forked since do not warm up)
    finally:
        engine.close()
        for sandbox in held:
            z.end(sandbox)
        z.close()


def test_no_snapshot_is_asked_of_a_sandbox_that_cannot_be_snapshotted(tmp_path: Path
                                                                        ) -> None:
    """A function that repeats gets a sandbox made ready for it; where that sandbox was
    forked without warming up (so without tracking its pages) it is handed the code as a
    single-use one at once, without asking the zygote for a snapshot it would refuse (each
    refusal stopped the sandbox and held up the zygote's resets: past saturation, when the
    reusable sandboxes of a function were ended together after their 256th reset, 38-64
    refusals in a row)."""
    engine = ProcessEngine(store=ArtifactStore(str(tmp_path)), reuse_sandboxes=True,
                           ready_functions=2, warm_sandboxes=False)
    try:
        call = _call(scribble)
        code = engine.store.get(call.implementation.digest, call.artifact, "python")
        zygote = engine.zygote_for(code)
        asked: list[int] = []
        snapshot = zygote.snapshot

        def counted(sandbox: pool.Sandbox, answer: Any) -> None:
            asked.append(sandbox.pid)
            snapshot(sandbox, answer)

        zygote.snapshot = counted  # type: ignore[method-assign]
        for _ in range(3):
            assert _invoke(engine, call, 0)[0] == 0
        assert asked == []
        ready = engine.ahead._ready.get(call.implementation.digest, [])
        assert ready and not ready[-1].sandbox.reusable  # made ready, as a single-use one
    finally:
        engine.close()


def test_a_reusable_sandbox_is_made_of_one_that_can_be_snapshotted_though_newer_cannot(
        tmp_path: Path) -> None:
    """Past invocations that overlapped (as many as there are CPUs: warm-ups off), the
    newest sandboxes of the pool were forked without warming up and cannot be snapshotted;
    a function that repeats gets a reusable sandbox made of an older one that can, not a
    single-use one of the newest (which made overlapping invocations leave a function with
    a single reusable sandbox, round after round: the flaky
    ``test_two_reusable_sandboxes_…`` of a larger ``per_function``)."""
    engine, z, digest, code = _reusing_zygote(tmp_path)
    held: list[pool.Sandbox] = []
    try:
        assert z.settle(30)
        held = [z._ready[-1 - i] for i in range(pool._CPUS)]  # the newest ones
        for sandbox in held:
            assert z.take_forked() is sandbox
        z.adapt()  # as many running as CPUs: warm-ups off
        assert not z.warming
        z.refill()  # forked in place of those taken: without warming up
        assert z.settle(30)
        for sandbox in held:  # (waiting, not running: warm-ups on again)
            z.set_aside(sandbox)
        assert z.warming
        newest = z._ready[-1]
        assert not newest.trackable and any(s.trackable for s in z._ready)
        engine.ahead.make_ready(digest, code.data, z)
        deadline = time.monotonic() + 20
        while digest not in engine.ahead._ready and time.monotonic() < deadline:
            time.sleep(0.005)
        ready = engine.ahead._ready[digest]
        assert [r.sandbox.reusable for r in ready] == [True]
        assert ready[0].sandbox.trackable and newest in z._ready
    finally:
        engine.close()
        for sandbox in held:
            z.resume(sandbox)
            z.end(sandbox)
        z.close()
