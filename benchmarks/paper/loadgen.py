"""The open-loop Poisson load generator of the paper's experiment, run as its own process.

Reads one JSON spec on stdin and writes one JSON result on stdout::

    {"url": "http://127.0.0.1:8080/v1/functions/{name}/invoke", "body": "/tmp/body",
     "headers": {...}, "hot_name": "mmt0", "cold_names": ["mmt1", ...], "hot": 0.95,
     "rate": 100.0, "seconds": 3.0, "timeout": 10.0, "seed": 1}

Open loop: each request is sent at its Poisson arrival time whether or not earlier ones have
finished, and its latency is measured from that *scheduled* arrival (so a late generator
shows up as latency, never hides it).  The generator's own lateness (send time minus arrival
time) is reported separately: if its p99 is more than a few milliseconds, the generator, not
the system, was the bottleneck at that rate.  ``"sequential": N`` instead sends N requests one
at a time (the unloaded latency), each ``"pause"`` seconds (default 0: back to back) after
the previous one's answer: with a pause, each request finds the system at rest, the work a
previous request left behind (a sandbox's teardown, its replacement's fork) done.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from typing import Any

import aiohttp


def quantile(xs: list[float], q: float) -> float | None:
    """The q-quantile of ``xs`` (nearest rank: the ``ceil(q·n)``-th smallest, as
    ``benchmarks/quantiles.py``), None when empty."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[max(0, min(len(xs), math.ceil(q * len(xs) - 1e-9)) - 1)]


def summary(records: list[tuple[bool, int, float]], late: list[float], elapsed: float,
            spec: dict[str, Any]) -> dict[str, Any]:
    """Latency quantiles per kind of request and status counts of one load level."""
    ok = [lat for _, status, lat in records if status == 200]
    hot = [lat for is_hot, status, lat in records if status == 200 and is_hot]
    cold = [lat for is_hot, status, lat in records if status == 200 and not is_hot]
    rejected = [lat for _, status, lat in records if status in (429, 503)]
    timeouts = sum(1 for _, status, _ in records if status == -1)
    failed = sum(1 for _, status, _ in records if status not in (200, 429, 503, -1))
    return {"offered": spec.get("rate"), "seconds": spec.get("seconds", elapsed),
            "hot_fraction": spec.get("hot", 1.0),
            "sent": len(records), "ok": len(ok), "achieved": len(ok) / elapsed,
            "rejected": len(rejected), "timeouts": timeouts, "failed": failed,
            "p50": quantile(ok, 0.5), "p99": quantile(ok, 0.99),
            "hot_p99": quantile(hot, 0.99), "cold_p50": quantile(cold, 0.5),
            "cold_p99": quantile(cold, 0.99), "cold_n": len(cold),
            "rejected_p99": quantile(rejected, 0.99),
            "late_p99": quantile(late, 0.99), "late_max": max(late, default=None)}


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One load level (or one sequential series) as described by ``spec``."""
    with open(spec["body"], "rb") as f:
        body = f.read()
    headers = spec.get("headers", {})
    rng = random.Random(spec.get("seed", 0))
    cold_names = spec.get("cold_names") or [spec["hot_name"]]
    next_cold = 0
    records: list[tuple[bool, int, float]] = []
    late: list[float] = []
    timeout = aiohttp.ClientTimeout(total=spec.get("timeout", 10.0))

    def target() -> tuple[bool, str]:
        nonlocal next_cold
        if rng.random() < spec.get("hot", 1.0):
            return True, spec["hot_name"]
        next_cold += 1
        return False, cold_names[next_cold % len(cold_names)]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:

        async def one(arrival: float, is_hot: bool, name: str) -> None:
            late.append(time.perf_counter() - arrival)
            try:
                async with session.post(spec["url"].format(name=name), data=body,
                                        headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = -1
            records.append((is_hot, status, time.perf_counter() - arrival))

        start = time.perf_counter()
        if "sequential" in spec:
            pause = spec.get("pause", 0.0)
            for i in range(spec["sequential"]):
                if pause and i:
                    await asyncio.sleep(pause)
                await one(time.perf_counter(), *target())
            elapsed = time.perf_counter() - start - pause * (spec["sequential"] - 1)
            return summary(records, late, elapsed, spec)
        tasks = []
        t = 0.0
        while True:
            t += rng.expovariate(spec["rate"])
            if t > spec["seconds"]:
                break
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(start + t, *target())))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return summary(records, late, elapsed, spec)


def main() -> None:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
