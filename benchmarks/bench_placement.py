"""Placement on Ray (issue 17): bytes moved between nodes and wall time, with placement on
(the ``near_storage`` and ``locality`` passes and a topology), off (the same runtime, passes
without them: units spread round-robin) and hand-written Ray tasks with Ray's default
scheduling, in one run on a three-node ``ray.cluster_utils`` cluster on this machine.

Each node has a storage root of its own, holding ``--objects / 3`` objects of ``--mib`` MiB;
the topology says which node each root is near, and the object keys name their store
(``@s1/obj4``).  Compositions:

1. scan-and-aggregate: ``storage_read`` each object, reduce each to a few bytes (a count),
   combine the counts (target: >= 10x fewer bytes moved than off and than Ray tasks; wall
   time not worse);
2. join-shaped: two such scans over halves of the objects, their reductions combined by
   one function taking both.

Bytes moved are Dandelion's own accounting (``moved`` events: objects read on another node
than the one that made them, and reads of storage near another node); for the Ray tasks
the same rule from where each task ran.  The result cache is off.

    python benchmarks/bench_placement.py [--objects 30] [--mib 4] [--repeat 3]
                                         [--isolation sandbox|none]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any, Callable

import dandelion as dd
from dandelion.io import storage_read
from dandelion.planner import cacheable, flatten, fuse
from dandelion.runtime.events import Event, EventKind

NODES = ("n0", "n1", "n2")


@dd.compute
def count(obj: bytes) -> int:
    return obj.count(b"\x01")


@dd.compute
def combine(ns: list[int]) -> int:
    return sum(ns)


@dd.compute
def combine2(left: list[int], right: list[int]) -> int:
    return sum(left) - sum(right)


@dd.composition
def scan(keys: list[str]) -> int:
    return combine(count(dd.each(storage_read(dd.each(keys)))))


@dd.composition
def join(left: list[str], right: list[str]) -> int:
    return combine2(count(dd.each(storage_read(dd.each(left)))),
                    count(dd.each(storage_read(dd.each(right)))))


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def dandelion_run(rt: dd.Runtime, target: Any, args: tuple[Any, ...], repeat: int
                  ) -> tuple[float, Any, int]:
    moved: list[int] = []

    def observe(e: Event) -> None:
        if e.kind is EventKind.MOVED and e.composition == target.name:
            moved.append(e.bytes_in or 0)

    seconds, out = timed(lambda: rt.run(target, *args), repeat)
    stop = rt.subscribe(observe)
    try:
        assert rt.run(target, *args) == out
    finally:
        stop()
    return seconds, out, sum(moved)


def ray_tasks(ray: Any, roots: dict[str, str], near: dict[str, str], keys: list[list[str]],
              repeat: int) -> tuple[float, Any, int]:
    """The same graph as hand-written Ray tasks with default scheduling; bytes moved by the
    same rule (each task reports its node)."""
    @ray.remote(num_returns=2)
    def read(path: str) -> tuple[bytes, str]:
        with open(path, "rb") as f:
            return f.read(), ray.get_runtime_context().get_node_id()

    @ray.remote(num_returns=2)
    def reduce(obj: bytes) -> tuple[int, str]:
        return obj.count(b"\x01"), ray.get_runtime_context().get_node_id()

    @ray.remote
    def total(*ns: int) -> int:
        return sum(ns)

    def path(key: str) -> str:
        store, name = key[1:].split("/", 1)
        return os.path.join(roots[store], name)

    state: dict[str, Any] = {}

    def run() -> Any:
        sides = []
        state["pairs"] = []
        for side in keys:
            reads = [read.remote(path(k)) for k in side]
            counts = [reduce.remote(data) for data, _ in reads]
            state["pairs"] += [(k, r, c) for k, r, c in zip(side, reads, counts)]
            sides.append(total.remote(*(c for c, _ in counts)))
        values = ray.get(sides)
        return values[0] if len(values) == 1 else values[0] - values[1]

    seconds, out = timed(run, repeat)
    moved = 0
    size = os.path.getsize(path(keys[0][0]))
    for key, (_, read_node), (_, reduce_node) in state["pairs"]:
        where = ray.get(read_node)
        moved += size if where != near[key[1:].split("/")[0]] else 0  # remote storage
        moved += size if ray.get(reduce_node) != where else 0
    return seconds, out, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=30)
    parser.add_argument("--mib", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--isolation", choices=("sandbox", "none"), default="sandbox",
                        help="sandbox: functions in the process engine on node workers; "
                             "none: plain Ray tasks, as the hand-written baseline")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 2, "object_store_memory": 300 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={
        **node, "include_dashboard": False, "labels": {"dandelion-node": "n0"}})
    for i in (1, 2):
        cluster.add_node(**node, labels={"dandelion-node": f"n{i}"})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    base = tempfile.mkdtemp(prefix="bench-placement-")
    try:
        roots = {f"s{n}": os.path.join(base, n) for n in NODES}
        ids = {n["Labels"]["dandelion-node"]: n["NodeID"] for n in ray.nodes()}
        near = {f"s{n}": ids[n] for n in NODES}
        keys = []
        payload = bytes(range(256)) * (args.mib * 4096)
        for i in range(args.objects):
            store = f"s{NODES[i * len(NODES) // args.objects]}"
            os.makedirs(roots[store], exist_ok=True)
            with open(os.path.join(roots[store], f"obj{i}"), "wb") as f:
                f.write(payload)
            keys.append(f"@{store}/obj{i}")
        topology = {"nodes": {n: {"roots": roots[f"s{n}"]} for n in NODES}}
        io = {"stores": roots}
        half = len(keys) // 2
        left, right = keys[0::2], keys[1::2]
        print(f"{args.objects} objects of {args.mib} MiB over {len(NODES)} nodes "
              f"(2 CPUs each), isolation={args.isolation}, median of {args.repeat}")
        for name, target, inputs, sides in [("scan", scan, (keys,), [keys]),
                                            ("join", join, (left, right), [left, right])]:
            rows = []
            for label, passes in [("placement on", None),
                                  ("placement off", [flatten, cacheable, fuse])]:
                with dd.Runtime(backend="ray", io=io, topology=topology, passes=passes,
                                cache=False, isolation=args.isolation) as rt:
                    rows.append((label, *dandelion_run(rt, target, inputs, args.repeat)))
            rows.append(("ray tasks", *ray_tasks(ray, roots, near, sides, args.repeat)))
            assert len({r[2] for r in rows}) == 1, rows  # the same result everywhere
            on_moved = rows[0][3]
            print(f"\n{name} ({half * 2 if name == 'join' else len(keys)} objects)")
            print(f"{'':<14} {'wall s':>8} {'bytes moved':>12} {'moved / on':>11} "
                  f"{'time / on':>10}")
            for label, seconds, _, moved in rows:
                ratio = moved / on_moved if on_moved else float("inf") if moved else 1.0
                print(f"{label:<14} {seconds:>8.3f} {moved:>12} {ratio:>11.0f} "
                      f"{seconds / rows[0][1]:>10.2f}")
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
