"""Sandboxes made ready for a function (:mod:`dandelion.backends.engines.process.ahead`):
the code sent ahead of its invocation is unpickled under the sandbox's filter, and whatever
unpickling it does (raise, crash, a forbidden system call) is answered by the invocation the
sandbox was made ready for, exactly as on a generic sandbox."""

from __future__ import annotations

import ctypes
import select
import sys
from pathlib import Path
from typing import Any

import pytest

import dandelion as dd
from dandelion.backends.engines.process.engine import ProcessEngine
from dandelion.ir.nodes import Implementation
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.store import ArtifactStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")


@dd.compute
def one(x: int) -> int:
    return x


class Loads:
    """Pickled as a call of ``fn(*args)``: what unpickling it does."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.fn, self.args)


def _invoke(engine: ProcessEngine, call: FunctionCall, ready: bool) -> Any:
    """Run ``call`` through :meth:`ProcessEngine.begin` (on a sandbox made ready for it
    first if ``ready``) and read its outcome as an event loop would."""
    code = engine.store.get(call.implementation.digest, call.artifact, "python")
    zygote = engine.zygote_for(code)
    assert zygote.settle(30)  # a zygote just started may have forked none yet
    if ready:
        aside = zygote.aside  # (the zygote is shared: other engines may have some)
        engine.ahead.make_ready(call.implementation.digest, code.data, zygote)
        assert zygote.aside == aside + 1
    context = engine.domain.acquire()
    try:
        context.place([[dd.Item(1)]])
        started = engine.begin(context, call)
        assert started is not None
        try:
            while not started.feed():
                assert select.select([started.fd], [], [], 30)[0], "no report"
            if started.needs_thread():
                return started.outcome()
            started.outcome()
            return context.extract()[0][0].value
        finally:
            started.end()
    finally:
        engine.domain.release(context)


@pytest.mark.parametrize("n, loads, error", [
    (1, Loads(int, "x"), r"raised ValueError: invalid literal for int\(\) with base 10: 'x'"),
    (2, Loads(ctypes.string_at, 0), "crashed with SIGSEGV"),
    (3, Loads(open, "/etc/hostname"), "attempted forbidden system call"),
])
def test_what_unpickling_ahead_does_fails_the_invocation_as_on_a_generic_sandbox(
        tmp_path: Path, n: int, loads: Loads, error: str) -> None:
    engine = ProcessEngine(store=ArtifactStore(str(tmp_path)), reuse_sandboxes=False)
    try:
        impl = one.spec.implementations[0]
        call = FunctionCall(one.spec, Implementation("python", f"test:unpickles{n}",
                                                     impl.entry), loads, 5.0)
        messages = []
        for ready in (False, True):
            with pytest.raises(dd.FunctionError, match=error) as failed:
                _invoke(engine, call, ready)
            messages.append(failed.value.message)
        assert messages[0] == messages[1]
    finally:
        engine.close()


def test_a_ready_sandbox_serves_its_own_code_only_once(tmp_path: Path) -> None:
    engine = ProcessEngine(store=ArtifactStore(str(tmp_path)), ready_functions=1,
                           reuse_sandboxes=False)
    try:
        impl = one.spec.implementations[0]
        call = FunctionCall(one.spec, impl, one.artifact, 5.0)
        code = engine.store.get(impl.digest, one.artifact, "python")
        zygote = engine.zygote_for(code)
        assert zygote.settle(30)
        aside = zygote.aside  # (the zygote is shared: other engines may have some)
        engine.ahead.make_ready(impl.digest, code.data, zygote)
        assert zygote.aside == aside + 1
        assert zygote.settle(10)  # the pool counts it: it is not replaced while it waits
        sandbox = engine.ahead.take(impl.digest, code.data, zygote)
        assert zygote.aside == aside
        assert sandbox is not None and sandbox.pid not in zygote.idle_pids()
        assert engine.ahead.take(impl.digest, code.data, zygote) is None  # taken: gone
        zygote.end(sandbox)
        assert zygote.settle(30)
        engine.ahead.make_ready(impl.digest, code.data, zygote)
        other = code.data + b"."  # other bytes of the same digest: ended, not served
        assert engine.ahead.take(impl.digest, other, zygote) is None
        assert zygote.aside == aside
        assert engine.ahead.take(impl.digest, code.data, zygote) is None
        assert _invoke(engine, call, True) == 1  # and the code it was given runs
    finally:
        engine.close()
