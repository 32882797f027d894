"""Result caching (issue 15): what a warm cache saves and what an all-miss run costs.

All numbers are ratios against a baseline measured in the same run (medians over
repetitions):

1. the paper's matrix composition (128×128 int64 M·Mᵀ) on the ``process`` engine: a rerun
   with a warm cache against computing it (no cache), with a memory store and a disk store
   (targets: >= 100x and >= 20x; the writeable input, rerun unchanged, is watched and not
   hashed again, :mod:`dandelion.cache.watch`), and with a memory store on an input that
   cannot change (read-only over ``bytes``, as ``numpy.frombuffer`` makes it: hashed once
   while it lives, :mod:`dandelion.cache.frozen`);
2. the cost of caching when everything misses (new inputs each run, memory store): on the
   matrix (target <= 5 %; ``--pairs`` rounds of an uncached run and an all-miss one taking
   turns: the ratio of the medians, the median of the rounds' own ratios, the CPU time and
   the page faults of the calling process per run) and per application on a 10,000-way
   no-op fan-out on ``inline`` against the dispatcher's own time per application
   (target <= 20 %; the fan-out is timed
   in CPU seconds of this process, which other processes on a loaded machine inflate less
   than wall time; the runs without a cache, with all missing and with all hitting take
   turns, ``--rounds`` rounds: the cost is the ratio of the medians, printed with the
   quartiles of the rounds' own ratios);
3. the cost of a hit per application on that fan-out (memory store; target <= 2x the
   dispatcher's time per application, ratio of the medians as in 2);
4. early cutoff: a three-stage pipeline whose input changes without changing stage 1's
   output recomputes only stage 1 (with ``fuse=False``: fused, the three stages are one
   chain, cached as one);
5. the server (its service, without HTTP; ``inline``, memory store): a repeated
   invocation of a 16-way composition served by the whole-composition fast path
   (``--result-cache``), by per-instance hits alone, and computed without a cache;
6. the cache's own work per instance when all miss, on one thread (the fastest of
   ``--repeat`` rounds over the fan-out's 10,000 instances, memory store): keys and lookups,
   joining the flights, keeping the outputs, landing the flights.  A profile of part 2's
   overhead that other processes on a loaded machine disturb less.
7. the cache's own work on one all-miss run of the matrix, on one thread (CPU µs, the
   median of ``--repeat`` runs, each on a new matrix and keeping a new product, memory
   store): the run key (hashing the input), its lookup, the instance's lookup, its flight,
   keeping its output (and the run's mark, in the same call to the store), landing the
   flight.  Part 1's all-miss cost, piece by piece: run after run in a loop ("warm"), and
   with the CPU's caches swept before each run ("cold": the input, and the cache's code and
   data, out of the CPU's caches; the product just made, in them), as a real run finds
   them after the sandbox's work.

8. the time the cache adds to the path of an all-miss run of the matrix on ``process``
   (wall µs, medians of ``--pairs`` rounds of an uncached run and an all-miss one taking
   turns in one process, as in part 1; the calling thread drives the instance,
   :mod:`dandelion.runtime.here`): before its instance is handed to a sandbox (keying and
   looking up), the hand-over itself, from there to the sandbox's answer (the entry's
   memory is made meanwhile), and from the answer to the run's return (keeping the entry).
   Short intervals, which other processes interrupt less often than whole runs: part 1's
   steadier reading of the same cost.

    python benchmarks/bench_cache.py [--repeat 15] [--rounds 61] [--pairs 1001]
                                     [--fanout 10000] [--only N]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import dandelion as dd
from dandelion.cache import DiskStore, MemoryStore, hashing
from dandelion.runtime.events import Event, EventKind

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.matmul import example_matrix, matmul  # noqa: E402


@dd.compute
def noop(x: int) -> int:
    return x


@dd.composition
def fan_out(xs: list[int]) -> list[int]:
    ys = noop(dd.each(xs))
    return ys


@dd.compute
def parity(x: int) -> int:
    return x % 2


@dd.compute
def double(x: int) -> int:
    return 2 * x


@dd.compute
def describe(x: int) -> str:
    return f"twice the parity is {x}"


@dd.composition
def pipeline(x: int) -> str:
    return describe(double(parity(x)))


def median_time(fn: Callable[[int], Any], repeat: int,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """The median time of ``fn(i)`` over ``repeat`` calls (``i``: the repetition)."""
    times = []
    for i in range(repeat):
        t0 = clock()
        fn(i)
        times.append(clock() - t0)
    return statistics.median(times)


def matrix(repeat: int, pairs: int) -> tuple[dict[str, float], dict[str, list[float]],
                                             dict[str, list[float]], dict[str, list[int]]]:
    """Median wall time of each kind of run, and for the two kinds that compute, the wall
    time, the CPU time and the minor page faults of this process (the caller's side: the
    cache's work is all there; the ``process`` engine computes in another process) of each
    of ``pairs`` rounds.  A warm rerun is timed in a block of ``repeat`` reruns, as a user
    reruns; the two kinds of run that compute (new inputs without a cache and with one, all
    missing) take turns in every round, so that a change in the machine's speed weighs on
    both alike: timed one block after the other, two blocks of the very same uncached runs
    differed by 10 %.  Both take inputs made before the rounds, new to each run (neither
    in the CPU's caches when its run starts), and which goes first alternates."""
    m = example_matrix()
    fresh = [example_matrix(seed) for seed in range(1, 2 * pairs + 2)]
    out: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        plain = stack.enter_context(dd.Runtime(engine="process", workers=2, cache=False))
        memory = stack.enter_context(dd.Runtime(engine="process", workers=2,
                                                cache=MemoryStore()))
        disk = stack.enter_context(dd.Runtime(engine="process", workers=2,
                                              cache=DiskStore(tmp)))
        for _ in range(3):
            plain.run(matmul, m)
        out["compute"] = median_time(lambda i: plain.run(matmul, m), repeat)
        memory.run(matmul, m)
        out["warm, memory"] = median_time(lambda i: memory.run(matmul, m), repeat)
        disk.run(matmul, m)
        out["warm, disk"] = median_time(lambda i: disk.run(matmul, m), repeat)
        frozen = np.frombuffer(m.tobytes(), dtype=m.dtype).reshape(m.shape)  # (not hashed
        memory.run(matmul, frozen)  # again while it lives: dandelion.cache.frozen)
        out["warm, memory, frozen"] = median_time(lambda i: memory.run(matmul, frozen), repeat)
        turns: dict[str, list[float]] = {"compute, new inputs": [], "all miss, memory": []}
        cpu: dict[str, list[float]] = {name: [] for name in turns}
        faults: dict[str, list[int]] = {name: [] for name in turns}
        for i in range(pairs):
            pair = [("compute, new inputs", plain, fresh[i]),
                    ("all miss, memory", memory, fresh[pairs + i])]
            for name, rt, inputs in pair if i % 2 else pair[::-1]:
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                c0, t0 = time.process_time(), time.perf_counter()
                rt.run(matmul, inputs)
                turns[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        out.update((name, statistics.median(ts)) for name, ts in turns.items())
    return out, turns, cpu, faults


def fanout(n: int, repeat: int) -> dict[str, list[float]]:
    """Per application, in CPU seconds of this process, per round: on ``inline`` all the
    work is here, and CPU time is inflated less than wall time by other processes.

    The three runtimes take turns in each round (which goes first alternates), so that a
    change in the machine's speed during the run weighs on all of them alike: the
    dispatcher alone (no cache), a rerun with a warm cache (hit), and new inputs (all
    miss; each round's inputs are new to the cache)."""
    out: dict[str, list[float]] = {"dispatcher": [], "hit": [], "all miss": []}
    inputs = [list(range(i * n, (i + 1) * n)) for i in range(repeat + 2)]
    cpu = time.process_time
    with dd.Runtime(engine="inline", workers=2, cache=False) as off, \
            dd.Runtime(engine="inline", workers=2, cache=MemoryStore()) as on:
        off.run(fan_out, inputs[0])
        on.run(fan_out, inputs[0])  # warm: inputs[0] hits from now on
        runs: list[tuple[str, Callable[[int], Any]]] = [
            ("dispatcher", lambda i: off.run(fan_out, inputs[i])),
            ("all miss", lambda i: on.run(fan_out, inputs[i])),
            ("hit", lambda i: on.run(fan_out, inputs[0]))]
        for r in range(repeat):
            for name, fn in runs if r % 2 == 0 else runs[::-1]:
                gc.collect()  # each starts from the same state (not from another's garbage)
                t0 = cpu()
                fn(r + 1)
                out[name].append((cpu() - t0) / n)
    return out


def early_cutoff(fuse: bool = False) -> list[int]:
    """Instances recomputed per stage of the pipeline; fused (``fuse=True``), its three
    stages are one chain, cached as one, with no early cutoff inside (docs/fusion.rst)."""
    events: list[Event] = []
    with dd.Runtime(engine="inline", workers=2, cache=MemoryStore(), fuse=fuse,
                    observers=[events.append]) as rt:
        rt.run(pipeline, 1)
        events.clear()
        rt.run(pipeline, 3)  # parity(3) == parity(1)
    cached = sorted((e for e in events if e.kind is EventKind.CACHED),
                    key=lambda e: e.application)
    return [e.misses or 0 for e in cached]


def server(repeat: int) -> dict[str, float]:
    """Seconds per invocation of the server's service (no HTTP) of a 16-way composition
    with the same inputs: served whole, served per instance, and computed."""
    from dandelion.ir import module_to_data
    from dandelion.server.config import ServerConfig
    from dandelion.server.service import Service
    from tests.server.funcs import SOURCE, sum_doubles

    out: dict[str, float] = {}
    inputs = {"xs": list(range(16))}
    for name, options in (("fast path", {"result_cache": 1024}),
                          ("instances only", {"result_cache": 0}),
                          ("no cache", {"result_cache": 0, "cache": None})):
        with tempfile.TemporaryDirectory() as tmp:
            service = Service(ServerConfig(engine="inline", workers=2, state_dir=tmp,
                                           **options))
            try:
                tenant = service.tenant("bench")
                service.register_functions(tenant, source=SOURCE)
                service.register_compositions(tenant, ir=module_to_data(sum_doubles.module))
                for _ in range(3):
                    service.invoke(tenant, "composition", "sum_doubles", inputs)
                invoke = functools.partial(service.invoke, tenant, "composition",
                                           "sum_doubles", inputs)
                out[name] = median_time(lambda i: invoke(), repeat * 10)  # noqa: B023
            finally:
                service.close()
    return out


def cache_parts(n: int, repeat: int) -> dict[str, float]:
    """CPU seconds per instance of each step of the cache's work on an all-miss run of the
    fan-out's application (the fastest of ``repeat`` rounds)."""
    from dandelion.cache import open_cache
    from dandelion.cache.run import RunCache
    from dandelion.items import Item
    from dandelion.program import as_program
    from dandelion.runtime.backend import bind, initial_sets, signature
    from dandelion.runtime.sharding import Input, instances

    with dd.Runtime(engine="inline", workers=1, cache=False) as rt:
        plan = rt.plan(fan_out)
        app = plan.composition.applications[0]
        spec = signature(plan.module, app.function)
        call = rt.backend.dispatcher(as_program(fan_out).artifacts).call_for(spec)
    cache = open_cache(MemoryStore())
    assert cache is not None
    cpu = time.process_time
    rounds: list[list[float]] = []
    for r in range(repeat + 3):
        sets = initial_sets(plan.composition, {"xs": tuple(
            Item(x, key=i) for i, x in enumerate(range(r * n, (r + 1) * n)))})
        insts = instances([Input(*b) for b in bind(app, spec, sets)], app.join, 2)
        outputs = [((Item(i.inputs[0][0].value, key=i.inputs[0][0].key),),) for i in insts]
        t0 = cpu()
        run = RunCache(cache)
        found = run.lookup(app, spec, call, insts)
        t1 = cpu()
        flights = list(found.keys)
        cache.flights.join_many(flights, lambda i: lambda entry: None)
        t2 = cpu()
        entries = run.store(found.keys, outputs)
        t3 = cpu()
        cache.flights.land_all(flights, entries)
        t4 = cpu()
        rounds.append([(t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n, (t4 - t3) / n])
    best = min(rounds[3:], key=sum)
    return dict(zip(("keys and lookups", "join flights", "keep outputs", "land flights"),
                    best))


def matrix_parts(repeat: int, cold: bool = False) -> dict[str, float]:
    """CPU seconds of each step of the cache's work on an all-miss run of the matrix
    composition (the median of ``repeat`` runs, each on a new matrix and keeping a new
    product, as part 1's all-miss runs do), on this thread; ``cold``: with the CPU's caches
    swept before each run (untimed), the product then read again, as the engine has just
    made it in a real run.  The entry's memory is reserved untimed before the keep, as a
    run reserves it while its function computes (:func:`dandelion.cache.entry.reserve`)."""
    from dandelion.cache import open_cache
    from dandelion.cache.entry import reserve
    from dandelion.cache.run import RunCache
    from dandelion.items import Item
    from dandelion.program import as_program
    from dandelion.runtime.array_rerun import ArrayRerun
    from dandelion.runtime.backend import bind, signature
    from dandelion.runtime.run_memo import RunMemo
    from dandelion.runtime.sharding import Input, instances

    program = as_program(matmul)
    with dd.Runtime(engine="inline", workers=1, cache=False) as rt:
        plan = rt.plan(program)
        app = plan.composition.applications[0]
        spec = signature(plan.module, app.function)
        call = rt.backend.dispatcher(program.artifacts).call_for(spec)
        memo = RunMemo.of(plan, program.artifacts, rt.backend.engine_kinds)
    assert memo is not None
    rerun = ArrayRerun.of(program, memo)  # (None: the C extension has no such path)
    cache = open_cache(MemoryStore())
    assert cache is not None
    inputs = [example_matrix(seed) for seed in range(1000, 1000 + repeat + 3)]
    products = [m @ m.T for m in inputs]
    cpu = time.thread_time
    sweep = np.zeros(64 << 20 if cold else 0, np.uint8)  # beyond the CPU's last-level cache
    rounds: list[list[float]] = []
    for m, product in zip(inputs, products):
        sets = program.bind((m,), {})
        if cold:
            sweep += 1
            product.sum()
        t0 = cpu()  # keyed and looked up as Runtime.run does: in C where it can
        ids: dict[int, tuple[Any, bytes]] = {}
        prefixes: dict[int, Any] = {}
        made = rerun.key(cache, m, prefixes) if rerun is not None else None
        if made is not None:
            key: str | None = made[0]
            item = sets[memo.inputs[0]][0]
            ids[id(item)] = (item, made[1])
        else:
            key = memo.storage_key(cache, sets, ids, prefixes)
        assert key is not None
        t1 = cpu()
        if made is not None and rerun is not None:
            _, data = rerun.serve(cache, key)
            served, seen = memo.read(cache, key, data)
        else:
            served, seen = memo.serve(cache, key)
        assert served is None and not seen
        using = memo.knowing(cache, key, ids, prefixes, seen=False)
        t2 = cpu()
        insts = instances([Input(*b) for b in bind(app, spec, sets)], app.join, 1)
        t3 = cpu()
        run = RunCache(using)  # its one instance, as the dispatcher looks it up
        instance = run.missed_key(app, spec, call)
        keys = [instance] if instance is not None else run.lookup(app, spec, call, insts).keys
        t4 = cpu()
        flights = list(keys)
        if len(flights) != 1 or not cache.flights.lead(flights[0]):
            cache.flights.join_many(flights, lambda i: lambda entry: None)
        t5 = cpu()
        reserve()  # the entry's memory, made while the function computes (Dispatcher.run)
        t5r = cpu()  # (not timed: off the run's path)
        entries = run.store(keys, [[(Item(product),)]])
        t6 = cpu()
        cache.flights.land_all(flights, entries)
        if memo.keeps:  # (not a plan run as one instance, the matrix's: its entry is kept)
            memo.keep(using, key, {memo.outputs[0]: (Item(product),)}, whole=False)
        t7 = cpu()
        rounds.append([t1 - t0, t2 - t1, t4 - t3, t5 - t4, t6 - t5r, t7 - t6])
    names = ("run key (hash input)", "run lookup", "instance lookup", "join flight",
             "keep output, mark", "land flight")
    return {name: statistics.median(r[i] for r in rounds[3:]) for i, name in enumerate(names)}


def matrix_path(pairs: int) -> dict[str, list[tuple[float, float, float, float, float]]]:
    """Per kind of run (uncached, all missing), per round, the wall seconds from the run's
    start to its instance's hand-over to a sandbox, of the hand-over (the inputs placed and
    the sandbox started), from there to the sandbox's answer, from the answer to the run's
    return, and in all (part 8; the calling thread drives the instance,
    :mod:`dandelion.runtime.here`: ``Driven.start`` and ``here.wait`` wrapped to note when
    they start and end)."""
    from dandelion.runtime import here

    clock = time.perf_counter
    marks: dict[str, float] = {}
    descriptor, wait = here.Driven.__dict__["start"], here.wait
    start = descriptor.__func__

    def started(cls: Any, *args: Any) -> Any:
        marks["hand-over"] = clock()
        driven = start(cls, *args)
        marks["handed"] = clock()
        return driven

    def waited(invocation: Any, *rest: Any) -> Any:
        seconds = wait(invocation, *rest)
        marks["answer"] = clock()
        return seconds

    fresh = [example_matrix(seed) for seed in range(1, 2 * pairs + 12)]
    out: dict[str, list[tuple[float, float, float, float, float]]] = {"uncached": [],
                                                                      "all miss": []}
    with contextlib.ExitStack() as stack:
        stack.callback(setattr, here.Driven, "start", descriptor)
        stack.callback(setattr, here, "wait", wait)
        here.Driven.start = classmethod(started)  # type: ignore[method-assign,assignment]
        here.wait = waited
        plain = stack.enter_context(dd.Runtime(engine="process", workers=2, cache=False))
        memory = stack.enter_context(dd.Runtime(engine="process", workers=2,
                                                cache=MemoryStore()))
        for m in fresh[2 * pairs:]:  # warm both up (then each input is new)
            plain.run(matmul, m)
            memory.run(matmul, m + 1)
        for i in range(pairs):
            pair = [("uncached", plain, fresh[i]), ("all miss", memory, fresh[pairs + i])]
            for name, rt, inputs in pair if i % 2 else pair[::-1]:
                marks.clear()
                t0 = clock()
                rt.run(matmul, inputs)
                t1 = clock()
                if len(marks) == 3:
                    out[name].append((marks["hand-over"] - t0,
                                      marks["handed"] - marks["hand-over"],
                                      marks["answer"] - marks["handed"],
                                      t1 - marks["answer"], t1 - t0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=61,
                    help="rounds of the fan-out (parts 2 and 3): a run of it varies by a "
                         "fifth on a busy machine, its median needs many")
    ap.add_argument("--pairs", type=int, default=1001,
                    help="rounds of part 1's all-miss cost (an uncached run and an all-miss "
                         "one taking turns): the rounds' own ratios spread over +-30 %% on "
                         "this machine, so a cost of a few per cent needs a thousand "
                         "(about 7 s each for parts 1 and 8)")
    ap.add_argument("--fanout", type=int, default=10000)
    ap.add_argument("--only", type=int, choices=(1, 2, 3, 4, 5, 6, 7, 8),
                    help="only this part (1 and the matrix half of 2 go together, as do "
                         "the fan-out half of 2 and 3)")
    args = ap.parse_args()
    print(f"hash: {hashing.ALGORITHM}; python {sys.version.split()[0]}; numpy {np.__version__}"
          f"; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.only in (None, 1):
        matrix_part(args)
    if args.only in (None, 2, 3):
        fanout_part(args)
    if args.only in (None, 4):
        recomputed = early_cutoff()
        print(f"4. early cutoff: instances recomputed per stage {recomputed} "
              f"(target [1, 0, 0]); fused into one chain: {early_cutoff(fuse=True)}")
    if args.only in (None, 5):
        sv = server(args.repeat)
        print("\n5. server service, 16-way sum_doubles, same inputs, inline, 2 workers "
              "(ms per invocation)")
        for name, t in sv.items():
            print(f"   {name:22} {t * 1e3:9.3f} ms")
        print(f"   the fast path pays: {sv['instances only'] / sv['fast path']:.1f}x faster "
              "than per-instance hits alone")
    if args.only in (None, 6):
        parts = cache_parts(args.fanout, args.repeat)
        print(f"\n6. the cache's own work per instance, all miss, one thread, {args.fanout} "
              "instances (CPU µs, the fastest round)")
        for name, t in parts.items():
            print(f"   {name:22} {t * 1e6:9.3f} µs")
        print(f"   {'total':22} {sum(parts.values()) * 1e6:9.3f} µs")
    if args.only in (None, 7):
        warm, cold = matrix_parts(args.repeat), matrix_parts(args.repeat, cold=True)
        print(f"\n7. the cache's own work on an all-miss run of the matrix, one thread (CPU µs, "
              f"the median of {args.repeat} runs on new inputs; cold: the CPU's caches swept "
              "before each)")
        print(f"   {'':22} {'warm':>9}    {'cold':>9}")
        for name, t in warm.items():
            print(f"   {name:22} {t * 1e6:9.1f} µs {cold[name] * 1e6:9.1f} µs")
        print(f"   {'total':22} {sum(warm.values()) * 1e6:9.1f} µs "
              f"{sum(cold.values()) * 1e6:9.1f} µs")
    if args.only in (None, 8):
        path_part(args)


def path_part(args: argparse.Namespace) -> None:
    runs = matrix_path(args.pairs)
    if not all(runs.values()):
        print("\n8. (the runs were not driven from the calling thread: not measured)")
        return
    print(f"\n8. the cache on an all-miss run's path, matrix on process (wall µs, medians of "
          f"{args.pairs} rounds taking turns)")
    print(f"   {'':10} {'to the hand-over':>17} {'hand-over':>10} {'to the answer':>14} "
          f"{'after answer':>13} {'whole run':>10}")
    medians = {name: [statistics.median(r[k] for r in rs) for k in range(5)]
               for name, rs in runs.items()}
    for name, (before, handing, computing, after, whole) in medians.items():
        print(f"   {name:10} {before * 1e6:17.1f} {handing * 1e6:10.1f} "
              f"{computing * 1e6:14.1f} {after * 1e6:13.1f} {whole * 1e6:10.1f}")
    miss, plain = medians["all miss"], medians["uncached"]
    added = sum(miss[:2]) + miss[3] - sum(plain[:2]) - plain[3]
    print(f"   added before the sandbox computes and after it answers: {added * 1e6:+.1f} µs "
          f"= {added / plain[4] * 100:+.1f} % of the uncached run's median; to the answer "
          f"(the entry's memory made while the sandbox computes): "
          f"{(miss[2] - plain[2]) * 1e6:+.1f} µs; whole run "
          f"{(miss[4] / plain[4] - 1) * 100:+.1f} % (target <= 5 %)")


def matrix_part(args: argparse.Namespace) -> None:
    mm, turns, cpu, faults = matrix(args.repeat, args.pairs)
    print("\n1. matrix M·Mᵀ (128x128 int64), process engine, 2 workers")
    for name, t in mm.items():
        print(f"   {name:22} {t * 1e3:9.3f} ms")
    print(f"   warm rerun, memory: {mm['compute'] / mm['warm, memory']:7.1f}x faster "
          "(target >= 100x)")
    print(f"   warm rerun, disk:   {mm['compute'] / mm['warm, disk']:7.1f}x faster "
          "(target >= 20x)")
    print(f"   warm rerun, memory, frozen input: "
          f"{mm['compute'] / mm['warm, memory, frozen']:7.1f}x faster (an input over bytes, "
          "hashed once)")
    cost = mm["all miss, memory"] / mm["compute, new inputs"] - 1
    own = [m / c - 1 for m, c in zip(turns["all miss, memory"], turns["compute, new inputs"])]
    low, high = _interval(turns["all miss, memory"], turns["compute, new inputs"])
    print(f"2. all-miss cost, matrix: {cost * 100:+.1f} % (ratio of the medians of "
          f"{args.pairs} rounds taking turns, 95 % interval [{low * 100:+.1f}, "
          f"{high * 100:+.1f}] %; the rounds' own: median "
          f"{statistics.median(own) * 100:+.1f} %, quartiles [{_quartiles(own, 100, '+.1f')}] %"
          "; target <= 5 %)")
    plain, miss = (statistics.median(cpu[k]) for k in ("compute, new inputs",
                                                        "all miss, memory"))
    print(f"   CPU of this process per run: {plain * 1e3:.3f} ms uncached, {miss * 1e3:.3f} ms "
          f"all missing ({(miss - plain) * 1e6:+.0f} µs = "
          f"{(miss - plain) / mm['compute, new inputs'] * 100:+.1f} % of the uncached run's "
          "median: the cache's work is on the run's path, and CPU time is inflated less "
          "than wall time by other processes)")
    plain_f, miss_f = (statistics.median(faults[k]) for k in ("compute, new inputs",
                                                               "all miss, memory"))
    print(f"   minor page faults of this process per run: {plain_f:g} uncached, {miss_f:g} all "
          "missing (the entry kept is new memory: 32 pages of 4 KiB)")


def fanout_part(args: argparse.Namespace) -> None:
    fo = fanout(args.fanout, args.rounds)
    print(f"\n   {args.fanout}-way no-op fan-out, inline engine, 2 workers, {args.rounds} "
          "rounds taking turns (CPU µs of this process per application: median "
          "[quartiles])")
    for name, ts in fo.items():
        print(f"   {name:22} {statistics.median(ts) * 1e6:9.2f} µs  "
              f"[{_quartiles(ts, 1e6, '.2f')}]")
    base = statistics.median(fo["dispatcher"])
    miss = statistics.median(fo["all miss"])
    cost = [m / off - 1 for m, off in zip(fo["all miss"], fo["dispatcher"])]
    print(f"   all-miss cost: {(miss - base) * 1e6:.2f} µs/app = {(miss / base - 1) * 100:+.1f} % "
          f"of the dispatcher's (the rounds' own: [{_quartiles(cost, 100, '+.1f')}] %; "
          "target <= 20 %)")
    hit = statistics.median(fo["hit"])
    hits = [h / off for h, off in zip(fo["hit"], fo["dispatcher"])]
    print(f"3. hit: {hit * 1e6:.2f} µs/app = {hit / base:.2f}x the dispatcher's time per "
          f"application (the rounds' own: [{_quartiles(hits, 1, '.2f')}]; target <= 2x)")


def _interval(a: list[float], b: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A 95 % bootstrap interval of ``median(a) / median(b) - 1``, resampling the rounds
    (each round's ``a`` and ``b`` together: they ran side by side)."""
    rng = np.random.default_rng(0)
    pairs = np.array([a, b])
    picks = rng.integers(0, pairs.shape[1], size=(resamples, pairs.shape[1]))
    ratios = np.median(pairs[0][picks], axis=1) / np.median(pairs[1][picks], axis=1) - 1
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def _quartiles(values: list[float], scale: float, spec: str) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{q1 * scale:{spec}}–{q3 * scale:{spec}}"

if __name__ == "__main__":
    main()
