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
``"records": true`` adds each request's record (its p99's confidence interval is computed
from them).

The generator shares the machine with the systems it measures, so it does as little as it
can per request: HTTP/1.1 on keep-alive connections with each request's bytes prepared once
(:class:`Connections`), about half the CPU of aiohttp's client.  It reports its own CPU time
per request (``cpu_per_request``, from its first request to its last answer), so the CPU it
took from the systems under test shows, and the share of its one CPU it used meanwhile
(``generator_cpu``): it runs on one thread, so near 100 % it, not the system, would be the
bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import sys
import time
from typing import Any


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


#: Each connection's receive buffer: room for a whole answer in the receive window (as
#: ``bench_http.RECEIVE_BUFFER``).  With the system's default (128 KiB, a window of about
#: 64 KiB), a 131 KB answer that reached the generator late to read it waited 25-35 ms for
#: the rest of its bytes, for every system alike (issue 19).
RECEIVE_BUFFER = 4 << 20


class Connections:
    """HTTP/1.1 keep-alive connections to one server, with requests prepared as bytes: the
    least the generator can do per request (aiohttp's client took 0.7-0.9 ms of CPU per
    request of this experiment, its 131 KB body included; at the rates past a system's
    saturation that was a quarter of the 2 vCPUs the systems under test share)."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes) -> None:
        rest = url.removeprefix("http://")
        self.host, _, self.path = rest.partition("/")
        self.path = "/" + self.path
        host, _, port = self.host.partition(":")
        self.address = (host, int(port or 80))
        fields = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = (f"Host: {self.host}\r\n{fields}Content-Length: {len(body)}\r\n"
                     f"\r\n").encode()
        self.body = body
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.requests: dict[str, bytes] = {}

    def request(self, name: str) -> bytes:
        """The request's line and head for function ``name``."""
        line = self.requests.get(name)
        if line is None:
            line = self.requests[name] = \
                f"POST {self.path.format(name=name)} HTTP/1.1\r\n".encode() + self.head
        return line

    async def post(self, name: str) -> int:
        """Send one request to ``name`` on an idle connection (or a new one); its status
        once the whole answer has arrived."""
        if self.idle:
            conn = self.idle.pop()
        else:
            conn = await asyncio.open_connection(*self.address, limit=1 << 20)
            conn[1].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                        RECEIVE_BUFFER)
        reader, writer = conn
        try:
            writer.write(self.request(name))
            writer.write(self.body)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip().lower()
            if fields.get("transfer-encoding") == "chunked":
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    await reader.readexactly(size + 2)
                await reader.readuntil(b"\r\n")
            else:
                await reader.readexactly(int(fields.get("content-length", 0)))
        except BaseException:
            writer.close()
            raise
        if fields.get("connection") == "close":
            writer.close()
        else:
            self.idle.append(conn)
        return status

    def close(self) -> None:
        """Close the idle connections."""
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One load level (or one sequential series) as described by ``spec``."""
    with open(spec["body"], "rb") as f:
        body = f.read()
    headers = spec.get("headers", {})
    rng = random.Random(spec.get("seed", 0))
    cold_names = spec.get("cold_names") or [spec["hot_name"]]
    next_cold = spec.get("cold_start", 0)  # (a series sent in rounds goes on from the last)
    records: list[tuple[bool, int, float]] = []
    late: list[float] = []
    timeout = spec.get("timeout", 10.0)

    def target() -> tuple[bool, str]:
        nonlocal next_cold
        if rng.random() < spec.get("hot", 1.0):
            return True, spec["hot_name"]
        next_cold += 1
        return False, cold_names[next_cold % len(cold_names)]

    connections = Connections(spec["url"], headers, body)

    async def one(arrival: float, is_hot: bool, name: str) -> None:
        late.append(time.perf_counter() - arrival)
        try:
            status = await asyncio.wait_for(connections.post(name), timeout)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError):
            status = -1
        records.append((is_hot, status, time.perf_counter() - arrival))

    try:
        start, cpu = time.perf_counter(), time.process_time()
        if "sequential" in spec:
            pause = spec.get("pause", 0.0)
            for i in range(spec["sequential"]):
                if pause and i:
                    await asyncio.sleep(pause)
                await one(time.perf_counter(), *target())
            elapsed = time.perf_counter() - start - pause * (spec["sequential"] - 1)
        else:
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
    finally:
        connections.close()
    # its CPU from the first request to the last answer (not its interpreter's start)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    result = summary(records, late, elapsed, spec)
    result["cpu_per_request"] = cpu / max(1, len(records))
    result["generator_cpu"] = cpu / wall  # the share of its one CPU
    if spec.get("records"):  # for what needs every latency (a confidence interval)
        result.update(records=records, late=late, elapsed=elapsed)
    return result


def main() -> None:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
