"""Soak: a worker under steady mixed load for minutes, to see that nothing grows or drifts.

A worker (``dandelion serve``, its own process, the default ``process`` engine) gets a
mix of requests: hot functions (always in memory), cold ones (one of many copies, more
than ``--hot-functions`` keeps, so their code is loaded from disk), a fan-out
composition, the same composition as a job (submitted, then waited for), and 1% that
fail on purpose (the function raises).  First the mix's saturation rate is measured
closed-loop (as many requests in flight as the worker has engines, times four); then it
is offered open-loop at ``--load`` (80%) of that rate, Poisson arrivals, for
``--duration`` seconds (default 10 minutes), latency measured from arrival to answer.

Every answer is checked: an *error* is any answer that is not the right value (or, for
the failing 1%, not the function's own error) — the target is 0.  Every 5 s the worker's
memory is sampled (RSS and PSS from ``/proc/PID/smaps_rollup``): the worker process, its
zygote(s) (its children) and their warm sandboxes (the zygotes' children).  Reported: the
rates, errors, p50/p99 of the first and the last minute and their ratio (the drift), and
memory at start and end; a plot of memory and p99 over time is written as a PNG.

    python benchmarks/bench_soak.py [--duration 600] [--workers 2] [--load 0.8]
                                    [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack

import dandelion as dd

COLD = 48  # distinct cold functions, far more than --hot-functions keeps
HOT_KEPT = 8
FANOUT = list(range(1, 9))
COLD_SOURCE = "import dandelion as dd\n" + "".join(
    f"@dd.compute\ndef cold{i}(x: int) -> int:\n    return x + {i}\n" for i in range(COLD))
FAILING_SOURCE = '''
import dandelion as dd

@dd.compute
def flaky(x: int) -> int:
    if x < 0:
        raise ValueError("asked to fail")
    return x
'''


@dd.compute
def square(x: int) -> int:
    return x * x


@dd.compute
def add(xs: list[int]) -> int:
    return sum(xs)


@dd.composition
def sum_squares(xs: list[int]) -> int:
    return add(square(dd.each(xs)))


# -- the worker and its memory --------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(workers: int, state: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dandelion", "serve", "--port", str(port), "--workers",
         str(workers), "--hot-functions", str(HOT_KEPT), "--result-cache", "0",
         "--state-dir", state, "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the worker did not start") from None
            time.sleep(0.1)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def memory(pid: int) -> tuple[int, int]:
    """RSS and PSS of ``pid`` in bytes (0, 0 when it is gone)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def sample(worker: int, start: float) -> dict[str, float]:
    """The memory of the worker, its zygotes and their warm sandboxes, now."""
    zygotes = children(worker)
    sandboxes = [s for z in zygotes for s in children(z)]
    w = memory(worker)
    z = [memory(p) for p in zygotes]
    s = [memory(p) for p in sandboxes]
    return {"t": time.monotonic() - start, "worker_rss": w[0], "worker_pss": w[1],
            "zygote_rss": sum(r for r, _ in z), "zygote_pss": sum(p for _, p in z),
            "zygotes": len(z), "sandbox_pss": sum(p for _, p in s), "sandboxes": len(s)}


class Sampler(threading.Thread):
    def __init__(self, worker: int, start: float, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.worker, self.start_time, self.every = worker, start, every
        self.samples: list[dict[str, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append(sample(self.worker, self.start_time))
            self.stopped.wait(self.every)


# -- the mix --------------------------------------------------------------------------------

HEADERS = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}


def register(url: str) -> None:
    """Register the mix's functions, and run each once (the engine's first run of a
    function stores its code; the soak is about what follows)."""
    with dd.Client(url) as client:
        client.register(sum_squares)
        client.register_source(COLD_SOURCE)
        client.register_source(FAILING_SOURCE)
        for i in range(COLD):
            assert client.invoke(client.function(f"cold{i}"), 1) == 1 + i
        assert client.invoke(sum_squares, FANOUT) == sum(v * v for v in FANOUT)


def pick(rng: random.Random) -> tuple[str, str, dict[str, Any], Any]:
    """A request of the mix: its kind, path, inputs and expected value."""
    r = rng.random()
    if r < 0.01:
        return "failing", "/v1/functions/flaky/invoke", {"x": [-1]}, "asked to fail"
    x = rng.randrange(1000)
    if r < 0.65:
        return "hot", "/v1/functions/square/invoke", {"x": [x]}, x * x
    if r < 0.80:
        i = rng.randrange(COLD)
        return "cold", f"/v1/functions/cold{i}/invoke", {"x": [x]}, x + i
    expected = sum(v * v for v in FANOUT)
    if r < 0.90:
        return "composition", "/v1/compositions/sum_squares/invoke", {"xs": FANOUT}, expected
    return "job", "/v1/compositions/sum_squares/jobs", {"xs": FANOUT}, expected


async def decoded(resp: Any) -> Any:
    data = await resp.read()
    if resp.content_type == "application/msgpack":
        return msgpack.unpackb(data, raw=False)
    return json.loads(data)


async def one(session: Any, url: str, request: tuple[str, str, dict[str, Any], Any]
              ) -> str | None:
    """Send one request of the mix; ``None`` if the answer is right, else what is wrong."""
    kind, path, inputs, expected = request
    body = msgpack.packb({"inputs": inputs}, use_bin_type=True)
    async with session.post(url + path, data=body, headers=HEADERS) as resp:
        doc = await decoded(resp)
        status = resp.status
    if kind == "job":
        if status != 202:
            return f"job submit: {status} {doc}"
        async with session.get(f"{url}/v1/jobs/{doc['id']}?wait=60", headers=HEADERS) as resp:
            doc = await decoded(resp)
            status = resp.status
        if doc.get("status") != "succeeded":
            return f"job: {status} {doc}"
    if kind == "failing":
        message = doc.get("error", {}).get("message", "")
        return None if status == 422 and expected in message else f"failing: {status} {doc}"
    if status != 200:
        return f"{kind}: {status} {doc}"
    value = next(iter(doc["outputs"].values()))[0]["value"]
    return None if value == expected else f"{kind}: {value} != {expected}"


async def saturation(url: str, seconds: float, in_flight: int) -> float:
    """Answers per second of the mix with ``in_flight`` requests always outstanding."""
    import aiohttp

    rng = random.Random(1)
    done = 0
    stop = time.perf_counter() + seconds

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await one(session, url, pick(rng))
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(in_flight)))
        return done / (time.perf_counter() - start)


async def soak(url: str, rate: float, seconds: float) -> list[tuple[float, float, str, str]]:
    """Offer the mix at ``rate`` for ``seconds``: (arrival, latency, kind, problem) each."""
    import aiohttp

    rng = random.Random(2)
    results: list[tuple[float, float, str, str]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def timed(arrival: float, request: tuple[str, str, dict[str, Any], Any]
                        ) -> None:
            try:
                problem = await asyncio.wait_for(one(session, url, request), 120)
            except Exception as e:  # a dropped connection, a timeout: an error too
                problem = f"{request[0]}: {type(e).__name__}: {e}"
            results.append((arrival - start, time.perf_counter() - arrival, request[0],
                             problem or ""))

        tasks = []
        start = time.perf_counter()
        t = 0.0
        while True:
            t += rng.expovariate(rate)
            if t > seconds:
                break
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(timed(start + t, pick(rng))))
        await asyncio.gather(*tasks)
    return results


# -- the report -----------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def window(results: list[tuple[float, float, str, str]], lo: float, hi: float
           ) -> dict[str, float]:
    lat = [lat for t, lat, _, problem in results if lo <= t < hi and not problem]
    return {"requests": len(lat), "p50": quantile(lat, 0.5), "p99": quantile(lat, 0.99)}


def plot(samples: list[dict[str, float]], results: list[tuple[float, float, str, str]],
         offset: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, lat) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    t = [s["t"] - offset for s in samples]
    mib = 1 << 20
    for key, label in (("worker_rss", "worker RSS"), ("worker_pss", "worker PSS"),
                       ("zygote_rss", "zygote RSS"), ("zygote_pss", "zygote PSS"),
                       ("sandbox_pss", "warm sandboxes PSS (sum)")):
        mem.plot(t, [s[key] / mib for s in samples], label=label)
    mem.set_ylabel("MiB")
    mem.set_ylim(bottom=0)
    mem.legend(fontsize=8, loc="center right")
    mem.axvline(0, color="grey", lw=0.5)
    mem.set_title(title, fontsize=9)
    end = max((r[0] for r in results), default=0.0)
    edges = [i * 10.0 for i in range(int(end // 10) + 1)]
    p99 = [window(results, e, e + 10)["p99"] * 1e3 for e in edges]
    p50 = [window(results, e, e + 10)["p50"] * 1e3 for e in edges]
    lat.plot([e + 5 for e in edges], p99, label="p99 (10 s windows)")
    lat.plot([e + 5 for e in edges], p50, label="p50")
    lat.set_ylabel("latency, ms")
    lat.set_xlabel("seconds into the soak (negative: calibration and warm-up)")
    lat.set_ylim(bottom=0)
    lat.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds of load at the soak rate (default 600)")
    parser.add_argument("--workers", type=int, default=2, help="the worker's engines")
    parser.add_argument("--load", type=float, default=0.8,
                        help="the soak rate, as a fraction of the saturation rate")
    parser.add_argument("--calibrate", type=float, default=20.0,
                        help="seconds to measure the saturation rate")
    parser.add_argument("--out", default="benchmarks/results", help="where to write results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="dandelion-soak-") as state:
        proc, url = start_worker(args.workers, state)
        clock = time.monotonic()
        sampler = Sampler(proc.pid, clock)
        sampler.start()
        try:
            register(url)
            asyncio.run(saturation(url, 3.0, 4))  # warm up: zygote, cold paths
            sat = asyncio.run(saturation(url, args.calibrate, 4 * args.workers))
            rate = args.load * sat
            print(f"saturation {sat:.1f}/s; soaking at {rate:.1f}/s ({args.load:.0%}) for "
                  f"{args.duration:g} s", flush=True)
            offset = time.monotonic() - clock
            results = asyncio.run(soak(url, rate, args.duration))
            time.sleep(5)  # one more memory sample after the load
        finally:
            sampler.stopped.set()
            sampler.join()
            proc.terminate()
            proc.wait(timeout=30)

    samples = sampler.samples
    problems = [r for r in results if r[3]]
    minute = min(60.0, args.duration / 3)
    first = window(results, 0, minute)
    last = window(results, args.duration - minute, args.duration + 1)
    during = [s for s in samples if s["t"] >= offset]
    begin, end = during[0], during[-1]
    kinds = {k: sum(1 for r in results if r[2] == k) for k in
             ("hot", "cold", "composition", "job", "failing")}
    report = {
        "duration": args.duration, "workers": args.workers, "saturation": sat, "rate": rate,
        "requests": len(results), "achieved": len(results) / args.duration, "mix": kinds,
        "errors": len(problems), "error_examples": sorted({p[3] for p in problems})[:5],
        "first_window": first, "last_window": last, "window": minute,
        "p99_drift": last["p99"] / first["p99"], "memory_start": begin, "memory_end": end,
        "memory_peak_worker_rss": max(s["worker_rss"] for s in during),
        "samples": samples, "soak_offset": offset, "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / "bench_soak.json").write_text(json.dumps(report, indent=1))
    mib = 1 << 20
    title = (f"bench_soak: {args.duration:g} s at {rate:.0f}/s ({args.load:.0%} of "
             f"{sat:.0f}/s), {args.workers} engines, {len(problems)} errors, "
             f"p99 drift {report['p99_drift']:.2f}x ({stamp})")
    plot(samples, results, offset, out / "bench_soak.png", title)
    lines = [
        f"bench_soak ({stamp}, Python {report['python']}, {os.cpu_count()} CPUs, "
        f"{args.workers} engines)",
        f"saturation rate of the mix: {sat:.1f}/s; soak rate {rate:.1f}/s for "
        f"{args.duration:g} s",
        f"requests: {len(results)} ({', '.join(f'{k} {v}' for k, v in kinds.items())}); "
        f"achieved {report['achieved']:.1f}/s",
        f"errors: {len(problems)}" + (f" e.g. {report['error_examples']}" if problems else ""),
        f"first {minute:g} s: p50 {first['p50'] * 1e3:.1f} ms, p99 {first['p99'] * 1e3:.1f} ms;"
        f" last {minute:g} s: p50 {last['p50'] * 1e3:.1f} ms, p99 "
        f"{last['p99'] * 1e3:.1f} ms; p99 drift {report['p99_drift']:.2f}x",
        f"worker RSS {begin['worker_rss'] / mib:.0f} -> {end['worker_rss'] / mib:.0f} MiB "
        f"(peak {report['memory_peak_worker_rss'] / mib:.0f}), PSS "
        f"{begin['worker_pss'] / mib:.0f} -> {end['worker_pss'] / mib:.0f} MiB",
        f"zygotes ({end['zygotes']:.0f}) RSS {begin['zygote_rss'] / mib:.0f} -> "
        f"{end['zygote_rss'] / mib:.0f} MiB, PSS {begin['zygote_pss'] / mib:.0f} -> "
        f"{end['zygote_pss'] / mib:.0f} MiB; warm sandboxes ({end['sandboxes']:.0f}) PSS "
        f"{begin['sandbox_pss'] / mib:.0f} -> {end['sandbox_pss'] / mib:.0f} MiB",
    ]
    text = "\n".join(lines)
    (out / "bench_soak.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
