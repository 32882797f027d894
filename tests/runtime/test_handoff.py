"""The hand-off from an event loop to the process engine: a run started on a loop is
driven by the loop itself (no worker thread between it and the sandbox), with the same
outputs, output capture, errors, time limits and bound on invocations at once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from typing import Any

import pytest

import dandelion as dd
from dandelion.program import as_program
from dandelion.runtime import handoff, logs
from dandelion.runtime.handoff import awaitable
from tests.conformance import funcs as f
from tests.runtime import handofffuncs as h
from tests.runtime.threads import Threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the process engine is Linux-only")


async def _run(rt: dd.Runtime, target: Any, x: Any, observe: Any = None,
               printed: logs.Collector | None = None) -> Any:
    program = as_program(target)
    with logs.collect(printed):
        future = rt.start_plan(rt.plan(program), program.bind((x,), {}), program.artifacts,
                               observe=observe, loop=asyncio.get_running_loop())
    assert future is not None
    return program.unbind(await asyncio.wrap_future(future))


def test_a_run_started_on_a_loop_runs_its_instance_from_the_loop_with_its_output() -> None:
    threads = Threads()
    printed = logs.Collector()
    with dd.Runtime(engine="process", workers=1, cache=False) as rt:
        async def main() -> Any:
            return await _run(rt, h.tag, 7, threads, printed)

        assert asyncio.run(main()) == 7001
    assert threads.names == {threading.current_thread().name}  # the loop's, no worker's
    assert [(log.function, log.text) for log in printed.logs] == \
        [("tagged", "tagged 7, seen 1\n")]


def test_without_a_loop_the_same_run_goes_through_a_worker_thread() -> None:
    threads = Threads()
    with dd.Runtime(engine="process", workers=1, cache=False) as rt:
        program = as_program(h.tag)
        future = rt.start_plan(rt.plan(program), program.bind((7,), {}), program.artifacts,
                               observe=threads)
        assert future is not None
        assert program.unbind(future.result(timeout=60)) == 7001
    assert threads.names == {"dandelion-worker-0"}


def test_many_runs_at_once_keep_their_own_results_and_the_pool_bound() -> None:
    threads = Threads()
    printed = logs.Collector()
    with dd.Runtime(engine="process", workers=2, cache=False) as rt:
        async def main() -> list[Any]:
            return await asyncio.gather(*(_run(rt, h.tag, x, threads, printed)
                                          for x in range(40)))

        results = asyncio.run(main())
    assert results == [x * 1000 + 1 for x in range(40)]  # each in a fresh sandbox
    assert threads.most <= 2  # never more invocations at once than engines
    assert sorted(log.text for log in printed.logs) == \
        sorted(f"tagged {x}, seen 1\n" for x in range(40))


def test_a_crash_a_timeout_and_an_exit_fail_their_own_runs_only() -> None:
    with dd.Runtime(engine="process", workers=2, cache=False,
                    timeouts={"spinning": 0.5}) as rt:
        async def main() -> list[Any]:
            return await asyncio.gather(
                _run(rt, h.crash, 1), _run(rt, h.tag, 1), _run(rt, h.spin, 1),
                _run(rt, h.tag, 2), _run(rt, h.exit_, 1), _run(rt, h.tag, 3),
                return_exceptions=True)

        crashed, one, spun, two, exited, three = asyncio.run(main())
    assert (one, two, three) == (1001, 2001, 3001)
    assert isinstance(crashed, dd.SandboxViolation)
    assert "crashed with SIGSEGV" in crashed.message and crashed.function == "crashing"
    assert isinstance(spun, dd.FunctionTimeout)
    assert "ran past its timeout of 0.5 s and was killed" in spun.message
    assert isinstance(exited, dd.SandboxViolation)
    assert "exited (status 3) without returning its outputs" in exited.message


def test_code_too_large_to_hand_over_from_the_loop_runs_on_a_worker() -> None:
    threads = Threads()
    with dd.Runtime(engine="process", workers=1, cache=False) as rt:
        async def main() -> Any:
            return await _run(rt, h.size, 1, threads)

        assert asyncio.run(main()) == 1 + len(h.BIG)
    assert threads.names == {"dandelion-worker-0"}


def test_awaitable_hands_over_an_outcome_from_the_loop_or_another_thread() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        here: concurrent.futures.Future[int] = concurrent.futures.Future()
        waiting = awaitable(here, loop)
        here.set_result(1)  # on the loop: handed over at once
        assert waiting.done() and waiting.result() == 1
        there: concurrent.futures.Future[int] = concurrent.futures.Future()
        waiting = awaitable(there, loop)
        threading.Thread(target=there.set_exception, args=(ValueError("no"),)).start()
        with pytest.raises(ValueError, match="no"):
            await waiting
        cancelled: concurrent.futures.Future[int] = concurrent.futures.Future()
        awaitable(cancelled, loop).cancel()
        await asyncio.sleep(0)
        assert cancelled.cancelled()  # the run it stands for is cancelled too

    asyncio.run(main())


@pytest.mark.parametrize(("target", "x"), [(f.fan_in, [1, 2, 3]), (f.chain3, 4),
                                           (f.doubles, list(range(7)))])
def test_compositions_started_on_a_loop_give_what_run_gives(target: Any, x: Any) -> None:
    """Fan-outs, chains and gathers: every instance driven from the loop, the next
    application started from the loop as the last one ends."""
    with dd.Runtime(engine="process", workers=2, cache=False) as rt:
        async def main() -> Any:
            return await _run(rt, target, x)

        assert asyncio.run(main()) == rt.run(target, x)


def test_a_failing_instance_fails_the_run_started_on_a_loop_with_its_name() -> None:
    with dd.Runtime(engine="process", workers=2, cache=False) as rt:
        async def main() -> Any:
            return await _run(rt, f.failing_chain, [1, 2, 5])

        with pytest.raises(dd.FunctionError, match="fail_on_three") as info:
            asyncio.run(main())
    assert info.value.function == "fail_on_three"


class Opaque:
    """A value with no encoding across the sandbox boundary."""


def test_an_instance_that_cannot_begin_fails_its_run_and_never_blocks_the_loop() -> None:
    # laying out its inputs fails before any sandbox runs: reported from inside the
    # dispatcher's submit, this deadlocked the event loop (the run's lock, held there)
    # (dd.run refuses such a value before the run: the items are made here as a caller of
    # start_plan may make them, without Program.bind)
    outcome: list[Any] = []
    program = as_program(h.untyped_run)
    with dd.Runtime(engine="process", workers=1, cache=False) as rt:
        async def main() -> Any:
            future = rt.start_plan(rt.plan(program), {"x": (dd.Item(Opaque()),)},
                                   program.artifacts, loop=asyncio.get_running_loop())
            assert future is not None
            try:
                await asyncio.wrap_future(future)
            except dd.FunctionError as e:
                outcome.append(e)
            outcome.append(await _run(rt, h.tag, 3))  # the loop and the engine go on

        loop_thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        loop_thread.start()
        loop_thread.join(timeout=60)
        assert not loop_thread.is_alive(), "the event loop is blocked"
    error, after = outcome
    assert "cannot cross a sandbox boundary untyped" in error.message
    assert after == 3001


def test_a_function_invoked_again_finds_a_fresh_sandbox_that_has_its_code_already() -> None:
    """After a repeated function's answer, a sandbox unpickles its code ahead of the next
    invocation (:mod:`~dandelion.backends.engines.process.ahead`): the next one runs code
    unpickled before it came, still in a sandbox that ran nothing before."""
    with dd.Runtime(engine="process", workers=1, cache=False,
                    engine_options={"ready_functions": 2,
                                    "reuse_sandboxes": False}) as rt:
        async def main() -> list[Any]:
            ages, tags = [], []
            for i in range(4):
                ages.append(await _run(rt, h.loaded_run, i))
                tags.append(await _run(rt, h.tag, i))  # a fresh sandbox each time
                await asyncio.sleep(0.3)
            return [ages, tags]

        ages, tags = asyncio.run(main())
    assert all(age < 0.25 for age in ages[:2]), ages  # unpickled on the request's path
    assert all(age >= 0.25 for age in ages[2:]), ages  # unpickled before the request
    assert tags == [i * 1000 + 1 for i in range(4)]


def test_a_sandbox_made_ready_for_one_function_never_runs_another() -> None:
    with dd.Runtime(engine="process", workers=1, cache=False,
                    engine_options={"ready_functions": 2}) as rt:
        async def main() -> list[int]:
            out = []
            for i in range(6):
                out += [await _run(rt, h.tag, i), await _run(rt, h.negate, i)]
                await asyncio.sleep(0.02)
            return out

        assert asyncio.run(main()) == [v for i in range(6) for v in (i * 1000 + 1,
                                                                      -(i * 1000 + 1))]


def test_code_of_the_same_digest_with_other_captured_values_never_runs_old_code() -> None:
    """The same source (digest) with another captured value is other code: the sandbox made
    ready with the first pickle is not used for the second."""
    with dd.Runtime(engine="process", workers=1, cache=False) as rt:
        async def main() -> list[int]:
            out = []
            for k in (1, 1, 1, 50, 50, 1):
                out.append(await _run(rt, h.adding(k), 10))
                await asyncio.sleep(0.05)
            return out

        assert asyncio.run(main()) == [11, 11, 11, 60, 60, 11]


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has: killed, not reaped)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _zygote_of(pool: Any, pid: int) -> Any:
    """The zygote that forked sandbox ``pid`` (alive: it waits to be ended)."""
    parent = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    [zygote] = [z for z in pool.running() if z.process.pid == parent]
    return zygote


def _ends(pid: int, seconds: float = 10.0) -> bool:
    """Whether process ``pid`` ends within ``seconds``."""
    deadline = time.monotonic() + seconds
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_sandbox_ends_after_its_answer_once_the_reader_had_time_to_read_it() -> None:
    """A sandbox is ended :data:`~dandelion.runtime.handoff.RELEASE_AFTER` after its
    outcome, not at once: the answer goes out first, and the sandbox's exit and what it
    sets off (a fork, a sandbox made ready) do not compete with its reader.  It still ends,
    with the loop running, and each invocation has a sandbox of its own."""
    with dd.Runtime(engine="process", workers=1, cache=False,
                    engine_options={"reuse_sandboxes": False}) as rt:
        async def main() -> tuple[list[int], list[bool]]:
            pids, kept = [], []
            for i in range(3):
                pids.append(await _run(rt, h.pid_run, i))
                for _ in range(3):  # a few turns of the loop: a request's answer is sent
                    await asyncio.sleep(0)
                kept.append(_running(pids[-1]))
                await asyncio.sleep(handoff.RELEASE_AFTER + 0.05)
            return pids, kept

        pids, kept = asyncio.run(main())
        assert len(set(pids)) == 3
        assert kept == [True] * 3
        assert all(_ends(pid) for pid in pids)


def test_the_next_invocation_ends_the_wait_of_the_sandboxes_before_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An invocation that comes before the wait is over ends the previous invocations'
    sandboxes right after its own hand-over: back to back, the pool needs their
    replacements now (the zygote forks one as one exits)."""
    monkeypatch.setattr(handoff, "RELEASE_AFTER", 60.0)  # a timer that never fires here
    with dd.Runtime(engine="process", workers=1, cache=False,
                    engine_options={"reuse_sandboxes": False}) as rt:
        async def main() -> tuple[list[int], list[bool]]:
            pids, ended = [], []
            for i in range(4):
                pids.append(await _run(rt, h.pid_run, i))
                ended.append(len(pids) < 2 or _ends(pids[-2], 5.0))
            return pids, ended

        pids, ended = asyncio.run(main())
        assert len(set(pids)) == 4
        assert ended == [True] * 4
        assert _running(pids[-1])  # the last one waits still
    assert _ends(pids[-1])  # until the runtime closes


def test_a_sandbox_that_reported_counts_as_running_no_more_while_it_waits_to_be_ended(
        ) -> None:
    """Whether the zygote warms the sandboxes it forks depends on how many invocations run
    (:meth:`~dandelion.backends.engines.process.pool.Zygote.adapt`): one that reported and
    waits for :data:`~dandelion.runtime.handoff.RELEASE_AFTER` to be ended runs no more.
    Counted on the zygote that forked it, one of the test's own: zygotes are shared by
    every runtime of the process with the same settings, and an earlier test's invocations
    on one may still be ending."""
    from dandelion.backends.engines.process import pool

    with dd.Runtime(engine="process", workers=1, cache=False,
                    engine_options={"reuse_sandboxes": False, **_own_zygote(1)}) as rt:
        async def main() -> tuple[list[int], list[int]]:
            counts, pids = [], []
            for i in range(3):
                pids.append(await _run(rt, h.pid_run, i))
                counts.append(_zygote_of(pool, pids[-1]).running)
                await asyncio.sleep(handoff.RELEASE_AFTER + 0.05)
            return counts, pids

        counts, pids = asyncio.run(main())
        assert counts == [0, 0, 0]
        assert all(_ends(pid) for pid in pids)


def _left_under_way(rt: dd.Runtime) -> Any:
    """Fail a run on ``asyncio.run`` while its other instance still runs (for 0.5 s), on
    a zygote of the runtime's own that is full of ready sandboxes (both instances begin at
    once); that zygote."""
    from dandelion.backends.engines.process import pool

    # (a loop's last sandbox waits to be ended until the next loop starts a run)
    zygote = _zygote_of(pool, asyncio.run(_run(rt, h.pid_run, 1)))
    assert zygote.settle()
    with pytest.raises(dd.FunctionError, match="zero"):
        asyncio.run(_run(rt, h.fail_fast, [0, 1]))
    assert zygote.running == 1  # the other instance, under way with its loop gone
    return zygote


#: engine options that give a test a zygote no other test shares (a memory limit of its own)
def _own_zygote(n: int) -> dict[str, Any]:
    return {"memory_limit": (1 << 30) + 4096 * n}


def test_a_loop_that_closed_with_instances_under_way_leaves_nothing_behind() -> None:
    """A run on ``asyncio.run`` whose first instance fails ends the loop while another
    still runs: nothing would ever read that one, which held a sandbox, a context and one
    of the pool's engines.  The next loop to start a run ends it and gives them back (so
    does closing the runtime)."""
    with dd.Runtime(engine="process", workers=2, cache=False,
                    engine_options=_own_zygote(2)) as rt:
        zygote = _left_under_way(rt)
        assert asyncio.run(_run(rt, h.pid_run, 5)) > 0  # another loop, another run
        assert zygote.running == 0
        assert rt.backend.pool._free == 2  # (both engines free again)
        assert asyncio.run(_run(rt, h.fail_fast, [2, 3])) == [2, 3]


def test_closing_the_runtime_ends_what_a_closed_loop_left_under_way() -> None:
    with dd.Runtime(engine="process", workers=2, cache=False,
                    engine_options=_own_zygote(3)) as rt:
        zygote = _left_under_way(rt)
    assert zygote.running == 0


def test_the_sandbox_of_a_loops_last_answer_ends_when_another_loop_starts_a_run() -> None:
    """A loop that closed right after an answer never runs the timer that ends its
    sandbox: the next loop to start a run ends it (a program calling asyncio.run again),
    as closing the runtime would."""
    with dd.Runtime(engine="process", workers=1, cache=False) as rt:
        async def one(x: int) -> int:
            result: int = await _run(rt, h.pid_run, x)
            return result

        first = asyncio.run(one(1))  # the loop closes at once
        assert _running(first)  # its timer never ran
        second = asyncio.run(one(2))
        assert _ends(first)
        assert second != first
    assert _ends(second)
