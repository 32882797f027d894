"""What losing a Ray node mid-run costs: the same fan-out with and without a node lost.

A ``ray.cluster_utils.Cluster`` of a head and two worker nodes (1 CPU each) runs a
``--n``-instance (240) fan-out of a 50 ms function and a sum, once undisturbed and once with
the whole process tree of one worker node (its raylet, Ray workers, the Dandelion node
worker and its zygotes) killed ``--kill-after`` seconds (1.0) into the run, as a machine is
lost.  It prints both wall times, whether the result is exact, and the driver's recovery
as logged on ``dandelion.ray`` (times from the start of the run).

Run::

    python benchmarks/bench_ray_recovery.py                      # sandbox, retries=3
    python benchmarks/bench_ray_recovery.py --retries 1 --isolation none
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

import ray
from ray.cluster_utils import Cluster

import dandelion as dd


@dd.compute
def doubled(x: int) -> int:
    time.sleep(0.05)
    return 2 * x


@dd.compute
def total(xs: list[int]) -> int:
    return sum(xs)


@dd.composition
def fan_out(xs: list[int]) -> int:
    return total(doubled(dd.each(xs)))


def kill_node(cluster: Any, node: Any) -> int:
    """Kill a node's raylet and every process under it, then remove it; the count."""
    import psutil  # Ray ships it

    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    tree = [raylet, *raylet.children(recursive=True)]
    for process in tree:
        try:
            process.send_signal(signal.SIGSTOP)
        except psutil.NoSuchProcess:
            pass
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    cluster.remove_node(node, allow_graceful=False)
    return len(tree)


class _Timeline(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.start = time.monotonic()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"  +{time.monotonic() - self.start:6.2f} s  {record.getMessage()[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isolation", default="sandbox", choices=["sandbox", "none"])
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--n", type=int, default=240, help="fan-out width")
    parser.add_argument("--kill-after", type=float, default=1.0, help="seconds into the run")
    args = parser.parse_args()

    config = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 200,
              "health_check_timeout_ms": 200, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 80 << 20, "include_dashboard": False,
        "_system_config": config})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=80 << 20) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    xs = list(range(args.n))
    timeline = _Timeline()
    log = logging.getLogger("dandelion.ray")
    log.setLevel(logging.INFO)
    log.addHandler(timeline)
    try:
        with dd.Runtime(backend="ray", isolation=args.isolation, retries=args.retries) as rt:
            rt.run(fan_out, xs)  # warm-up: a worker and its zygotes on every node
            start = time.monotonic()
            assert rt.run(fan_out, xs) == 2 * sum(xs)
            print(f"{args.isolation}, retries={args.retries}, {args.n} instances")
            print(f"undisturbed run:    {time.monotonic() - start:6.2f} s")
            killed: list[str] = []

            def kill() -> None:
                count = kill_node(cluster, workers[1])
                killed.append(f"  +{time.monotonic() - timeline.start:6.2f} s  node killed "
                              f"({count} processes)")

            timer = threading.Timer(args.kill_after, kill)
            timeline.start = start = time.monotonic()
            timer.start()
            try:
                result = rt.run(fan_out, xs)
                outcome = f"exact result: {result == 2 * sum(xs)}"
            except dd.DandelionError as e:
                outcome = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            took = time.monotonic() - start
            timer.join()
            print(f"run with node lost: {took:6.2f} s, {outcome}")
            for line in sorted(killed + timeline.lines):
                print(line)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
