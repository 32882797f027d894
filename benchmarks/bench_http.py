"""Latency against offered load over HTTP, like the paper's Figures 4-5 (issues 5 and 19).

A worker (``dandelion serve``, its own process) runs the 128×128 int64 M·Mᵀ function; an
open-loop generator sends requests at a fixed rate with Poisson arrivals (each request is
sent at its arrival time whether or not earlier ones have finished) and measures latency
from arrival to response.  Three mixes: 100%, 95% and 90% *hot* requests; a cold request
goes to one of many copies of the function that the worker has evicted from memory, so
its code is loaded from the artifact store on disk (``--hot-functions`` keeps only a few).
Caching is off (``--cache off --result-cache 0``): every request computes.

The references, measured in the same run: the bare function called in-process (its
latency, and its peak throughput with as many threads as the worker has engines), and a
plain aiohttp server calling the function in its process (``paper/baselines.py aiohttp``:
the HTTP stack's bound, no isolation), at 100% hot.  ``--before PYTHON`` also runs a worker
with another interpreter (e.g. the virtualenv of a checkout before a change), side by side.
Unloaded latencies are measured interleaved, one request to each system in turn.
Reported: for each system and mix, the peak throughput at which p99 stays under 10× the
unloaded latency (of hot requests, one bound per system) and under 50 ms, their ratios to
the bare peak and to aiohttp's, and the saturation throughput.  On a shared 2-core machine
p99 is noisy: compare ratios from the same run only.  A level lasts ``--seconds`` or as long
as ``--min-requests`` arrivals take at its rate, whichever is longer: of fewer than 100
requests the nearest-rank p99 is the slowest one (``quantiles.py``).

    python benchmarks/bench_http.py [--seconds 3] [--workers 1] [--engine process|inline]
                                    [--before PYTHON] [--out benchmarks/results]
                                    [--unloaded-only N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantiles import quantile  # noqa: E402

N = 128
COPIES = 40  # distinct cold functions (far more than the worker keeps hot)
SOURCE = """
import numpy as np
import dandelion as dd

@dd.compute(name="{name}")
def mmt(m: np.ndarray) -> np.ndarray:
    # copy {index}
    return m @ m.T
"""


def mmt(m: np.ndarray) -> np.ndarray:
    return m @ m.T


def matrix() -> bytes:
    rng = np.random.default_rng(0)
    m = rng.integers(-100, 100, size=(N, N), dtype=np.int64)
    import io

    buf = io.BytesIO()
    np.save(buf, m, allow_pickle=False)
    return buf.getvalue()


#: The receive buffer of the benchmarks' clients (``bench_cold``, ``bench_tail``, this
#: one's; ``paper/loadgen.py`` has its own copy): room for a whole answer (131 KB
#: here) in the receive window.  With the system's default (128 KiB, a window of about
#: 64 KiB that grows as the client reads), an answer that reached a client late to read it
#: waited 25-35 ms for the rest of its bytes: at rest, 4-5 % of requests (load 4-6), the
#: whole p99 of every system alike (``bench_tail.py --client-buffer 0``, issue 19).
RECEIVE_BUFFER = 4 << 20


def roomy(sock: Any, size: int = RECEIVE_BUFFER) -> None:
    """Give client socket ``sock`` a receive buffer of ``size`` bytes (at most the
    system's ``net.core.rmem_max``); 0: leave the system's default."""
    if size:
        import socket

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def connection(url: str, size: int = RECEIVE_BUFFER) -> Any:
    """A keep-alive ``http.client`` connection to ``url`` (``http://host:port``), connected,
    its socket given a receive buffer of ``size`` bytes (:func:`roomy`)."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.connect()
    roomy(conn.sock, size)
    return conn


def roomy_connector(limit: int = 100) -> Any:
    """An aiohttp connector whose sockets have a receive buffer of
    :data:`RECEIVE_BUFFER` (:func:`roomy`), where aiohttp can make them (``socket_factory``,
    aiohttp >= 3.12); else aiohttp's own."""
    import socket

    import aiohttp

    def make(addr_info: Any) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family, kind, proto)
        roomy(sock)
        return sock

    try:
        return aiohttp.TCPConnector(limit=limit, socket_factory=make)
    except TypeError:  # an aiohttp without socket_factory
        return aiohttp.TCPConnector(limit=limit)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(workers: int, state: str, engine: str | None, python: str = sys.executable,
                 extra: list[str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "dandelion", "serve", "--port", str(port), "--workers",
         str(workers), "--hot-functions", "4", "--cache", "off", "--result-cache", "0",
         "--no-access-log", "--state-dir", state, *(["--engine", engine] if engine else []),
         *(extra or [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/health", proc, "the worker")
    return proc, url


def start_aiohttp() -> tuple[subprocess.Popen[bytes], str]:
    """The plain aiohttp server of the paper's baselines (the function in its process)."""
    port = free_port()
    script = Path(__file__).resolve().parent / "paper" / "baselines.py"
    proc = subprocess.Popen([sys.executable, str(script), "aiohttp", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/invoke/mmt0", proc, "the aiohttp server", data=matrix())
    return proc, url


def wait_for(url: str, proc: subprocess.Popen[bytes], what: str, data: bytes | None = None
             ) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


def register(url: str) -> None:
    for i in range(COPIES):
        body = json.dumps({"source": SOURCE.format(name=f"mmt{i}", index=i)}).encode()
        req = urllib.request.Request(f"{url}/v1/functions", data=body,
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req).read()


# -- the bare function ----------------------------------------------------------------------


def bare_latency(m: np.ndarray, n: int = 200) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        mmt(m)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bare_peak(m: np.ndarray, threads: int, seconds: float = 1.0, repeat: int = 3) -> float:
    """Calls per second with ``threads`` threads: the best of ``repeat`` runs (the machine
    is shared; interference only ever lowers it)."""
    return max(_bare_rate(m, threads, seconds) for _ in range(repeat))


def _bare_rate(m: np.ndarray, threads: int, seconds: float) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            mmt(m)
            counts[i] += 1

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / seconds


# -- the open-loop generator ----------------------------------------------------------------


class Mix:
    """Which function each request calls: copy 0 when hot, a rotating cold copy else."""

    def __init__(self, hot: float, seed: int) -> None:
        self.hot = hot
        self.rng = random.Random(seed)
        self.next_cold = 1

    def target(self) -> str:
        if self.rng.random() < self.hot:
            return "mmt0"
        name = f"mmt{self.next_cold}"
        self.next_cold = self.next_cold % (COPIES - 1) + 1
        return name


def _ticks(pid: int, reaped: bool) -> int:
    """Clock ticks of CPU of process ``pid`` (user + system), with ``reaped``: and of the
    children it has waited for; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return sum(int(f) for f in fields[11:15 if reaped else 13])


def _tree(pid: int) -> list[int]:
    """``pid`` and the pids of its live descendants, at every depth (a worker's zygotes and
    their sandboxes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


class System:
    """A server under test: where to send a call of function ``name`` and what; ``pid``:
    its process, whose CPU time per request is measured."""

    def __init__(self, label: str, url: str, payload: bytes, dandelion: bool, pid: int
                 ) -> None:
        self.label = label
        self.dandelion = dandelion
        self.pid = pid
        if dandelion:
            self.template = url + "/v1/functions/{name}/invoke"
            self.body = msgpack.packb({"inputs": {"m": [payload]}}, use_bin_type=True)
            self.headers = {"Content-Type": "application/msgpack",
                            "Accept": "application/msgpack"}
        else:  # the baseline takes and returns raw .npy bytes; it has no cold functions
            self.template = url + "/invoke/{name}"
            self.body = payload
            self.headers = {"Content-Type": "application/octet-stream"}

    def cpu(self) -> float:
        """Seconds of CPU its process has used so far (user + system, all threads; not
        its sandboxes, which are other processes)."""
        return _ticks(self.pid, False) / os.sysconf("SC_CLK_TCK")

    def tree_cpu(self) -> float:
        """Seconds of CPU its whole process tree has used so far: the server and every live
        descendant (a Dandelion worker's zygotes and sandboxes: a reusable sandbox lives
        for many invocations and runs the function in each), and the children each has
        waited for (the sandboxes a zygote reaped: their whole lives, of which what was
        counted while they lived is in the earlier reading)."""
        return sum(_ticks(p, True) for p in _tree(self.pid)) / os.sysconf("SC_CLK_TCK")

    def url(self, name: str) -> str:
        return self.template.format(name=name)


async def run_level(system: System, rate: float, seconds: float, mix: Mix
                    ) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    rng = random.Random(int(rate * 1000))
    async with aiohttp.ClientSession(connector=roomy_connector(0)) as session:
        async def one(arrival: float, name: str) -> None:
            nonlocal errors
            try:
                async with session.post(system.url(name), data=system.body,
                                        headers=system.headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append(time.perf_counter() - arrival)

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
            tasks.append(asyncio.ensure_future(one(start + t, mix.target())))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        elapsed = time.perf_counter() - start
    n = len(latencies)
    return {"offered": rate, "achieved": n / elapsed, "requests": n, "errors": errors,
            "sent_rate": len(tasks) / seconds,
            "p50": quantile(latencies, 0.5), "p99": quantile(latencies, 0.99)}


async def unloaded(systems: list[System], n: int = 100
                   ) -> tuple[dict[str, float], dict[str, float], dict[str, float],
                              dict[str, list[float]]]:
    """The median latency of hot requests sent one at a time, to each system in turn (so
    that the machine's interference falls on all alike), and the CPU time each server's
    process spent per request (which the machine's load hardly changes).  The turn starts
    with another system each time: what a Dandelion worker does after its answer (ending
    the sandbox, forking and warming up the next) runs on while the system after it is
    measured, so in a fixed order the same system would always pay for it.  Also the CPU
    time per request of each server's whole process tree (with its sandboxes: what bounds
    its throughput), and the median of each fifth of each system's series (the spread)."""
    import aiohttp

    times: dict[str, list[float]] = {s.label: [] for s in systems}
    cpu: dict[str, float] = {}
    tree: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=roomy_connector()) as session:
        for i in range(n + 5):
            if i == 5:  # after the connections and the function are warm
                cpu = {s.label: s.cpu() for s in systems}
                tree = {s.label: s.tree_cpu() for s in systems}
            for s in systems[i % len(systems):] + systems[:i % len(systems)]:
                t0 = time.perf_counter()
                async with session.post(s.url("mmt0"), data=s.body, headers=s.headers) as resp:
                    await resp.read()
                    assert resp.status == 200, await resp.text()
                if i >= 5:
                    times[s.label].append(time.perf_counter() - t0)
    per_request = {s.label: (s.cpu() - cpu[s.label]) / n for s in systems}
    tree_per_request = {s.label: (s.tree_cpu() - tree[s.label]) / n for s in systems}
    fifths = {label: [statistics.median(ts[k * len(ts) // 5:(k + 1) * len(ts) // 5])
                      for k in range(5)] for label, ts in times.items() if len(ts) >= 5}
    return ({label: statistics.median(ts) for label, ts in times.items()}, per_request,
            tree_per_request, fifths)


#: The latency bound of the issue's throughput targets (p99, seconds).
P99_BOUND = 0.050


class Sweep:
    """Increasing offered rates for one system and mix, until saturation."""

    def __init__(self, system: System, hot: float, rate: float, base: float) -> None:
        self.system, self.hot, self.rate, self.base = system, hot, rate, base
        self.mix = Mix(hot, seed=int(hot * 100))
        self.levels: list[dict[str, float]] = []
        self.done = False

    def step(self, seconds: float, min_requests: int = 0) -> None:
        seconds = max(seconds, min_requests / self.rate)
        r = asyncio.run(run_level(self.system, self.rate, seconds, self.mix))
        self.levels.append(r)
        print(f"  {self.system.label:18s} hot {self.hot:4.0%}  offered {self.rate:7.1f}/s  "
              f"achieved {r['achieved']:7.1f}/s  p50 {r['p50'] * 1e3:7.2f} ms  p99 "
              f"{r['p99'] * 1e3:8.2f} ms  n={r['requests']:.0f}", flush=True)
        # saturated: the median is over the bound, or it is not keeping up with what was
        # sent (the Poisson draw, not the nominal rate) and a queue builds up
        self.done = (r["p50"] > 10 * self.base or len(self.levels) >= 14
                     or (r["achieved"] < 0.85 * r["sent_rate"] and r["p50"] > 3 * self.base))
        self.rate *= 1.4

    def result(self) -> dict[str, Any]:
        def peak(bound: float) -> float:
            ok = [lv["achieved"] for lv in self.levels
                  if lv["p99"] < bound and not lv["errors"]]
            return max(ok, default=0.0)

        return {"system": self.system.label, "hot": self.hot, "unloaded": self.base,
                "levels": self.levels, "peak": peak(10 * self.base),
                "peak_50ms": peak(P99_BOUND),
                "saturation": max(lv["achieved"] for lv in self.levels)}


def plot(results: list[dict[str, Any]], bare: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, key in zip(axes, ("p50", "p99")):
        for r in results:
            levels = r["levels"]
            ax.plot([lv["achieved"] for lv in levels], [lv[key] * 1e3 for lv in levels],
                    marker="o", label=f"{r['system']}, {r['hot']:.0%} hot")
        ax.axhline(bare["latency"] * 1e3, color="k", ls="--", lw=1,
                   label="bare function latency")
        ax.axvline(bare["peak"], color="k", ls=":", lw=1, label="bare function peak")
        if key == "p99":
            ax.axhline(P99_BOUND * 1e3, color="gray", ls="-.", lw=1, label="50 ms")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel(f"{key} latency (ms)")
        ax.set_title(f"{key} latency vs load: 128×128 int64 M·Mᵀ")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per load level")
    parser.add_argument("--min-requests", type=int, default=300,
                        help="arrivals per load level at least (a level at a low rate "
                             "lasts longer; default 300)")
    parser.add_argument("--workers", type=int, default=1,
                        help="compute engines of the worker and threads of the bare peak "
                             "(default 1: int64 matmul holds the GIL, so more inline engines "
                             "on 2 cores only contend)")
    parser.add_argument("--engine", help="the worker's compute engine (default: the "
                        "platform's, the process sandbox on Linux)")
    parser.add_argument("-E", "--engine-option", action="append", metavar="NAME=VALUE",
                        default=[], help="a compute engine option of the worker measured "
                        "(not of the --before one): e.g. -E reuse_sandboxes=false with "
                        "--before the same interpreter compares the option on and off")
    parser.add_argument("--before", metavar="PYTHON",
                        help="also run a worker with this interpreter (a checkout's "
                             "virtualenv before a change), side by side")
    parser.add_argument("--out", default="benchmarks/results", help="where to write results")
    parser.add_argument("--unloaded-only", type=int, metavar="N", default=0,
                        help="measure only the interleaved unloaded latencies, over N "
                             "requests to each system (no load levels, nothing written)")
    args = parser.parse_args()
    if args.before is not None and os.sep in args.before:
        # the workers run in the temporary directory: a path relative to here would miss
        args.before = os.path.abspath(args.before)

    payload = matrix()
    m = np.load(__import__("io").BytesIO(payload))
    bare = {"latency": bare_latency(m), "peak": bare_peak(m, args.workers)}
    print(f"bare function: {bare['latency'] * 1e3:.3f} ms, peak {bare['peak']:.0f}/s "
          f"with {args.workers} thread(s)", flush=True)
    load_before = os.getloadavg()

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as state:
        try:
            systems = []
            for label, python in (("Dandelion", sys.executable), ("Dandelion before",
                                                                  args.before)):
                if python is None:
                    continue
                options = [f"-E{o}" for o in args.engine_option] if label == "Dandelion" \
                    else []
                proc, url = start_worker(args.workers, f"{state}/{len(procs)}", args.engine,
                                         python, options)
                procs.append(proc)
                register(url)
                systems.append(System(label, url, payload, True, proc.pid))
            proc, url = start_aiohttp()
            procs.append(proc)
            systems.append(System("aiohttp", url, payload, False, proc.pid))
            base, cpu, tree, fifths = asyncio.run(unloaded(systems,
                                                           args.unloaded_only or 100))
            for label, lat in base.items():
                print(f"unloaded latency over HTTP (hot), {label}: {lat * 1e3:.2f} ms, "
                      f"{cpu[label] * 1e3:.2f} ms CPU per request in the server process, "
                      f"{tree[label] * 1e3:.2f} ms in all its processes", flush=True)
            if args.unloaded_only:
                after = os.getloadavg()
                print(f"\nload average {load_before[0]:.1f} before, {after[0]:.1f} after")
                for label, lat in base.items():
                    by_fifth = sorted((a - b) * 1e3 for a, b in
                                      zip(fifths.get(label, []), fifths.get("aiohttp", [])))
                    print(f"unloaded {label}: {lat * 1e3:.2f} ms = aiohttp "
                          f"{(lat - base['aiohttp']) * 1e3:+.2f} ms"
                          + (f" (by fifth of the series {by_fifth[0]:+.2f} to "
                             f"{by_fifth[-1]:+.2f} ms)" if by_fifth and label != "aiohttp"
                             else ""))
                return
            start_rate = max(10.0, 0.05 * bare["peak"])
            sweeps = [Sweep(s, hot, start_rate, base[s.label]) for s in systems
                      for hot in ((1.0, 0.95, 0.90) if s.dandelion else (1.0,))]
            while any(not sw.done for sw in sweeps):  # rounds: the same interference for all
                for sw in sweeps:
                    if not sw.done:
                        sw.step(args.seconds, args.min_requests)
            results = [sw.result() for sw in sweeps]
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    bare["peak"] = max(bare["peak"], bare_peak(m, args.workers))  # the same cores, again
    load_after = os.getloadavg()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_http.json").write_text(json.dumps(
        {"bare": bare, "engine": args.engine or "default", "unloaded": base,
         "cpu_per_request": cpu, "tree_cpu_per_request": tree,
         "load_average": [load_before, load_after], "results": results}, indent=2))
    plot(results, bare, out / "bench_http.png")
    aio = next(r for r in results if r["system"] == "aiohttp")
    print(f"\nload average {load_before[0]:.1f} before, {load_after[0]:.1f} after; bare "
          f"in-process peak: {bare['peak']:.0f} req/s ({args.workers} thread(s))")
    for label, lat in base.items():
        print(f"unloaded {label}: {lat * 1e3:.2f} ms = aiohttp "
              f"{(lat - base['aiohttp']) * 1e3:+.2f} ms; CPU per request: server process "
              f"{cpu[label] * 1e3:.2f} ms, all its processes {tree[label] * 1e3:.2f} ms")
    for r in results:
        print(f"{r['system']:18s} {r['hot']:4.0%} hot: peak with p99 < 10x unloaded "
              f"({r['unloaded'] * 1e3:.2f} ms) {r['peak']:.0f} req/s = "
              f"{r['peak'] / bare['peak']:.3f} x bare; with p99 <= 50 ms "
              f"{r['peak_50ms']:.0f} req/s = {ratio(r['peak_50ms'], aio['peak_50ms'])} x aiohttp; "
              f"saturation {r['saturation']:.0f} req/s")
    print(f"plot: {out / 'bench_http.png'}")


if __name__ == "__main__":
    main()
