"""The pool of generic sandboxes: which one a worker gets, and how it ends."""

from __future__ import annotations

import os
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


def test_a_sandbox_that_died_before_it_was_ready_is_never_handed_out(zygote):
    idle = zygote.idle_pids()
    victim = next(s for s in zygote._ready if s.pid == idle[-1])
    # as if it had died before writing its READY byte (settle() has taken the byte)
    victim.ready = False
    os.kill(victim.pid, signal.SIGKILL)
    time.sleep(0.2)
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


def test_the_idle_meter_reads_the_share_of_idle_cpu_time(tmp_path):
    stat = tmp_path / "stat"

    def write(idle: int, iowait: int, busy: int) -> None:
        stat.write_text(f"cpu  {busy} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n")

    write(100, 0, 100)
    meter = pool.IdleMeter(window=0, path=str(stat))
    assert meter.share() is None  # nothing has passed yet
    write(130, 10, 160)  # +40 idle (iowait counts), +60 busy
    assert meter.share() == pytest.approx(0.4)
    assert meter.share() == pytest.approx(0.4)  # no time passed: the last window stands
    assert pool.IdleMeter(path=str(tmp_path / "absent")).share() is None
    real = pool.IdleMeter(window=0)
    time.sleep(0.05)
    share = real.share()
    assert share is not None and 0.0 <= share <= 1.0


def _private_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_"))


def test_sandboxes_forked_while_the_cpus_are_busy_skip_the_warm_up(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    ticks = {"idle": 0, "busy": 0}

    def passes(idle: int, busy: int) -> None:  # CPU time passes on the simulated machine
        ticks["idle"] += idle
        ticks["busy"] += busy
        stat.write_text(f"cpu  {ticks['busy']} 0 0 {ticks['idle']} 0 0 0 0 0 0\n")

    passes(0, 0)
    monkeypatch.setattr(pool, "_idle", pool.IdleMeter(0, str(stat)))
    z = pool.Zygote((), 2, 10, warm=True, memory_limit=1 << 30)
    try:
        passes(90, 10)
        assert z.settle(30) and z.warming
        # a warmed-up sandbox has run the probe: it holds copies of the pages that touched
        warm = min(_private_kib(pid) for pid in z.idle_pids())

        def cycle() -> list[int]:  # replace every pooled sandbox, return the new ones
            for sandbox in [z.take(), z.take()]:
                z.end(sandbox)
            assert z.settle(30)
            return z.idle_pids()

        passes(5, 95)  # busy: 5 % idle
        cool = cycle()
        assert not z.warming
        assert max(_private_kib(pid) for pid in cool) < warm - 256, warm
        passes(25, 75)  # between the thresholds: as it was
        cycle()
        assert not z.warming
        passes(80, 20)  # idle again: warm-ups resume
        warmed = cycle()
        assert z.warming
        assert min(_private_kib(pid) for pid in warmed) > warm - 256
    finally:
        z.close()
