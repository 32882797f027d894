"""One cold request at a time over HTTP, against a fresh interpreter per request (issue 19).

A worker (``dandelion serve --hot-functions 4``, caching off) has the 128×128 int64 M·Mᵀ of
``bench_http.py`` registered 40 times.  One request at a time, interleaved round by round
(one request of each kind to each system in turn, so that they share the machine's
interference alike), each request at rest (``--rest``, 30 ms after the previous request or
registration, so that none pays for the teardown, fork and warm-up another left behind), it
measures:

- ``hot``: the function whose code is in memory;
- ``evicted``: one of the 39 copies, taken in turn, each evicted from memory by the others
  since its last request (a cold start: its code is loaded from the artifact store);
- ``first``: a copy registered just before, invoked for the first time;
- ``new worker``: the first invocation on a worker started afresh, a second after the
  function was registered there (``--new-workers`` of them, after the rest);
- ``fresh``: the baseline, a fresh Python interpreter per request that imports numpy and runs
  the function (``paper/baselines.py fresh``: what a container or microVM cold start costs at
  the least).

Reported: p50 and p99 (nearest rank) of each, with the p99's 95 % confidence interval
(``quantiles.bounds``: of fewer than 367 requests a p99 has no upper bound, of fewer than 100
it is their slowest), and the fresh interpreter's p99 over each kind's p99 (issue 19's
target: ≥ 25× for cold requests) with the ratio's lower bound (the fresh interpreter's lower
bound over the kind's upper one).  The defaults (800 rounds, a fresh-interpreter request
in each) give 800 requests of each kind and 800 of the fresh interpreter, as many as
``paper/run.py``'s cold series: of 200, the fresh interpreter's p99 had no upper bound and a
lower one (the 195th) that the ratio's worst case took; of 400, the upper bound was the
slowest request.  Every client has a receive buffer
with room for a whole answer (``--client-buffer``, ``bench_http.RECEIVE_BUFFER``).
``--before PYTHON`` runs a second worker with another interpreter (a checkout's virtualenv
before a change), interleaved with the first.  On a shared 2-core machine compare within
one run only, and give the load average.

    python benchmarks/bench_cold.py [--rounds 800] [--engine process] [--before PYTHON]
                                    [--rest 0.03] [--native]

``--native``: the function's C implementation on ``--engine`` (``process``, ``kvm`` or
``wasm``), with the 40 copies ``paper/run.py`` builds (an image each), evicted alike; no
``first`` or ``new worker`` kind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_http  # noqa: E402  (the workload, its copies and the worker's command line)
from quantiles import bounds, quantile  # noqa: E402

#: Seconds of rest before each timed request (``--rest``), for every system alike: the work
#: the previous request (to any system) or registration left behind is done by then
#: (``paper/rest.py``: a forking worker keeps using CPU for up to about 23 ms after an
#: answer), so no request pays for another's teardown, fork or warm-up.
REST = 0.030


class Endpoint:
    """A keep-alive HTTP connection to one system, timing one request at a time."""

    rest = REST  # seconds of rest before each request (``--rest``)
    buffer = bench_http.RECEIVE_BUFFER  # the client's receive buffer (``--client-buffer``)

    def __init__(self, url: str, body: bytes, headers: dict[str, str], path: str) -> None:
        self.conn = bench_http.connection(url, self.buffer)
        self.body, self.headers, self.path = body, headers, path

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        self.conn.request("POST", path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status not in (200, 201):
            raise RuntimeError(f"{path}: {resp.status} {data[:200]!r}")
        return data

    def invoke(self, name: str) -> float:
        """Seconds for one invocation of ``name``, from sending to the last byte back, sent
        ``rest`` seconds after whatever this benchmark did before (at rest)."""
        time.sleep(self.rest)
        start = time.perf_counter()
        self.post(self.path.format(name=name), self.body, self.headers)
        return time.perf_counter() - start


class Worker(Endpoint):
    """A Dandelion worker with the function's copies registered."""

    def __init__(self, label: str, python: str, state: str, engine: str, workers: int,
                 payload: bytes, images: list[Any] | None = None) -> None:
        self.label, self.python = label, python
        self.proc, url = bench_http.start_worker(workers, state, engine, python)
        body = msgpack.packb({"inputs": {"m": [payload]}}, use_bin_type=True)
        super().__init__(url, body, {"Content-Type": "application/msgpack",
                                     "Accept": "application/msgpack"},
                         "/v1/functions/{name}/invoke")
        if images is None:
            bench_http.register(url)
        else:  # the C function's copies (--native), as paper/run.py registers them
            import dandelion as dd

            with dd.Client(url) as client:
                for i, image in enumerate(images):
                    client.register_native(f"mmt{i}", image, params={"m": "item[ndarray]"},
                                           results={"result": "item[ndarray]"},
                                           engine_type=engine)
        self.registered = 0

    def register_new(self) -> str:
        """Register one more copy of the function; its name."""
        self.registered += 1
        name = f"new{self.registered}"
        source = bench_http.SOURCE.format(name=name, index=1000 + self.registered)
        self.post("/v1/functions", json.dumps({"source": source}).encode(),
                  {"Content-Type": "application/json"})
        return name

    def cold_loads(self) -> float:
        """How many loads the worker counted as cold so far (its /metrics)."""
        self.conn.request("GET", "/metrics")
        for row in self.conn.getresponse().read().decode().splitlines():
            if row.startswith('dandelion_function_loads_total{temperature="cold"}'):
                return float(row.split()[-1])
        return 0.0


def on_new_worker(python: str, state: str, engine: str, workers: int, payload: bytes,
                  settle: float) -> float:
    """Seconds for the first invocation of a function on a worker just started, ``settle``
    seconds after registering it (nothing of it, nor its libraries, was loaded before)."""
    proc, url = bench_http.start_worker(workers, state, engine, python)
    try:
        body = msgpack.packb({"inputs": {"m": [payload]}}, use_bin_type=True)
        endpoint = Endpoint(url, body, {"Content-Type": "application/msgpack",
                                        "Accept": "application/msgpack"},
                            "/v1/functions/{name}/invoke")
        source = bench_http.SOURCE.format(name="mmt0", index=0)
        endpoint.post("/v1/functions", json.dumps({"source": source}).encode(),
                      {"Content-Type": "application/json"})
        time.sleep(settle)
        return endpoint.invoke("mmt0")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_fresh(payload: bytes) -> tuple[subprocess.Popen[bytes], Endpoint]:
    """The fresh-interpreter baseline of the paper's experiment."""
    port = bench_http.free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "paper" / "baselines.py"), "fresh",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    bench_http.wait_for(f"{url}/invoke/mmt0", proc, "the fresh-interpreter server",
                        data=payload)
    return proc, Endpoint(url, payload, {"Content-Type": "application/octet-stream"},
                          "/invoke/{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=800,
                        help="requests of each kind to each worker (default 800)")
    parser.add_argument("--fresh-every", type=int, default=1,
                        help="one fresh-interpreter request every this many rounds")
    parser.add_argument("--engine", default="process", help="the workers' engine")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="engines per worker (default: one per CPU, as paper/run.py)")
    parser.add_argument("--before", metavar="PYTHON",
                        help="also run a worker with this interpreter, interleaved")
    parser.add_argument("--new-workers", type=int, default=5,
                        help="workers started afresh for the 'new worker' kind (default 5)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between registering and invoking on a new worker")
    parser.add_argument("--rest", type=float, default=REST, metavar="SECONDS",
                        help=f"pause before each timed request (default {REST:g}: at rest; "
                             "0: back to back)")
    parser.add_argument("--client-buffer", type=int, default=bench_http.RECEIVE_BUFFER,
                        metavar="BYTES",
                        help="the client's receive buffer (default 4 MiB, room for an answer; "
                             "0: the system's default, whose window made late readers wait "
                             "25-35 ms for the rest of an answer)")
    parser.add_argument("--native", action="store_true",
                        help="the function's C implementation on --engine instead (the "
                             "copies paper/run.py builds, each an image of its own; no "
                             "'first' kind)")
    parser.add_argument("--out", default="benchmarks/results", help="where to write results")
    args = parser.parse_args()
    Endpoint.rest = args.rest
    Endpoint.buffer = args.client_buffer

    payload = bench_http.matrix()
    load_before = os.getloadavg()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as state:
        images = None
        if args.native:
            sys.path.insert(0, str(HERE / "paper"))
            import run as paper  # noqa: PLC0415  (its C copies)

            Path(f"{state}/sources").mkdir()
            images = paper.native_copies(args.engine, Path(f"{state}/sources"))
        try:
            workers = []
            for label, python in (("after", sys.executable), ("before", args.before)):
                if python:
                    w = Worker(label, python, f"{state}/{label}", args.engine, args.workers,
                               payload, images)
                    procs.append(w.proc)
                    workers.append(w)
            fresh_proc, fresh = start_fresh(payload)
            procs.append(fresh_proc)
            copies = [f"mmt{i}" for i in range(1, bench_http.COPIES)]
            kinds = ["hot", "evicted"] + ([] if args.native else ["first"])
            times: dict[str, dict[str, list[float]]] = {
                w.label: {kind: [] for kind in kinds} for w in workers}
            times["fresh"] = {"fresh": []}
            loads = {w.label: w.cold_loads() for w in workers}
            for w in workers:  # warm: the engines' zygotes, the hot function
                for _ in range(5):
                    w.invoke("mmt0")
            for r in range(args.rounds):
                for w in workers:
                    times[w.label]["hot"].append(w.invoke("mmt0"))
                for w in workers:
                    times[w.label]["evicted"].append(w.invoke(copies[r % len(copies)]))
                for w in workers:
                    if not args.native:
                        name = w.register_new()
                        times[w.label]["first"].append(w.invoke(name))
                if r % args.fresh_every == 0:
                    times["fresh"]["fresh"].append(fresh.invoke("mmt0"))
            cold = {w.label: w.cold_loads() - loads[w.label] for w in workers}
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
        for i in range(0 if args.native else args.new_workers):  # alone on the machine
            for w in workers:
                times[w.label].setdefault("new worker", []).append(on_new_worker(
                    w.python, f"{state}/new-{w.label}-{i}", args.engine, args.workers,
                    payload, args.settle))
    load_after = os.getloadavg()

    summary: dict[str, Any] = {}
    for system, kinds in times.items():
        for kind, xs in kinds.items():
            lower, upper = bounds(xs, 0.99)
            summary[f"{system} {kind}"] = {"n": len(xs), "p50": quantile(xs, 0.5),
                                           "p99": quantile(xs, 0.99),
                                           "p99_bounds": [lower, upper]}
    fresh_p99 = summary["fresh fresh"]["p99"]
    fresh_lower = summary["fresh fresh"]["p99_bounds"][0]
    what = f"{args.engine}{' (the C function)' if args.native else ''}"
    lines = [f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; engine "
             f"{what}, {args.workers} engine(s) per worker; one request at a time, "
             f"{args.rest * 1e3:g} ms of rest before each; the client's receive buffer "
             f"{args.client_buffer or 'the default'}"]
    for key, s in summary.items():
        lower, upper = s["p99_bounds"]
        ratio = "" if key == "fresh fresh" else \
            f"   fresh p99 / p99 = {fresh_p99 / s['p99']:5.1f} (>= {fresh_lower / upper:5.1f})"
        lines.append(f"  {key:18s} n={s['n']:4d}  p50 {s['p50'] * 1e3:7.2f} ms  "
                     f"p99 {s['p99'] * 1e3:7.2f} ms [{lower * 1e3:7.2f}, {upper * 1e3:7.2f}]"
                     f"{ratio}")
    for label, n in cold.items():
        lines.append(f"  {label}: {n:.0f} cold loads counted by the worker "
                     f"({args.rounds} evicted requests)")
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cold.txt").write_text("\n".join(lines) + "\n")
    (out / "bench_cold.json").write_text(json.dumps(
        {"engine": args.engine, "workers": args.workers, "rounds": args.rounds,
         "rest": args.rest,
         "load_average": [load_before, load_after], "summary": summary,
         "cold_loads": cold}, indent=1))


if __name__ == "__main__":
    main()
