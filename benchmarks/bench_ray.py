"""Dandelion on Ray against hand-written Ray tasks for the same graph, and the local backend.

Two graphs of the matrix function (``M @ M.T`` on 128x128 int64 matrices, numpy):

* ``fan-out``: one instance per matrix of an input set of ``--n`` matrices (1,000), all
  outputs fetched;
* ``chain``: ``--length`` (100) applications, each consuming the previous one's matrix.

Dandelion on Ray runs with the default sandboxing engine (``process`` on Linux), with the
``inline`` engine on the node workers (Ray's overhead alone), and as plain Ray tasks
(``isolation="none"``); the sandboxed variant also with ``fuse=False`` (the chain is one
fused unit otherwise: :mod:`dandelion.planner.fuse`).  The result cache is off.

Every variant runs in the same process on the same local Ray instance (``--cpus`` CPUs; or,
with ``--nodes 3``, a ``ray.cluster_utils`` cluster of three one-CPU nodes, as the tests
use), one warm-up then ``--reps`` timed runs; the median wall time is reported with its ratio to
hand-written Ray tasks (the issue's target: at most 1.3x) and to the local backend.

Run::

    python benchmarks/bench_ray.py            # about a minute on 2 cores
    python benchmarks/bench_ray.py --n 200 --length 20 --reps 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any, Callable

import numpy as np
import ray

import dandelion as dd


@dd.compute
def mmt(m: np.ndarray) -> np.ndarray:
    return m @ m.T


@dd.composition
def fan_out(ms: list[np.ndarray]) -> list[np.ndarray]:
    return mmt(dd.each(ms))


def chain_of(length: int) -> Any:
    """A composition applying ``mmt`` ``length`` times in a row."""
    def chain(m: np.ndarray) -> np.ndarray:
        for _ in range(length):
            m = mmt(m)
        return m

    chain.__annotations__ = {"m": np.ndarray, "return": np.ndarray}
    return dd.composition(chain)


@ray.remote
def mmt_task(m: np.ndarray) -> np.ndarray:
    return m @ m.T


def hand_fan_out(ms: list[np.ndarray]) -> list[np.ndarray]:
    return ray.get([mmt_task.remote(m) for m in ms])


def hand_chain(m: np.ndarray, length: int) -> np.ndarray:
    ref = ray.put(m)
    for _ in range(length):
        ref = mmt_task.remote(ref)
    return ray.get(ref)  # type: ignore[no-any-return]


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Median wall time of ``reps`` runs after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def same(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="fan-out width")
    parser.add_argument("--length", type=int, default=100, help="chain length")
    parser.add_argument("--size", type=int, default=128, help="matrix side")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=1,
                        help="more than 1: a ray.cluster_utils cluster of one-CPU nodes")
    args = parser.parse_args()

    cluster = None
    if args.nodes > 1:
        from ray.cluster_utils import Cluster

        node = {"num_cpus": 1, "object_store_memory": 256 * 1024 * 1024}
        cluster = Cluster(initialize_head=True,
                          head_node_args={**node, "include_dashboard": False})
        for _ in range(args.nodes - 1):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        args.cpus = args.nodes
    else:
        ray.init(address="local", num_cpus=args.cpus, object_store_memory=768 * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    ms = [rng.integers(0, 10, (args.size, args.size), dtype=np.int64) for _ in range(args.n)]
    chain = chain_of(args.length)
    rows: dict[str, dict[str, float]] = {"fan-out": {}, "chain": {}}
    reference: dict[str, Any] = {}

    def measure(graph: str, variant: str, fn: Callable[[], Any]) -> None:
        seconds, result = timed(fn, args.reps)
        if graph in reference and not same(result, reference[graph]):
            raise SystemExit(f"{variant} computed a different {graph} result")
        reference.setdefault(graph, result)
        rows[graph][variant] = seconds

    measure("fan-out", "ray tasks (hand-written)", lambda: hand_fan_out(ms))
    measure("chain", "ray tasks (hand-written)", lambda: hand_chain(ms[0], args.length))
    runtimes: list[dict[str, Any]] = [
        {"isolation": "sandbox"}, {"isolation": "sandbox", "fuse": False},
        {"isolation": "sandbox", "engine": "inline"}, {"isolation": "none"}]
    for options in runtimes:
        isolation = options["isolation"]
        with dd.Runtime(backend="ray", cache=False, **options) as rt:
            unfused = ", unfused" if options.get("fuse") is False else ""
            name = f"dandelion ray {isolation} ({rt.backend.engine_name}{unfused})"
            measure("fan-out", name, lambda: rt.run(fan_out, ms))
            measure("chain", name, lambda: rt.run(chain, ms[0]))
    with dd.Runtime(workers=args.cpus, cache=False) as local:
        local_name = f"dandelion local ({local.backend.engine_name})"
        measure("fan-out", local_name, lambda: local.run(fan_out, ms))
        measure("chain", local_name, lambda: local.run(chain, ms[0]))
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()

    print(f"{args.n}-way fan-out and {args.length}-long chain of {args.size}x{args.size} "
          f"int64 M@M.T; {args.cpus} CPUs ({args.nodes} node(s)); median of {args.reps}; "
          f"load average {os.getloadavg()[0]:.1f}")
    report: dict[str, Any] = {}
    for graph, variants in rows.items():
        hand = variants["ray tasks (hand-written)"]
        local_s = variants[local_name]
        print(f"\n{graph}")
        print(f"  {'variant':44s} {'seconds':>8s} {'/ray tasks':>10s} {'/local':>8s}")
        for variant, seconds in variants.items():
            print(f"  {variant:44s} {seconds:8.3f} {seconds / hand:10.2f} "
                  f"{seconds / local_s:8.2f}")
        report[graph] = {v: round(s, 4) for v, s in variants.items()}
    print("\n" + json.dumps(report))


if __name__ == "__main__":
    main()
