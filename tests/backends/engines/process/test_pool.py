"""The pool of generic sandboxes: which one a worker gets, and how it ends."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from dandelion.backends.engines.process import pool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")


@pytest.fixture
def zygote() -> Iterator[pool.Zygote]:
    z = pool.Zygote((), 3, 10, warm=False, memory_limit=1 << 30)
    assert z.settle(30)  # three sandboxes, each locked down and its READY byte written
    try:
        yield z
    finally:
        z.close()


def test_a_sandbox_runs_nicer_than_its_zygote(zygote):
    """Past saturation the zygote's resets (and the worker) run before the sandboxes that
    keep the CPUs busy, rather than waiting their turn behind them (issue 19)."""
    sandbox = zygote.take()
    try:
        assert os.getpriority(os.PRIO_PROCESS, sandbox.pid) == \
            os.getpriority(os.PRIO_PROCESS, zygote.process.pid) + 5
    finally:
        zygote.end(sandbox)


def test_take_hands_out_the_newest_sandbox_that_waits_for_work(zygote):
    idle = zygote.idle_pids()
    assert len(idle) == 3
    sandbox = zygote.take()
    try:
        assert sandbox.pid == idle[-1]  # the most recently forked one
        assert sandbox.ready
        assert sandbox.pid not in zygote.idle_pids()
    finally:
        zygote.end(sandbox)


def test_end_kills_the_sandbox_through_its_pidfd_and_the_zygote_reaps_it(zygote):
    sandbox = zygote.take()
    assert sandbox.pidfd >= 0  # Linux >= 5.3
    pidfd, channel = sandbox.pidfd, sandbox.channel
    zygote.end(sandbox)
    assert sandbox.pidfd == -1 and sandbox.channel == -1
    with pytest.raises(OSError):
        os.fstat(channel)
    with pytest.raises(OSError):
        os.fstat(pidfd)  # the worker keeps no descriptor of an ended sandbox
    status = zygote.wait_status(sandbox.pid)
    assert status is not None and os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL


def _until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.002)
    return predicate()


def test_end_calls_back_once_the_killed_sandbox_has_exited_not_before(zygote):
    """The kill lands on the sandbox's CPU after pidfd_send_signal returns: ``exited`` is
    called from the zygote's reader thread once its zygote has reaped it."""
    sandbox = zygote.take()
    pidfd = os.pidfd_open(sandbox.pid)
    try:
        seen: list[bool] = []  # whether it had exited when the callback came
        zygote.end(sandbox, lambda: seen.append(bool(select.select([pidfd], [], [], 0)[0])))
        assert _until(lambda: bool(seen))
        assert seen == [True]
    finally:
        os.close(pidfd)


def test_end_of_a_sandbox_reaped_already_calls_back_at_once(zygote):
    """A sandbox that died and whose status was taken (wait_status, as the engine asks how a
    sandbox ended without a report) is never waited for again: the zygote would not answer."""
    sandbox = zygote.take()
    pidfd = os.pidfd_open(sandbox.pid)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        assert zygote.wait_status(sandbox.pid) is not None  # reaped, its status taken
        seen: list[bool] = []
        zygote.end(sandbox, lambda: seen.append(True))
        assert seen == [True]  # at once, on this thread
    finally:
        os.close(pidfd)


def test_a_sandbox_that_died_before_it_was_ready_is_never_handed_out(zygote):
    idle = zygote.idle_pids()
    victim = next(s for s in zygote._ready if s.pid == idle[-1])
    # as if it had died before writing its READY byte (settle() has taken the byte)
    victim.ready = False
    os.kill(victim.pid, signal.SIGKILL)
    assert select.select([victim.pidfd], [], [], 30)[0]  # it has exited (on a busy machine
    # a killed sandbox may wait for a CPU to exit on: taken while alive, it looked as if
    # still warming up and was skipped, never dropped)
    taken = []
    try:
        while victim.pid in zygote.idle_pids() and len(taken) < 8:
            taken.append(zygote.take())  # newest first, so the victim is reached
        assert victim.pid not in zygote.idle_pids()  # dropped when its turn came ...
        assert victim.pid not in [s.pid for s in taken]  # ... never handed out
    finally:
        for s in taken:
            zygote.end(s)


def _huge_pages_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
    except OSError:
        return False
    release = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
    return "[never]" not in mode and release >= (6, 1)  # MADV_COLLAPSE: Linux 6.1


@pytest.mark.skipif(not _huge_pages_available(), reason="needs transparent huge pages and "
                    "MADV_COLLAPSE (Linux 6.1)")
def test_the_zygotes_heap_is_in_huge_pages_so_that_a_fork_copies_few_page_tables(zygote):
    fields = {}
    with open(f"/proc/{zygote.process.pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) if rest.split() else 0
    # the lean runtime's 15-20 MiB of heap and arenas: most of it in 2 MiB pages
    assert fields["AnonHugePages"] >= 6 * 1024, fields
    assert fields["AnonHugePages"] >= fields["Anonymous"] // 3, fields


def test_a_zygote_lays_its_arenas_out_before_it_imports_anything():
    # arenas allocated before heap_arenas() (importing the dandelion package, attrs)
    # would lie where no huge page can back them
    code = pool._ARENAS + textwrap.dedent("""
        print(sorted(m for m in sys.modules
                     if m.partition(".")[0] in ("dandelion", "attr", "attrs", "numpy")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['dandelion.backends.engines.process._sandboxc']"


def test_arenas_laid_out_one_after_another_serve_allocation_churn():
    code = textwrap.dedent("""
        from dandelion.backends.engines.process import _sandboxc
        _sandboxc.heap_arenas()
        for round in range(3):  # arenas allocated, freed and allocated again
            rows = [[i, str(i), (i, i)] for i in range(400_000)]
            assert sum(r[0] for r in rows) == sum(range(400_000))
            assert rows[123_456][1] == "123456"
            del rows
        print(_sandboxc.huge_pages() >= 0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_immortalize_reaches_what_tracked_objects_hold_and_stops_their_counts():
    code = textwrap.dedent("""
        import gc, sys
        from dandelion.backends.engines.process import _sandboxc
        atom = "an atom" * 3
        holder = {"atom": atom}          # a dict of atoms: untracked by the collector
        cell = [holder, (1.5, b"bytes")]
        assert not gc.is_tracked(holder)
        made = _sandboxc.immortalize([cell])
        if sys.version_info < (3, 12):  # no immortal objects: nothing changes
            print(made == 0 and sys.getrefcount(atom) < 10)
        else:
            before = [sys.getrefcount(o) for o in (cell, holder, atom, cell[1])]
            refs = [cell, holder, atom, cell[1]] * 3
            after = [sys.getrefcount(o) for o in (cell, holder, atom, cell[1])]
            print(made >= 4 and before == after and min(after) > 2 ** 29)
        try:
            _sandboxc.immortalize((cell,))
        except TypeError as e:
            print("list" in str(e))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def _private_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_"))


def _ready_pids(z: pool.Zygote, n: int) -> list[int]:
    """The pids of ``z``'s pooled sandboxes once ``n`` of them wait for work (warmed up)."""
    deadline = time.monotonic() + 30
    while True:
        with z._cond:
            ready = [s.pid for s in z._ready if pool._waiting(s) == 1]
        if len(ready) >= n or time.monotonic() > deadline:
            return ready
        time.sleep(0.01)


def test_sandboxes_forked_while_every_cpu_runs_an_invocation_skip_the_warm_up(monkeypatch):
    monkeypatch.setattr(pool, "_CPUS", 2)
    z = pool.Zygote((), 2, 10, warm=True, memory_limit=1 << 30)
    try:
        assert z.settle(30) and z.warming
        # a warmed-up sandbox has run the probe: it holds copies of the pages that touched
        warm = min(_private_kib(pid) for pid in z.idle_pids())
        running = [z.take(), z.take(), z.take()]  # three invocations on two CPUs
        assert z.running == 3 and not z.warming
        z.end(running.pop())  # two still run: its replacement is forked without a warm-up
        assert z.running == 2 and not z.warming
        cool = _ready_pids(z, 1)
        assert len(cool) == 1 and _private_kib(cool[0]) < warm - 256, warm
        z.end(running.pop())  # one runs: a CPU is free, warm-ups resume
        assert z.running == 1 and z.warming
        both = sorted(_private_kib(pid) for pid in _ready_pids(z, 2))  # the cool one, and
        assert len(both) == 2 and both[0] < warm - 256 < both[1], (both, warm)  # a warm one
        last = running.pop()
        z.end(last)
        z.end(last)  # ending one again changes nothing
        assert z.running == 0 and z.warming
    finally:
        z.close()



def test_typeguard_lets_mocks_pass_where_a_preloaded_library_loaded_unittest_mock():
    # the zygote imports typeguard with a stand-in for unittest.mock; a library that loads
    # the real one gives typeguard back its Mock (which passes every check) and its patch
    code = textwrap.dedent("""
        import sys
        from dandelion.backends.engines.process import zygote
        zygote.preload(tuple(sys.argv[1:]))
        import typeguard
        checkers = sys.modules["typeguard._checkers"]
        hook = sys.modules["typeguard._importhook"]
        mock = sys.modules.get("unittest.mock")
        if mock is None:
            print("unittest" in sys.modules, checkers.Mock is zygote._NoMock)
            try:
                typeguard.check_type("three", int)
            except typeguard.TypeCheckError:
                print("checked")
        else:
            typeguard.check_type(mock.Mock(), int)
            print(checkers.Mock is mock.Mock, hook.patch is mock.patch, "passed")
    """)
    for libraries, expected in (((), "False True checked"),
                                (("unittest.mock",), "True True passed")):
        out = subprocess.run([sys.executable, "-c", code, *libraries], capture_output=True,
                             text=True, timeout=60, cwd="/")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == expected.split()


def test_a_typeguard_that_needs_more_of_unittest_mock_is_imported_plainly(tmp_path):
    """The stand-in for unittest.mock (zygote._import_typeguard) serves only what typeguard
    4.x takes from it; a typeguard that takes more gets the real module instead of failing
    the zygote's start."""
    fake = tmp_path / "typeguard"
    fake.mkdir()
    (fake / "__init__.py").write_text("from unittest.mock import Mock, MagicMock\n")
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from dandelion.backends.engines.process import zygote\n"
        "zygote._import_typeguard()\n"
        "import typeguard, unittest.mock\n"
        "assert typeguard.MagicMock is unittest.mock.MagicMock\n"
        "assert typeguard.Mock is unittest.mock.Mock\n"
        "print('plain')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "plain", done.stderr
