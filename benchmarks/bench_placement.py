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
the same rule from where each task ran.  The result cache is off.  The configurations run
in turn, round by round (``--repeat`` rounds, medians); besides wall time each row gives
the CPU seconds that all of the cluster's processes spent on one run, steadier than wall
time on a loaded machine.  With sandboxes, a row ``on, no sandbox`` runs the same placement
with the node workers' ``inline`` engine: its difference to ``placement on`` is the
sandbox's own cost (copying each object into a sandbox), not placement's.

    python benchmarks/bench_placement.py [--objects 30] [--mib 4] [--repeat 3]
                                         [--isolation sandbox|none] [--engine inline]
"""

from __future__ import annotations

import argparse
import functools
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
#: the passes without placement: units spread round-robin
OFF = [flatten, cacheable, fuse]


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


#: clock ticks per second, for the CPU times in /proc
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cluster_cpu() -> float:
    """CPU seconds spent so far by this process and all its descendants: the three nodes'
    raylets, object stores, Ray workers, node workers and their sandboxes (reaped children
    included).  Under a loaded machine this is steadier than wall time."""
    procs: dict[int, tuple[int, int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[int(pid)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += procs.get(pid, (0, 0))[1]
        todo += children.get(pid, [])
    return total / _TICK


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """One call of ``fn``: its wall seconds, the cluster's CPU seconds and its result."""
    c0, t0 = cluster_cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cluster_cpu() - c0, out


def moved_by(rt: dd.Runtime, target: Any, args: tuple[Any, ...]) -> tuple[Any, int]:
    """One observed run: its result and the bytes its ``moved`` events report."""
    moved: list[int] = []

    def observe(e: Event) -> None:
        if e.kind is EventKind.MOVED and e.composition == target.name:
            moved.append(e.bytes_in or 0)

    stop = rt.subscribe(observe)
    try:
        return rt.run(target, *args), sum(moved)
    finally:
        stop()


def ray_tasks(ray: Any, roots: dict[str, str], near: dict[str, str], keys: list[list[str]]
              ) -> tuple[Callable[[], Any], Callable[[], int]]:
    """The same graph as hand-written Ray tasks with default scheduling: a function that
    runs it, and one that says the bytes its last run moved, by the same rule (each task
    reports its node)."""
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

    def moved() -> int:
        out = 0
        size = os.path.getsize(path(keys[0][0]))
        for key, (_, read_node), (_, reduce_node) in state["pairs"]:
            where = ray.get(read_node)
            out += size if where != near[key[1:].split("/")[0]] else 0  # remote storage
            out += size if ray.get(reduce_node) != where else 0
        return out

    return run, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=30)
    parser.add_argument("--mib", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--isolation", choices=("sandbox", "none"), default="sandbox",
                        help="sandbox: functions in the process engine on node workers; "
                             "none: plain Ray tasks, as the hand-written baseline")
    parser.add_argument("--engine", default=None,
                        help="the node workers' engine with --isolation sandbox (default: "
                             "process; inline: no sandbox, to see what the sandbox costs)")
    args = parser.parse_args()
    engine = {"engine": args.engine} if args.engine else {}

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
        left, right = keys[0::2], keys[1::2]
        print(f"{args.objects} objects of {args.mib} MiB over {len(NODES)} nodes "
              f"(2 CPUs each), isolation={args.isolation}"
              f"{', engine=' + args.engine if args.engine else ''}, median of {args.repeat}, "
              f"load average {os.getloadavg()[0]:.1f}")
        configs = [("placement on", None, engine), ("placement off", OFF, engine)]
        if args.isolation == "sandbox" and not args.engine:  # the sandbox's own cost
            configs.append(("on, no sandbox", None, {"engine": "inline"}))
        runtimes = {label: dd.Runtime(backend="ray", io=io, topology=topology, passes=passes,
                                      cache=False, isolation=args.isolation, **options)
                    for label, passes, options in configs}
        try:
            for name, target, inputs, sides in [("scan", scan, (keys,), [keys]),
                                                ("join", join, (left, right),
                                                 [left, right])]:
                run_tasks, tasks_moved = ray_tasks(ray, roots, near, sides)
                runs: dict[str, Callable[[], Any]] = {
                    label: functools.partial(rt.run, target, *inputs)
                    for label, rt in runtimes.items()}
                runs["ray tasks"] = run_tasks
                for run in runs.values():
                    run()  # warm-up
                times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
                outs = set()
                for _ in range(args.repeat):  # configurations alternate, round by round
                    for label, run in runs.items():
                        seconds, cpu, out = measure(run)
                        times[label].append((seconds, cpu))
                        outs.add(out)
                moved = {}
                for label, rt in runtimes.items():
                    out, moved[label] = moved_by(rt, target, inputs)
                    outs.add(out)
                moved["ray tasks"] = tasks_moved()
                assert len(outs) == 1, outs  # the same result everywhere
                on_wall = statistics.median(t for t, _ in times["placement on"])
                on_moved = moved["placement on"]
                print(f"\n{name} ({len(keys)} objects), load average "
                      f"{os.getloadavg()[0]:.1f}")
                print(f"{'':<15} {'wall s':>7} {'cpu s':>7} {'bytes moved':>12} "
                      f"{'moved / on':>11} {'time / on':>10}")
                for label in runs:
                    wall = statistics.median(t for t, _ in times[label])
                    cpu = statistics.median(c for _, c in times[label])
                    m = moved[label]
                    ratio = m / on_moved if on_moved else float("inf") if m else 1.0
                    print(f"{label:<15} {wall:>7.3f} {cpu:>7.2f} {m:>12} {ratio:>11.0f} "
                          f"{wall / on_wall:>10.2f}")
        finally:
            for rt in runtimes.values():
                rt.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
