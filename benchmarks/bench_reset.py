"""Resetting a used numpy sandbox to a snapshot against forking a fresh one (issue 19, step 1).

Builds and runs ``benchmarks/reset_cycle.c``, a prototype of the mechanism (not yet the
engine's): the 128×128 int64 M·Mᵀ in a long-lived Python process that, after each
invocation, its parent stops (ptrace), finds the pages written since the snapshot
(userfaultfd write-protection in async mode and ``PAGEMAP_SCAN``), writes the snapshot's
contents back, checks the memory map is unchanged and restores the registers — against a
numpy zygote forking a process per invocation.  Rounds alternate the two; the CPU per
invocation counts every process involved.  Then the probes: invocations that mutate
module-level state, drop a heap page, write through ``mprotect``, replace or add a mapping
or grow the heap, each followed by a reset (or a discard and a fresh process), and a plain
invocation after each that must see exactly the snapshot's state.  Needs Linux 6.7 or later
(``PAGEMAP_SCAN``, ``UFFD_FEATURE_WP_ASYNC``; 6.11 to compare the memory map with
``PROCMAP_QUERY`` rather than its text), x86-64 and gcc.  Last, with the engine as it is:
how often a real numpy sandbox's memory map changes during an invocation of the same
function through ``dd.Runtime(engine="process")`` (its maps read when the pool hands it
out and again before it is ended; the context's mapping aside), since each such change
would discard a reusable sandbox.  And the engine's own reset (``reuse_sandboxes=True``)
against a fresh fork per invocation (the default), invocations started as an event loop
starts them (``ProcessEngine.begin``), blocks of ``--engine`` invocations alternating: the
CPU per invocation of the worker, the zygote and every sandbox, and the median wall time.
See ``docs/isolation.rst`` (reusing a sandbox).

    python benchmarks/bench_reset.py [--rounds 4] [--cycles 200] [--no-probe] [--layout 100]
                                     [--engine 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("reset_cycle.c")


def main() -> None:
    """Build the prototype, run the alternating rounds, then the probes."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4,
                    help="rounds of each mode; the memory map is compared by its text in odd "
                         "rounds, with PROCMAP_QUERY in even ones")
    ap.add_argument("--cycles", type=int, default=200, help="invocations per round and mode")
    ap.add_argument("--wp-in-scan", action="store_true",
                    help="write-protect in the scan, so that each reset rewrites every page "
                         "written since the snapshot (default: protect the written-back "
                         "pages again after the write-back)")
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--engine", type=int, default=200,
                    help="invocations per block of the engine's comparison (0: none)")
    ap.add_argument("--layout", type=int, default=100,
                    help="invocations through the engine whose memory maps are compared "
                         "(0: none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exe = str(Path(tmp) / "reset_cycle")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, str(SOURCE)], check=True)
        print(f"bench_reset: {os.cpu_count()} CPUs, kernel {os.uname().release}, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        subprocess.run([exe, sys.executable, str(args.rounds), str(args.cycles),
                        str(int(args.wp_in_scan))], check=True)
        print(f"load {os.getloadavg()[0]:.2f}", flush=True)
        if not args.no_probe:
            subprocess.run([exe, sys.executable, "probe"], check=True)
    if args.layout:
        layout(args.layout)
    if args.engine:
        engine_cpu(args.engine, args.rounds)


def _tree_cpu(pid: int) -> float:
    """Seconds of CPU of process ``pid``, its reaped children and its live ones."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(p: int) -> list[str]:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    fields = stat(pid)
    total = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    for kid in kids:
        try:
            total += sum(int(v) for v in stat(kid)[11:13])
        except OSError:
            pass
    return total / tick


def engine_cpu(n: int, rounds: int) -> None:
    """CPU per invocation, begin path, the process engine with and without resets."""
    import resource
    import select
    import statistics

    import numpy as np

    import dandelion as dd
    from dandelion.backends.engines.process import pool
    from dandelion.backends.engines.process.engine import ProcessEngine
    from dandelion.runtime.engine import FunctionCall

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.matmul import gram

    m = np.random.default_rng(0).integers(-100, 100, (128, 128), dtype=np.int64)
    impl = gram.spec.implementations[0]
    call = FunctionCall(gram.spec, impl, gram.artifact, 10.0)
    engines = {"fork": ProcessEngine(reuse_sandboxes=False),
               "reset": ProcessEngine(reuse_sandboxes=True)}
    code = engines["fork"].store.get(impl.digest, gram.artifact, "python")

    def once(engine: ProcessEngine) -> float:
        context = engine.domain.acquire()
        try:
            context.place([[dd.Item(m)]])
            t = time.perf_counter()
            started = engine.begin(context, call)
            while started is None:
                time.sleep(0.001)
                started = engine.begin(context, call)
            try:
                while True:
                    select.select([started.fd], [], [], 10)
                    if started.feed():
                        break
                started.outcome()
                wall = time.perf_counter() - t
            finally:
                started.end()
        finally:
            engine.domain.release(context)
        return wall

    try:
        for engine in engines.values():
            for _ in range(20):  # zygotes started, a sandbox made ready
                once(engine)
        print(f"engine ({n} invocations a block, begin path, 2 ms apart; load "
              f"{os.getloadavg()[0]:.2f}): CPU per invocation of the worker, the zygote "
              "and its sandboxes; p50 wall")
        for r in range(rounds):
            for name, engine in engines.items():
                z = engine.zygote_for(code)
                z0, w0 = _tree_cpu(z.process.pid), resource.getrusage(resource.RUSAGE_SELF)
                walls = []
                for _ in range(n):
                    walls.append(once(engine))
                    time.sleep(0.002)
                time.sleep(0.05)
                z1, w1 = _tree_cpu(z.process.pid), resource.getrusage(resource.RUSAGE_SELF)
                worker = (w1.ru_utime + w1.ru_stime - w0.ru_utime - w0.ru_stime) / n
                print(f"  {r} {name:5s} {(worker + (z1 - z0) / n) * 1e3:6.2f} ms "
                      f"(worker {worker * 1e3:.2f}, zygote and sandboxes "
                      f"{(z1 - z0) / n * 1e3:.2f})  p50 {statistics.median(walls) * 1e3:.2f} "
                      f"ms  resets {engine.ahead.resets}, discarded {engine.ahead.discarded}",
                      flush=True)
        print(f"  load {os.getloadavg()[0]:.2f}")
    finally:
        for engine in engines.values():
            engine.close()
        pool.shutdown()


def _maps(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read().splitlines()
    except OSError:
        return None


def layout(n: int) -> None:
    """Invoke the matrix function ``n`` times on the process engine; count the numpy
    sandboxes whose memory map after the invocation differs from the one they were handed
    out with, beyond the context's mapping."""
    import numpy as np

    import dandelion as dd
    from dandelion.backends.engines.process import pool

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.matmul import gram

    taken: dict[int, list[str] | None] = {}
    changes: list[str] = []
    seen = [0, 0]  # invocations, of which changed
    pick, end = pool.Zygote._pick, pool.Zygote.end

    def picked(self: pool.Zygote) -> Any:
        sandbox = pick(self)
        if sandbox is not None:
            taken[sandbox.pid] = _maps(sandbox.pid)
        return sandbox

    def ended(self: pool.Zygote, sandbox: pool.Sandbox) -> None:
        before, after = taken.pop(sandbox.pid, None), _maps(sandbox.pid)
        if before is not None and after is not None and "numpy" in self.preload:
            seen[0] += 1
            diff = [f"- {line}" for line in before if line not in after] + \
                   [f"+ {line}" for line in after if line not in before
                    and "dandelion-context" not in line]
            seen[1] += bool(diff)
            changes.extend(diff)
        end(self, sandbox)

    m = np.random.default_rng(0).integers(-100, 100, (128, 128), dtype=np.int64)

    @dd.composition
    def request(m: np.ndarray) -> np.ndarray:
        return gram(m)

    pool.Zygote._pick, pool.Zygote.end = picked, ended  # type: ignore[method-assign]
    try:
        with dd.Runtime(engine="process", cache=False) as rt:
            for _ in range(n):
                rt.run(request, m)
                time.sleep(0.002)
    finally:
        pool.Zygote._pick, pool.Zygote.end = pick, end  # type: ignore[method-assign]
    print(f"layout: {seen[0]} numpy invocations on the process engine, {seen[1]} changed "
          "the sandbox's memory map beyond the context's mapping")
    for line in changes[:20]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
