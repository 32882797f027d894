"""Cost of sandboxing with the process engine (issue 4), every number from one run.

1. raw fork + _exit + waitpid of a lean Python process and of one that imported numpy;
2. installing the prebuilt seccomp filter (prctl) in a fresh child;
3. sandbox overhead of a no-op on the critical path (end-to-end minus function time), cold
   (code loaded from the artifact store on disk) and hot, median and p99, Python and native,
   next to the inline engine and next to a raw fork measured in the same loop, at two
   pacings (1 ms and 5 ms between invocations);
4. the matrix workload (128x128 int64 M.M^T), 95 % hot requests, on 2 workers: throughput
   of the process engine (native and numpy implementations; warm-ups as by default, i.e.
   off while the CPUs are busy, and never) against the inline engine, next to the
   ceiling of any design that forks a process per invocation on this machine: two processes
   (one per CPU) that hold what a numpy zygote holds and compute the product in a freshly
   forked child each time (no sandbox, no runtime, no messages), against the same two
   processes computing it in place;
5. memory: the worker's peak RSS under load and what idle generic sandboxes hold;
6. CPU time per invocation of the matrix workload, by process: the caller (this process),
   the zygotes (forking) and the sandboxes (user and system time, minor page faults), with
   warm-ups on and off, against the inline engine: what a request costs the machine, which
   bounds throughput however the latency is spent; and what a numpy sandbox ended unused
   costs (fork, lockdown, warm-up, exit: the part of each invocation that is the sandbox
   alone).

    python benchmarks/bench_sandbox.py [--quick] [--only latency|throughput|cpu]

Latencies are measured one invocation at a time: before each, every pool of generic
sandboxes is refilled and then the node idles for a short pause (a request that meets a
quiet node: low load).  On a
virtual machine whose idle CPUs are handed back to the host, everything that runs after an
idle pause runs slower (cold caches and TLBs): a raw fork paced 5 ms apart costs 1.2-1.5x
one forked back to back.  So section 3 measures a raw fork (of a lean Python process, on
request, timed inside it) as one more variant of the same interleaved, paced loop, and
reports the sandbox overhead against that as well as against section 1's number.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import dandelion as dd
from dandelion.backends.engines.inline import InlineEngine
from dandelion.backends.engines.process import _sandboxc, pool
from dandelion.backends.engines.process.engine import ProcessEngine
from dandelion.backends.engines.process.filter import build_filter
from dandelion.items import Item
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.store import ArtifactStore

REPO = Path(__file__).resolve().parents[1]
US = 1e6

FORKER = textwrap.dedent("""
    import os, time
    while os.read(0, 1):
        t = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        os.write(1, b"%d\\n" % (time.perf_counter_ns() - t))
""")


class PacedFork:
    """A lean Python process that forks (+ _exit + waitpid) on request and reports how long
    that took: the raw fork cost under the same pacing as the invocations it is compared
    with.  Quacks like an engine for :func:`overhead`."""

    def __init__(self) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", FORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)

    def fork(self) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"x")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline()) / 1e9

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


FORK_LOOP = textwrap.dedent("""
    import os, sys, time
    {imports}
    ts = []
    for _ in range({n}):
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        ts.append(time.perf_counter() - t)
    ts.sort()
    print(ts[len(ts) // 2])
""")


PRODUCT_LOOP = textwrap.dedent("""
    import ctypes, mmap, os, time
    from dandelion.backends.engines.process import _sandboxc
    _sandboxc.heap_arenas()
    from dandelion.backends.engines.process import zygote
    zygote.preload(("numpy",))
    import numpy as np
    m = np.random.default_rng(0).integers(-100, 100, (128, 128), dtype=np.int64)
    out = np.frombuffer(mmap.mmap(-1, m.nbytes), dtype=np.int64).reshape(m.shape)
    out[:] = m @ m.T
    zygote.settle_heap()  # the zygote's image, as far as fork is concerned
    fork = ctypes.CDLL(None).fork  # a bare fork(2), as the zygote's C loop calls it
    n, forking = {n}, {forking}
    t = time.perf_counter()
    for _ in range(n):
        if not forking:
            out[:] = m @ m.T
            continue
        pid = fork()
        if pid == 0:
            out[:] = m @ m.T
            os._exit(0)
        os.waitpid(pid, 0)
    print(n / (time.perf_counter() - t))
""")


def product_rate(forking: bool, n: int) -> float:
    """Products per second of two processes (one per CPU) computing M.M^T ``n`` times
    each, in place or each time in a freshly forked child: what fork-per-invocation costs
    with nothing else around it."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", PRODUCT_LOOP.format(n=n, forking=forking)],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    rates = [float(p.communicate()[0]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("the product loop failed")
    return sum(rates)


def raw_fork(imports: str, n: int) -> float:
    """Median seconds of fork+_exit+waitpid in a fresh Python that ran ``imports``."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", FORK_LOOP.format(imports=imports, n=n)],
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout)


def seccomp_install(n: int) -> float:
    """Median seconds to install the prebuilt filter in a freshly forked child."""
    ts = []
    for _ in range(n):
        r, w = os.pipe()
        program = build_filter(w)  # the child may write its result on w only
        pid = os.fork()
        if pid == 0:
            os.close(r)
            t = time.perf_counter_ns()
            _sandboxc.install_filter(program)
            os.write(w, str(time.perf_counter_ns() - t).encode())
            os._exit(0)
        os.close(w)
        ts.append(int(os.read(r, 64)) / 1e9)
        os.close(r)
        os.waitpid(pid, 0)
    return statistics.median(ts)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


@dd.compute
def noop(x: int) -> int:
    return x


def native_noop(build_dir: Path) -> Any:
    from dandelion.sdk import build

    src = build_dir / "noop.c"
    src.write_text("#include <dandelion.h>\nint dandelion_main(void) {\n"
                   "  dd_item in; if (dd_input_item(0, 0, &in)) return 1;\n"
                   "  return dd_add_output(0, in.data, in.size, in.key, 0);\n}\n")
    return build([src], build_dir / "noop.elf")


Variant = tuple[str, Any, FunctionCall, "Callable[[], None] | None"]


def overhead(variants: list[Variant], inputs: list[list[Item[Any]]], n: int, pause: float
             ) -> dict[str, tuple[list[float], list[float]]]:
    """End-to-end seconds (acquire, place, run, extract, release) and function seconds of
    each variant, interleaved (one invocation of each per round) so that noise from the rest
    of the machine falls on all of them alike.  Before each invocation every sandbox pool
    is refilled (:meth:`~dandelion.backends.engines.process.pool.Zygote.settle`), then the node
    idles for ``pause`` seconds: a request that meets a quiet node."""
    out: dict[str, tuple[list[float], list[float]]] = {v[0]: ([], []) for v in variants}
    for _ in range(n):
        for label, engine, call, cold in variants:
            for zygote in pool.running():
                zygote.settle()
            if cold is not None:
                cold()
            time.sleep(pause)
            if isinstance(engine, PacedFork):
                out[label][0].append(engine.fork())
                out[label][1].append(0.0)
                continue
            t = time.perf_counter()
            ctx = engine.domain.acquire()
            ctx.place(inputs)
            seconds = engine.run(ctx, call)  # the function's own time, where measured
            ctx.extract()
            engine.domain.release(ctx)
            e2e, fn = out[label]
            e2e.append(time.perf_counter() - t)
            fn.append(seconds or 0.0)
    return out


def report_overhead(label: str, e2e: list[float], fn: list[float]) -> float:
    over = [a - b for a, b in zip(e2e, fn, strict=True)]
    med = statistics.median(over)
    print(f"  {label:<34} overhead median {med * US:8.0f} us   p99 {pct(over, .99) * US:8.0f} us"
          f"   (end-to-end median {statistics.median(e2e) * US:7.0f} us, function "
          f"{statistics.median(fn) * US:5.0f} us)")
    return med


def throughput(engine: str, fn: Any, matrices: list[np.ndarray], store: ArtifactStore | None,
               digest: str | None, clients: int, requests: int, **engine_options: Any
               ) -> float:
    """Requests per second of single-application compositions of ``fn`` on 2 workers, 5 %
    of them cold (their code evicted from memory just before)."""
    @dd.composition
    def request(m: np.ndarray) -> np.ndarray:
        return fn(m)

    options: dict[str, Any] = {"engine": engine, "workers": 2, "cache": False}
    if store is not None:
        options["engine_options"] = {"store": store, **engine_options}
    with dd.Runtime(**options) as rt:
        for m in matrices[:20]:
            rt.run(request, m)  # warm up: plan cache, pools
        expected = [m @ m.T for m in matrices[:3]]
        assert all(np.array_equal(rt.run(request, m), e)
                   for m, e in zip(matrices, expected, strict=False))

        def one(i: int) -> None:
            if store is not None and digest is not None and i % 20 == 0:
                store.evict(digest)  # 5 % cold
            rt.run(request, matrices[i % len(matrices)])

        n = requests
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as executor:
            list(executor.map(one, range(n)))
        return n / (time.perf_counter() - t)


def uss_kib(pid: int) -> tuple[int, int]:
    """(private, proportional) resident KiB of a process."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0), fields.get("Pss", 0)


def latency_sections(n: int) -> None:
    """Sections 1-3: raw fork, filter install, sandbox overhead of a no-op."""
    print("\n1. raw process creation (fork + _exit + waitpid), back to back, median")
    leans, heavies = [], []
    for _ in range(3):  # alternate, take the median: the machine may be shared
        leans.append(raw_fork("", n))
        heavies.append(raw_fork("import numpy", n))
    lean, heavy = statistics.median(leans), statistics.median(heavies)
    print(f"  lean Python                        {lean * US:8.0f} us")
    print(f"  Python that imported numpy         {heavy * US:8.0f} us")

    print("\n2. seccomp filter install (prebuilt BPF, prctl), median")
    print(f"  {seccomp_install(min(n, 200)) * US:8.0f} us")

    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(tmp) / "store")
        native = native_noop(Path(tmp))
        engine = ProcessEngine(store=store)
        cool = ProcessEngine(store=store, warm_sandboxes=False)
        forker = PacedFork()
        spec = noop.spec
        py_impl = spec.implementations[0]
        py_call = FunctionCall(spec, py_impl, noop.artifact)
        nat_impl = type(py_impl)("native", native.digest, "noop.elf")
        nat_call = FunctionCall(spec, nat_impl, native)
        variants: list[Variant] = [
            ("raw fork of a lean Python (paced)", forker, py_call, None),
            ("inline engine (no sandbox)", InlineEngine(), py_call, None),
            ("process, Python, hot", engine, py_call, None),
            ("process, Python, cold (from disk)", engine, py_call,
             lambda: store.evict(py_impl.digest)),
            ("process, Python, hot, unwarmed pool", cool, py_call, None),
            ("process, native, hot", engine, nat_call, None),
            ("process, native, cold (from disk)", engine, nat_call,
             lambda: store.evict(native.digest)),
        ]
        for pause in (0.001, 0.005):
            print(f"\n3. sandbox overhead on the critical path, no-op (one at a time, "
                  f"{pause * 1e3:g} ms apart, variants interleaved)")
            overhead(variants, [[Item(7)]], 10, pause)  # start and fill the pools
            results = overhead(variants, [[Item(7)]], n, pause)
            medians = {label: report_overhead(label, *results[label])
                       for label, *_ in variants}
            paced = medians["raw fork of a lean Python (paced)"]
            hot_py = medians["process, Python, hot"]
            hot_nat = medians["process, native, hot"]
            print(f"  Python hot overhead / raw lean fork: {hot_py / lean:.2f}x back to back, "
                  f"{hot_py / paced:.2f}x paced alike (target <= 0.5x)")
            print(f"  native hot overhead {hot_nat * US:.0f} us (target <= 200 us, set where a "
                  f"lean fork took ~600 us: 0.33x); / raw lean fork: {hot_nat / lean:.2f}x "
                  f"back to back, {hot_nat / paced:.2f}x paced alike")
        forker.close()
        cool.close()
        engine.close()


def throughput_sections(requests: int) -> None:
    """Sections 4-5: the matrix workload's throughput, and memory."""
    print("\n4. matrix workload, 128x128 int64 M.M^T, 95 % hot, 2 workers, 4 clients, "
          "median of 3 interleaved rounds")
    rng = np.random.default_rng(0)
    matrices = [rng.integers(-100, 100, (128, 128), dtype=np.int64) for _ in range(20)]

    from examples.matmul import gram
    native_gram = dd.compute(gram.fn, name="gram", native=REPO / "examples" / "matmul.c")
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(tmp) / "store")
        digest = gram.spec.implementations[0].digest
        ndigest = native_gram.spec.implementations[0].digest
        rounds: dict[str, list[float]] = {"inline": [], "numpy": [], "cool": [], "native": [],
                                          "in place": [], "forked": []}
        for _ in range(3):  # interleaved rounds; the median of each is reported
            rounds["in place"].append(product_rate(False, requests))
            rounds["forked"].append(product_rate(True, requests))
            rounds["inline"].append(throughput("inline", gram, matrices, None, None, 4,
                                               requests))
            rounds["numpy"].append(throughput("process", gram, matrices, store, digest, 4,
                                              requests))
            rounds["cool"].append(throughput("process", gram, matrices, store, digest, 4,
                                             requests, warm_sandboxes=False))
            rounds["native"].append(throughput("process", native_gram, matrices, store,
                                               ndigest, 4, requests))
    base, py, py_cool, nat = (statistics.median(rounds[k])
                              for k in ("inline", "numpy", "cool", "native"))
    print(f"  inline engine, numpy              {base:8.0f} requests/s")
    print(f"  process engine, numpy             {py:8.0f} requests/s   {py / base:.2f}x "
          "inline (target >= 0.5x)")
    print(f"  process engine, numpy, unwarmed  {py_cool:8.0f} requests/s   "
          f"{py_cool / base:.2f}x inline")
    print(f"  process engine, native C          {nat:8.0f} requests/s   {nat / base:.2f}x "
          "inline (target >= 0.8x)")
    in_place, forked = statistics.median(rounds["in place"]), statistics.median(rounds["forked"])
    print("  ceiling of fork-per-invocation: the product alone, 2 processes, no runtime:")
    print(f"    computed in place                {in_place:8.0f} products/s")
    print(f"    each in a freshly forked child   {forked:8.0f} products/s   "
          f"{forked / in_place:.2f}x in place, {forked / base:.2f}x the inline engine")

    time.sleep(1.0)  # let the pools refill
    print("\n5. memory")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"  worker (this process) peak RSS      {peak / 1024:8.1f} MiB")
    for z in pool.running():
        # the pools were refilled under load, without warm-ups: replace them on a quiet node
        z.settle()
        for sandbox in [z.take() for _ in z.idle_pids()]:
            z.end(sandbox)
        z.settle()
        time.sleep(0.5)  # replacements beyond the pool's size finish their warm-up
        idle = z.idle_pids()
        sizes = [uss_kib(p) for p in idle]
        zu, zp = uss_kib(z.process.pid)
        label = ("native, C" if z.native else "lean" if not z.preload
                 else "+".join(z.preload)) + (", unwarmed" if not z.warm and not z.native
                                              else "")
        print(f"  zygote ({label}): private {zu / 1024:6.1f} MiB, pss {zp / 1024:6.1f} MiB; "
              f"{len(idle)} idle sandboxes: private "
              f"{statistics.mean(s[0] for s in sizes) / 1024 if sizes else 0:5.2f} MiB, pss "
              f"{statistics.mean(s[1] for s in sizes) / 1024 if sizes else 0:5.2f} MiB each")


def _proc_stat(pid: int) -> list[int]:
    """utime, stime, cutime, cstime (clock ticks), minflt, cminflt of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return [int(fields[i]) for i in (11, 12, 13, 14, 7, 8)]


def _zygotes_stat() -> list[int]:
    """:func:`_proc_stat` summed over this process's zygotes (the sandboxes each has
    reaped are in its cutime, cstime and cminflt)."""
    total = [0] * 6
    for z in pool.running():
        for i, v in enumerate(_proc_stat(z.process.pid)):
            total[i] += v
    return total


def cpu_section(n: int) -> None:
    """Section 6: CPU time per invocation, by process."""
    print(f"\n6. CPU time per invocation of the matrix workload, by process ({n} "
          "invocations one after another, 2 ms apart; ms per invocation)")
    m = np.random.default_rng(0).integers(-100, 100, (128, 128), dtype=np.int64)
    from examples.matmul import gram

    @dd.composition
    def request(m: np.ndarray) -> np.ndarray:
        return gram(m)

    tick = os.sysconf("SC_CLK_TCK")
    print("  engine                     all    caller  zygotes  sandbox user  sandbox sys  "
          "faults/sandbox")
    for label, engine, options in (("inline", "inline", {}),
                                   ("process, warm-ups on", "process", {}),
                                   ("process, warm-ups off", "process",
                                    {"warm_sandboxes": False})):
        pool.shutdown()  # each variant with zygotes of its own
        with dd.Runtime(engine=engine, cache=False, engine_options=options) as rt:
            for _ in range(50):
                rt.run(request, m)
            time.sleep(0.5)  # forks ahead done
            z0, r0 = _zygotes_stat(), resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(n):
                rt.run(request, m)
                time.sleep(0.002)
            time.sleep(0.5)  # the last sandboxes reaped
            z1, r1 = _zygotes_stat(), resource.getrusage(resource.RUSAGE_SELF)
        d = [(b - a) for a, b in zip(z0, z1, strict=True)]
        caller = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n * 1e3
        zyg, s_user, s_sys = (d[0] + d[1]) / tick / n * 1e3, d[2] / tick / n * 1e3, \
            d[3] / tick / n * 1e3
        print(f"  {label:22s} {caller + zyg + s_user + s_sys:8.2f} {caller:8.2f} {zyg:8.2f} "
              f"{s_user:12.2f} {s_sys:12.2f} {d[5] / n:12.0f}")
    times = []
    for _ in range(200):
        t = time.perf_counter()
        gram.fn(m)
        times.append(time.perf_counter() - t)
    print(f"  (the function alone, in this process: {statistics.median(times) * 1e3:.2f} ms "
          "median)")
    unused_sandboxes(n)


def unused_sandboxes(n: int) -> None:
    """What a numpy sandbox costs before it is given any work: the zygote's fork, the
    sandbox's lockdown (and warm-up), its wait and its exit, each sandbox ended unused
    right after it said it was ready.  The part of every invocation that is the sandbox
    alone; with warm-ups on, what a warm-up costs the CPU."""
    tick = os.sysconf("SC_CLK_TCK")
    print("  a numpy sandbox forked and ended unused:    zygote  sandbox  faults/sandbox")
    pool.shutdown()
    for label, warm in (("warm-ups off", False), ("warm-ups on", True)):
        z = pool.Zygote(("numpy",), 2, 300, warm=warm, memory_limit=1 << 30)
        try:
            z.settle(30)
            with open(f"/proc/{z.process.pid}/maps") as f:
                mappings = sum(1 for _ in f)  # each copied by a fork, torn down by an exit
            before = _proc_stat(z.process.pid)
            for _ in range(n):
                z.end(z.take())
                z.settle(10)  # one at a time: its replacement forked and ready
            time.sleep(0.3)
            d = [b - a for a, b in zip(before, _proc_stat(z.process.pid), strict=True)]
        finally:
            z.close()
        print(f"    {label:40s} {(d[0] + d[1]) / tick / n * 1e3:6.2f} "
              f"{(d[2] + d[3]) / tick / n * 1e3:8.2f} {d[5] / n:15.0f}")
    print(f"  the numpy zygote: {len(z.modules)} modules, {mappings} memory mappings")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--only", choices=("latency", "throughput", "cpu"),
                    help="sections 1-3 (latency), 4-5 (throughput, memory) or 6 (CPU by "
                         "process) only")
    args = ap.parse_args()
    print(f"bench_sandbox: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"numpy {np.__version__}")
    if args.only in (None, "latency"):
        latency_sections(100 if args.quick else 300)
    if args.only in (None, "throughput"):
        throughput_sections(150 if args.quick else 400)
    if args.only in (None, "cpu"):
        cpu_section(150 if args.quick else 500)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
