"""Dispatcher overhead per application on the inline engine (issue 2).

Graphs of no-op functions: a 1,000-long chain and a 10,000-way fan-out.  Each is timed
as plain Python calls, on Dandelion's local backend with the inline engine, and (if Ray is
installed) as Ray tasks, in the same run; overhead per application is reported as the
median over repetitions, and ratios against plain Python and Ray.

    python benchmarks/bench_dispatcher.py [--repeat 7] [--no-ray]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import dandelion as dd


@dd.compute
def noop(x: int) -> int:
    return x


def chain_composition(n: int) -> dd.CompositionFunction:
    def chain(x: int) -> int:
        for _ in range(n):
            x = noop(x)
        return x

    chain.__annotations__ = {"x": int, "return": int}
    return dd.composition(chain, name=f"chain{n}")


@dd.composition
def fan_out(xs: list[int]) -> list[int]:
    ys = noop(dd.each(xs))
    return ys


def timeit(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--chain", type=int, default=1000)
    ap.add_argument("--fanout", type=int, default=10000)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    chain = chain_composition(args.chain)
    xs = list(range(args.fanout))
    results: dict[str, dict[str, float]] = {"chain": {}, "fanout": {}}
    raw = noop.fn

    def py_chain() -> None:
        x = 0
        for _ in range(args.chain):
            x = raw(x)

    results["chain"]["python"] = timeit(py_chain, args.repeat)
    results["fanout"]["python"] = timeit(lambda: [raw(x) for x in xs], args.repeat)
    with dd.Runtime(engine="inline", cache=False) as rt:  # the dispatcher, not the cache
        assert rt.run(chain, 0) == 0 and rt.run(fan_out, xs[:10]) == xs[:10]
        results["chain"]["dandelion"] = timeit(lambda: rt.run(chain, 0), args.repeat)
        results["fanout"]["dandelion"] = timeit(lambda: rt.run(fan_out, xs), args.repeat)
    if not args.no_ray:
        try:
            import ray
        except ImportError:
            ray = None
        if ray is not None:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            task = ray.remote(raw)

            def ray_chain() -> None:
                ref = 0
                for _ in range(args.chain):
                    ref = task.remote(ref)
                ray.get(ref)

            ray_chain()
            results["chain"]["ray"] = timeit(ray_chain, max(1, args.repeat // 3))
            results["fanout"]["ray"] = timeit(
                lambda: ray.get([task.remote(x) for x in xs]), max(1, args.repeat // 3))
            ray.shutdown()
    n = {"chain": args.chain, "fanout": args.fanout}
    print(f"{'graph':8} {'runner':10} {'total s':>9} {'µs/app':>9}")
    for graph, row in results.items():
        for runner, t in row.items():
            print(f"{graph:8} {runner:10} {t:9.4f} {t / n[graph] * 1e6:9.2f}")
    for graph, row in results.items():
        d = row["dandelion"]
        overhead = (d - row["python"]) / n[graph] * 1e6
        line = (f"{graph}: dispatcher overhead {overhead:.1f} µs/application (target <= 50); "
                f"dandelion/python = {d / row['python']:.1f}x")
        if "ray" in row:
            line += f"; dandelion/ray = {d / row['ray']:.3f}x"
        print(line)


if __name__ == "__main__":
    main()
