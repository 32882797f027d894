"""Where the slowest requests spend their time: stage timestamps per request (issue 19).

A worker (``dandelion serve``, the process engine, caching off, the 128×128 int64 M·Mᵀ of
``bench_http.py``) runs with its request path instrumented from outside (this script wraps
the frontend's handler and the event loop's hand-off to the sandboxes; nothing in Dandelion
exists for it).  Each request is stamped, on the monotonic clock that the client shares:

- ``wire_in``: from the client's send (or its scheduled Poisson arrival) to the handler;
- ``queue``: from the handler to the first try to start the function (decoding, planning,
  admission, waiting for a free engine);
- ``park``: waiting for a forked sandbox (a burst outran the sandboxes forked ahead);
- ``begin``: placing the inputs and handing the function to the sandbox;
- ``sandbox``: from the hand-over to the sandbox's report (``inner``: the function's own time
  as the sandbox measured it);
- ``conclude``, ``to_out``: reading the outputs, encoding the answer;
- ``wire_out``: from the handler's return to the client's last byte.

It prints the median of each stage over the middle fifth of the requests and over the
slowest 2 %, the worker's garbage collections (per generation, and their time), and the
slowest requests one by one with the collections and sandbox forks that overlapped them.

    python benchmarks/bench_tail.py [--rate 0 | --rate 150] [--requests 1000]
                                    [--python PYTHON]

``--rate 0``: one request at a time; otherwise an open-loop Poisson load at that rate.
``--python``: the worker's interpreter (a checkout's virtualenv before a change).  The
instrumentation wraps private methods: after a change to the request path, adapt it here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STAGES = ("wire_in", "queue", "park", "begin", "sandbox", "inner", "conclude", "to_out",
          "wire_out")


def serve(argv: list[str]) -> None:
    """The worker, instrumented: ``dandelion ARGV``; writes what it saw to $TAIL_TRACE on
    SIGUSR1."""
    from dandelion.backends.engines.process import pool
    from dandelion.cli import main
    from dandelion.runtime import handoff
    from dandelion.server import app

    now = time.perf_counter
    requests: dict[str, dict[str, float]] = {}
    events: list[tuple[float, str, Any]] = []
    batches: dict[int, str] = {}
    current: contextvars.ContextVar[str | None] = contextvars.ContextVar("rid", default=None)

    def wrap(cls: Any, name: str, before: Any = None, after: Any = None) -> None:
        real = getattr(cls, name)

        def wrapped(self: Any, *args: Any) -> Any:
            t = now()
            if before:
                before(self, t, *args)
            result = real(self, *args)
            if after:
                after(self, t, result, *args)
            return result
        setattr(cls, name, wrapped)

    invoke = app.Frontend.invoke

    async def traced_invoke(self: Any, kind: str, request: Any) -> Any:
        rid = request.headers.get("X-Trace")
        token = current.set(rid)
        if rid is not None:
            requests[rid] = {"in": now()}
        try:
            return await invoke(self, kind, request)
        finally:
            if rid is not None:
                requests[rid]["out"] = now()
            current.reset(token)
    app.Frontend.invoke = traced_invoke  # type: ignore[method-assign]

    def of(batch: Any) -> dict[str, float] | None:
        rid = batches.get(id(batch))
        return None if rid is None else requests.get(rid)

    def submitted(self: Any, t: float, batch: Any) -> None:
        if current.get() is not None:
            batches[id(batch)] = current.get()  # type: ignore[assignment]

    def started(self: Any, t: float, began: bool, batch: Any) -> None:
        r = of(batch)
        if r is not None:
            r.setdefault("try", t)
            if began:
                r["begin"], r["begun"] = t, now()

    def readable(self: Any, t: float, driven: Any) -> None:
        r = of(driven.batch)
        if r is not None:
            r.setdefault("report", t)

    def finishing(self: Any, t: float, driven: Any, outputs: Any, error: Any,
                  seconds: Any) -> None:
        r = of(driven.batch)
        if r is not None:
            r["finish"], r["inner"] = t, seconds or 0.0

    def released(self: Any, t: float, result: Any, driven: Any) -> None:
        batches.pop(id(driven.batch), None)

    wrap(handoff.Handoff, "submit", before=submitted)
    wrap(handoff.Handoff, "_start", after=lambda s, t, r, b: started(s, t, r, b))
    wrap(handoff.Handoff, "_readable", before=readable)
    wrap(handoff.Handoff, "_finish", before=finishing)
    wrap(handoff.Handoff, "_release", after=released)
    sandbox_init = pool.Sandbox.__init__

    def forked(self: Any, *args: Any, **kwargs: Any) -> None:
        events.append((now(), "fork", None))
        sandbox_init(self, *args, **kwargs)
    pool.Sandbox.__init__ = forked  # type: ignore[method-assign]
    collecting: list[float] = [0.0]

    def collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = now()
        else:
            events.append((collecting[0], "gc", (info["generation"], now() - collecting[0])))
    gc.callbacks.append(collection)

    def dump(*_: Any) -> None:
        Path(os.environ["TAIL_TRACE"]).write_text(json.dumps({"requests": requests,
                                                              "events": events}))
        os._exit(0)
    signal.signal(signal.SIGUSR1, dump)
    sys.exit(main(argv))


def drive(url: str, body: bytes, headers: dict[str, str], rate: float, n: int
          ) -> dict[str, tuple[float, float]]:
    """Send ``n`` requests (one at a time, or open-loop at ``rate``): rid -> (sent or
    scheduled, answered), on the monotonic clock."""
    path = "/v1/functions/mmt0/invoke"
    times: dict[str, tuple[float, float]] = {}
    if rate <= 0:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        for i in range(n):
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={**headers, "X-Trace": str(i)})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                times[str(i)] = (t0, time.perf_counter())
        return times

    async def run() -> None:
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            async def one(i: int, arrival: float) -> None:
                async with s.post(url + path, data=body,
                                  headers={**headers, "X-Trace": str(i)}) as resp:
                    await resp.read()
                    if resp.status == 200:
                        times[str(i)] = (arrival, time.perf_counter())
            rng, tasks, start, t = random.Random(1), [], time.perf_counter(), 0.0
            for i in range(n):
                t += rng.expovariate(rate)
                delay = start + t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(i, start + t)))
            await asyncio.gather(*tasks)
    asyncio.run(run())
    return times


def stages(r: dict[str, float], sent: float, answered: float) -> dict[str, float] | None:
    """The stages of one request (None: it did not run through the hand-off)."""
    if not {"in", "try", "begin", "begun", "report", "finish", "out"} <= r.keys():
        return None
    return {"wire_in": r["in"] - sent, "queue": r["try"] - r["in"], "park": r["begin"] - r["try"],
            "begin": r["begun"] - r["begin"], "sandbox": r["report"] - r["begun"],
            "inner": r["inner"], "conclude": r["finish"] - r["report"],
            "to_out": r["out"] - r["finish"], "wire_out": answered - r["out"],
            "total": answered - sent}


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests per second, open loop (default 0: one at a time)")
    parser.add_argument("--requests", type=int, default=1000, help="requests (default 1000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="engines of the worker (default: one per CPU)")
    parser.add_argument("--python", default=sys.executable, help="the worker's interpreter")
    parser.add_argument("--show", type=int, default=10, help="slowest requests to list")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import bench_http
    import msgpack
    from quantiles import quantile

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as state:
        trace = Path(state) / "trace.json"
        port = bench_http.free_port()
        proc = subprocess.Popen(
            [args.python, str(Path(__file__).resolve()), "--serve", "serve", "--port",
             str(port), "--workers", str(args.workers), "--hot-functions", "4", "--cache",
             "off", "--result-cache", "0", "--no-access-log", "--state-dir",
             f"{state}/worker", "--engine", "process"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
            env={**os.environ, "TAIL_TRACE": str(trace)})
        try:
            url = f"http://127.0.0.1:{port}"
            bench_http.wait_for(f"{url}/health", proc, "the worker")
            bench_http.register(url)
            body = msgpack.packb({"inputs": {"m": [bench_http.matrix()]}}, use_bin_type=True)
            headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
            drive(url, body, headers, 0, 20)  # warm
            times = drive(url, body, headers, args.rate, args.requests)
            proc.send_signal(signal.SIGUSR1)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        seen = json.loads(trace.read_text())
    load_after = os.getloadavg()
    rows = sorted(((s, times[rid]) for rid, r in seen["requests"].items()
                   if rid in times and (s := stages(r, *times[rid])) is not None),
                  key=lambda x: x[0]["total"])
    totals = [s["total"] for s, _ in rows]
    start, end = min(t[0] for t in times.values()), max(t[1] for t in times.values())
    events = [e for e in seen["events"] if start <= e[0] <= end]
    collections = [e for e in events if e[1] == "gc"]
    n = len(rows)
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"{'one at a time' if args.rate <= 0 else f'{args.rate:g} req/s open loop'}; "
          f"{n} of {args.requests} requests through the hand-off; worker {args.python}")
    print(f"p50 {quantile(totals, 0.5) * 1e3:.2f} ms, p99 {quantile(totals, 0.99) * 1e3:.2f} ms")
    print(f"{'median of (ms)':22s}" + "".join(f"{k:>9s}" for k in (*STAGES, "total")))
    for label, part in (("the middle fifth", rows[int(n * 0.4):int(n * 0.6)]),
                        ("the slowest 2 %", rows[-max(1, n // 50):])):
        print(f"{label:22s}" + "".join(f"{statistics.median(s[k] for s, _ in part) * 1e3:9.2f}"
                                        for k in (*STAGES, "total")))
    print(f"garbage collections while requests ran: "
          f"{[sum(1 for e in collections if e[2][0] == g) for g in (0, 1, 2)]} "
          f"(generations 0, 1, 2), {sum(e[2][1] for e in collections) * 1e3:.1f} ms in all")
    print(f"the slowest {args.show}, with what overlapped them:")
    for s, (t0, t1) in rows[-args.show:]:
        inside = [e for e in events if t0 <= e[0] <= t1]
        gcs = [f"gen{e[2][0]} {e[2][1] * 1e3:.1f} ms" for e in inside if e[1] == "gc"]
        forks = sum(1 for e in inside if e[1] == "fork")
        print("  " + " ".join(f"{k}={s[k] * 1e3:.2f}" for k in (*STAGES, "total"))
              + f"  forks={forks}" + (f"  gc: {', '.join(gcs)}" if gcs else ""))


if __name__ == "__main__":
    main()
