"""How long each system of the paper's experiment keeps working after it answers a request.

    python benchmarks/paper/rest.py [--requests 30] [--cold] [--fresh]

One request at a time (100 ms apart), to a Dandelion ``process`` worker and the aiohttp
server (``--fresh``: and the fresh interpreter), started as ``run.py`` starts them.  After
each answer it samples the CPU time of the system's whole process tree (``/proc/PID/
schedstat`` of the server and all its descendants, every millisecond for 80 ms) and takes
the last millisecond in which the tree used more than 0.1 ms of CPU: the work the request
left behind (for a forking worker, its sandbox's teardown and the replacement's fork and
warm-up).  ``run.py``'s unloaded series wait longer than that between an answer and the next
request (``--rest``), so that each request finds the system at rest.  ``--cold``: the
requests go to the evicted copies of the function (Dandelion only).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_http  # noqa: E402
import run  # noqa: E402


def tree(root: int) -> list[int]:
    """``root`` and all its descendants now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:  # gone meanwhile
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_ns(pids: list[int]) -> int:
    """Nanoseconds these processes ran so far (those that ended are no longer counted)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def busy_after(system: run.System, requests: int, cold: bool) -> list[float]:
    """Seconds after each answer until the system's process tree was last busy."""
    host, port = system.url.removeprefix("http://").split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = Path(system.body).read_bytes()
    path = "/" + system.url.split("/", 3)[3]
    root = system.procs[0].pid
    out = []
    for i in range(requests):
        time.sleep(0.1)
        conn.request("POST", path.format(name=run.COLD[i % len(run.COLD)] if cold else "mmt0"),
                     body=body, headers=system.headers)
        conn.getresponse().read()
        answered = time.perf_counter()
        last = 0.0
        before = cpu_ns(tree(root))
        while time.perf_counter() - answered < 0.08:
            time.sleep(0.001)
            now = cpu_ns(tree(root))
            if now - before > 100_000:
                last = time.perf_counter() - answered
            before = now
        out.append(last)
    conn.close()
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--cold", action="store_true", help="evicted copies (Dandelion only)")
    parser.add_argument("--fresh", action="store_true", help="also the fresh interpreter")
    args = parser.parse_args()
    payload = bench_http.matrix()
    with tempfile.TemporaryDirectory() as tmp:
        bodies = {"npy": f"{tmp}/body.npy", "msgpack": f"{tmp}/body.msgpack"}
        Path(bodies["npy"]).write_bytes(payload)
        Path(bodies["msgpack"]).write_bytes(
            msgpack.packb({"inputs": {"m": [payload]}}, use_bin_type=True))
        systems = [run.start_dandelion("process", os.cpu_count() or 1, f"{tmp}/process",
                                       bodies, (1.0,))]
        try:
            if not args.cold:
                systems.append(run.start_baseline("aiohttp", "aiohttp in process", bodies,
                                                  (1.0,)))
                if args.fresh:
                    systems.append(run.start_baseline("fresh", "fresh interpreter", bodies,
                                                      (1.0,)))
            for s in systems:
                xs = busy_after(s, args.requests, args.cold)
                print(f"{s.label:20s} last busy after the answer: median "
                      f"{statistics.median(xs) * 1e3:5.1f} ms, p90 "
                      f"{xs[int(0.9 * len(xs))] * 1e3:5.1f} ms, max {xs[-1] * 1e3:5.1f} ms "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            for s in systems:
                s.stop()


if __name__ == "__main__":
    main()
