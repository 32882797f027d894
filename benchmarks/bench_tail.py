"""Where the slowest requests spend their time: stage timestamps per request (issue 19).

A worker (``dandelion serve``, the process engine, caching off, the 128×128 int64 M·Mᵀ of
``bench_http.py``) runs with its request path instrumented from outside (this script wraps
the frontend's handler and the event loop's hand-off to the sandboxes; nothing in Dandelion
exists for it).  Each request is stamped, on the monotonic clock that the client shares:

- ``wire_in``: from the client's send (or its scheduled Poisson arrival) to the handler;
- ``body``: from the handler to the body read and unpacked (msgpack);
- ``plan``: from there to the invocation handed to the engines (looking the function up,
  decoding the inputs, starting the run);
- ``queue``: from there to the first try to start the function (waiting for a free engine);
- ``park``: waiting for a forked sandbox (a burst outran the sandboxes forked ahead);
- ``begin``: placing the inputs and handing the function to the sandbox;
- ``sandbox``: from the hand-over to the sandbox's report (``inner``: the function's own time
  as the sandbox measured it);
- ``conclude``, ``to_out``: reading the outputs, encoding the answer;
- ``wire_out``: from the handler's return to the client's last byte.

It prints the median of each stage over the middle fifth of the requests and over the
slowest 2 %, the worker's garbage collections (per generation, and their time), and the
slowest requests one by one with the collections and sandbox forks that overlapped them.
One at a time, it also says which CPU each side of each hand-off ran on (the client's send,
the handler, the hand-over, the sandbox, the loop reading its report, the client's read:
``sched_getcpu`` and ``/proc/PID/stat``), how often two consecutive sides shared one, and
the stages of the requests whose sandbox ran on the hand-over's CPU against the others.
At rest, it also says whether each request found the worker at rest: the CPU time its
whole process tree (the frontend, its zygotes and sandboxes) used in the last
:data:`BUSY_WINDOW` of the pause before it (what the previous request left behind: its
sandbox's exit, a replacement's fork and warm-up, a sandbox made ready), and the latency of
the requests that found it busy against the others.

    python benchmarks/bench_tail.py [--rate 0 | --rate 150] [--rest 0.03] [--requests 1000]
                                    [--faults] [--python PYTHON] [--cold [--mixed]]
                                    [--client-buffer 0]

``--rate 0``: one request at a time, back to back, or each ``--rest`` seconds after the
previous answer (``run.py``'s unloaded series: at rest); otherwise an open-loop Poisson load
at that rate.  ``--faults``: count a ready sandbox's page faults from its hand-over to its
report.  ``--cold``: every request to one of 39 copies of the function pushed out of the
worker's memory, as ``run.py``'s cold series (``--mixed``: every other one, the others
hot, as ``bench_cold.py`` interleaves them; each kind's stages side by side).
``--python``: the worker's interpreter (a checkout's virtualenv before a change).
``--client-buffer``: the one-at-a-time client's receive buffer (default: room for a whole
answer, ``bench_http.RECEIVE_BUFFER``; 0: the system's default, whose window kept 4-5 % of
answers at rest waiting 25-35 ms in the ``wire_out`` stage).  The instrumentation wraps
private methods: after a change to the request path, adapt it here.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextvars
import gc
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
#: The end of each pause (``--rest``) in which the worker's process tree is watched: a
#: request found it busy if the tree used more than :data:`BUSY_CPU` seconds of CPU then.
BUSY_WINDOW = 0.003
BUSY_CPU = 50e-6
STAGES = ("wire_in", "body", "plan", "queue", "park", "begin", "sandbox", "inner", "conclude",
          "to_out", "wire_out")


def _sched_getcpu() -> Any:
    """``sched_getcpu()`` of the C library: the CPU the calling thread runs on."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).sched_getcpu


def proc_stat(pid: int, field: int) -> int:
    """Field ``field`` (numbered as in proc(5)) of ``/proc/PID/stat``; -1 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[field - 3])


def last_cpu(pid: int) -> int:
    """The CPU that process ``pid`` last ran on."""
    return proc_stat(pid, 39)


def minor_faults(pid: int) -> int:
    """The minor page faults of process ``pid`` so far."""
    return proc_stat(pid, 10)


def serve(argv: list[str]) -> None:
    """The worker, instrumented: ``dandelion ARGV``; writes what it saw to $TAIL_TRACE on
    SIGUSR1."""
    from dandelion.backends.engines.process import ahead, pool
    from dandelion.cli import main
    from dandelion.runtime import handoff
    from dandelion.server import app

    now = time.perf_counter
    cpu = _sched_getcpu()
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

    # an invocation, on either path to it (aiohttp's application, or the connection's
    # own: app.Frontend.route), from its tenant known to its answer made
    invoke = app.Frontend._invoke

    async def traced_invoke(self: Any, tenant: Any, kind: str, name: str, headers: Any,
                            *args: Any) -> Any:
        rid = headers.get("X-Trace")
        token = current.set(rid)
        if rid is not None:
            requests[rid] = {"in": now(), "cpu_in": cpu()}
        try:
            return await invoke(self, tenant, kind, name, headers, *args)
        finally:
            if rid is not None:
                requests[rid]["out"] = now()
            current.reset(token)
    app.Frontend._invoke = traced_invoke  # type: ignore[method-assign]
    inputs = app.Frontend._inputs

    async def traced_inputs(self: Any, *args: Any) -> Any:
        result = await inputs(self, *args)
        r = requests.get(current.get() or "")
        if r is not None:
            r["read"] = now()
        return result
    app.Frontend._inputs = traced_inputs  # type: ignore[method-assign]

    def of(batch: Any) -> dict[str, float] | None:
        rid = batches.get(id(batch))
        return None if rid is None else requests.get(rid)

    def submitted(self: Any, t: float, batch: Any) -> None:
        if current.get() is not None:
            batches[id(batch)] = current.get()  # type: ignore[assignment]
            requests[current.get()]["submit"] = t  # type: ignore[index]

    def started(self: Any, t: float, began: bool, batch: Any) -> None:
        r = of(batch)
        if r is not None:
            r.setdefault("try", t)
            if began:
                r["begin"], r["begun"] = t, now()
                r["cpu_begin"] = cpu()

    def readable(self: Any, t: float, driven: Any) -> None:
        r = of(driven.batch)
        if r is not None and "report" not in r:
            r["report"] = t
            r["cpu_report"] = cpu()

    def finishing(self: Any, t: float, driven: Any, outputs: Any, error: Any,
                  seconds: Any) -> None:
        r = of(driven.batch)
        if r is not None:
            r["finish"], r["inner"] = t, seconds or 0.0

    def releasing(self: Any, t: float, driven: Any) -> None:
        r = of(driven.batch)
        if r is not None:  # (off the request's path: after its answer)
            pid = driven.invocation.sandbox.pid
            r["cpu_sandbox"] = last_cpu(pid)
            if pid in faults_before:
                r["faults"] = minor_faults(pid) - faults_before.pop(pid)

    def released(self: Any, t: float, result: Any, driven: Any) -> None:
        batches.pop(id(driven.batch), None)

    wrap(handoff.Handoff, "submit", before=submitted)
    wrap(handoff.Handoff, "_start", after=lambda s, t, r, b: started(s, t, r, b))
    wrap(handoff.Handoff, "_readable", before=readable)
    wrap(handoff.Handoff, "_finish", before=finishing)
    wrap(handoff.Handoff, "_release", before=releasing, after=released)
    # the page faults of a ready sandbox from its hand-over to its report (read as it is
    # taken: on the request's path, some 20 us of 'begin')
    faults_before: dict[int, int] = {}
    take = ahead.Ahead.take

    def traced_take(self: Any, *args: Any) -> Any:
        sandbox = take(self, *args)
        if sandbox is not None and os.environ.get("TAIL_FAULTS"):
            faults_before[sandbox.pid] = minor_faults(sandbox.pid)
        return sandbox
    ahead.Ahead.take = traced_take  # type: ignore[method-assign]
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


def tree_cpu(root: int) -> float:
    """Seconds of CPU that process ``root`` and its descendants alive now used so far
    (``/proc/PID/schedstat``; the children of each process from ``/proc/PID/task/*/
    children``)."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except (OSError, ValueError):  # gone meanwhile
            continue
    return total / 1e9


def drive(url: str, body: bytes, headers: dict[str, str], rate: float, n: int,
          rest: float = 0.0, cpus: dict[str, tuple[int, int]] | None = None,
          copies: int = 0, busy: tuple[int, dict[str, float]] | None = None,
          buffer: int = 4 << 20, mixed: bool = False) -> dict[str, tuple[float, float]]:
    """Send ``n`` requests (one at a time, each ``rest`` seconds after the previous answer,
    or open-loop at ``rate``): rid -> (sent or scheduled, answered), on the monotonic
    clock; ``cpus``: rid -> the CPUs the client sent and read the answer on.  ``copies``:
    each request to the next of that many copies of the function (``mmt1``...) in turn,
    each pushed out of the worker's memory since its last request (cold), instead of
    ``mmt0`` (hot).  ``busy``: (the worker's pid, rid -> the seconds of CPU its process tree
    used in the last :data:`BUSY_WINDOW` of the pause before the request; at rest only).
    ``buffer``: the receive buffer of the one-at-a-time client (``bench_http.roomy``).
    ``mixed``: with ``copies``, only every other request (the odd ones) is cold, the
    others go to ``mmt0`` (hot), as ``bench_cold.py`` interleaves them."""
    def path_of(i: int) -> str:
        cold = copies and (i % 2 if mixed else True)
        return f"/v1/functions/mmt{1 + (i // 2 if mixed else i) % copies if cold else 0}/invoke"

    times: dict[str, tuple[float, float]] = {}
    if rate <= 0:
        import bench_http

        cpu = _sched_getcpu()
        conn = bench_http.connection(url, buffer)
        for i in range(n):
            if rest and busy is not None and rest > BUSY_WINDOW:
                time.sleep(rest - BUSY_WINDOW)
                before = tree_cpu(busy[0])
                time.sleep(BUSY_WINDOW)
                busy[1][str(i)] = tree_cpu(busy[0]) - before
            elif rest:
                time.sleep(rest)
            sent_on = cpu()
            t0 = time.perf_counter()
            conn.request("POST", path_of(i), body=body,
                         headers={**headers, "X-Trace": str(i)})
            resp = conn.getresponse()
            resp.read()
            t1 = time.perf_counter()
            if resp.status == 200:
                times[str(i)] = (t0, t1)
                if cpus is not None:
                    cpus[str(i)] = (sent_on, cpu())
        return times

    async def run() -> None:
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            async def one(i: int, arrival: float) -> None:
                async with s.post(url + path_of(i), data=body,
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
    if not {"in", "read", "submit", "try", "begin", "begun", "report", "finish", "out"
            } <= r.keys():
        return None
    return {"wire_in": r["in"] - sent, "body": r["read"] - r["in"],
            "plan": r["submit"] - r["read"], "queue": r["try"] - r["submit"],
            "park": r["begin"] - r["try"],
            "begin": r["begun"] - r["begin"], "sandbox": r["report"] - r["begun"],
            "inner": r["inner"], "conclude": r["finish"] - r["report"],
            "to_out": r["out"] - r["finish"], "wire_out": answered - r["out"],
            "total": answered - sent, "cpu_sandbox": r.get("cpu_sandbox", -1),
            "cpu_begin": r.get("cpu_begin", -1)}


def mode(rate: float, rest: float) -> str:
    """How the requests were sent, in words."""
    if rate > 0:
        return f"{rate:g} req/s open loop"
    return f"one at a time, {rest * 1e3:g} ms at rest after each" if rest else "back to back"


def print_cpus(seen: dict[str, dict[str, Any]], cpus: dict[str, tuple[int, int]],
               rids: list[str]) -> None:
    """Which CPUs each hand-off of a request ran on: the client's send, the server's
    handler and hand-over, the sandbox, the server reading the report, the client's read
    (the share of requests where two consecutive sides ran on the same CPU)."""
    sides = ("client", "handler", "hand-over", "sandbox", "report", "answer")
    rows = [(cpus[rid][0], seen[rid].get("cpu_in", -1), seen[rid].get("cpu_begin", -1),
             seen[rid].get("cpu_sandbox", -1), seen[rid].get("cpu_report", -1), cpus[rid][1])
            for rid in rids if rid in cpus]
    if not rows:
        return
    same = [sum(1 for r in rows if r[k] == r[k + 1] >= 0) / len(rows) for k in range(5)]
    print("same CPU as the previous side: " + ", ".join(
        f"{a} -> {b} {s:.0%}" for a, b, s in zip(sides, sides[1:], same)))
    patterns: dict[tuple[int, ...], int] = {}
    for r in rows:
        patterns[r] = patterns.get(r, 0) + 1
    print("the most common CPUs (" + ", ".join(sides) + "): " + "; ".join(
        f"{p} {c / len(rows):.0%}" for p, c in sorted(patterns.items(), key=lambda x: -x[1])[:4]))


def print_busy(busy: dict[str, float], rows: list[tuple[dict[str, float], Any]],
               times: dict[str, tuple[float, float]]) -> None:
    """The requests that found the worker's process tree busy just before them (what an
    earlier request left behind) against those that found it at rest."""
    from quantiles import quantile

    slow = {id(s) for s, _ in rows[-max(1, len(rows) // 50):]}
    by_time = {times[rid]: rid for rid in times}
    print(f"the worker's process tree in the last {BUSY_WINDOW * 1e3:g} ms before each "
          f"request (busy: it used more than {BUSY_CPU * 1e6:g} us of CPU):")
    for label, found in (("busy", True), ("at rest", False)):
        chosen = [s for s, t in rows if (busy.get(by_time[t], 0.0) > BUSY_CPU) is found]
        if chosen:
            totals = [s["total"] for s in chosen]
            print(f"  found it {label:7s} {len(chosen):5d} requests: p50 "
                  f"{quantile(totals, 0.5) * 1e3:.2f} ms, p99 "
                  f"{quantile(totals, 0.99) * 1e3:.2f} ms, "
                  f"{sum(1 for s in chosen if id(s) in slow)} of the slowest 2 %")


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests per second, open loop (default 0: one at a time)")
    parser.add_argument("--requests", type=int, default=1000, help="requests (default 1000)")
    parser.add_argument("--rest", type=float, default=0.0, metavar="SECONDS",
                        help="with --rate 0: pause after each answer (0.03: at rest, as "
                             "run.py's unloaded series; default 0, back to back)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="engines of the worker (default: one per CPU)")
    parser.add_argument("--python", default=sys.executable, help="the worker's interpreter")
    parser.add_argument("--faults", action="store_true",
                        help="count a ready sandbox's page faults from its hand-over to its "
                             "report (reading them puts some 20 us on the path)")
    parser.add_argument("--cold", action="store_true",
                        help="each request to one of the 39 copies of the function the worker "
                             "pushed out of memory (--hot-functions 4), as run.py's cold "
                             "series: what a cold request adds, against a run without")
    parser.add_argument("--mixed", action="store_true",
                        help="with --cold: only every other request cold, the others hot, "
                             "as bench_cold.py interleaves them; the stages of each kind "
                             "side by side (what a cold request adds, in one run)")
    parser.add_argument("--client-buffer", type=int, default=4 << 20, metavar="BYTES",
                        help="with --rate 0: the client's receive buffer (default 4 MiB, room "
                             "for an answer; 0: the system's default)")
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
            env={**os.environ, "TAIL_TRACE": str(trace),
                 "TAIL_FAULTS": "1" if args.faults else ""})
        try:
            url = f"http://127.0.0.1:{port}"
            bench_http.wait_for(f"{url}/health", proc, "the worker")
            bench_http.register(url)
            body = msgpack.packb({"inputs": {"m": [bench_http.matrix()]}}, use_bin_type=True)
            headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
            drive(url, body, headers, 0, 20)  # warm
            cpus: dict[str, tuple[int, int]] = {}
            busy: dict[str, float] = {}
            times = drive(url, body, headers, args.rate, args.requests, args.rest, cpus,
                          bench_http.COPIES - 1 if args.cold else 0, (proc.pid, busy),
                          args.client_buffer, args.mixed)
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
    # the collections that started while a request was under way (not those between)
    spans = sorted(times.values())
    collections = [e for e in events if e[1] == "gc" and any(
        t0 <= e[0] <= t1 for t0, t1 in spans[max(0, bisect.bisect(spans, (e[0], e[0])) - 1):
                                             bisect.bisect(spans, (e[0], e[0])) + 1])]
    between = sum(1 for e in events if e[1] == "gc") - len(collections)
    n = len(rows)
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"{mode(args.rate, args.rest)}; "
          f"{('hot and cold in turn' if args.mixed else 'cold') if args.cold else 'hot'}; "
          f"{n} of {args.requests} requests through the hand-off; worker {args.python}")
    print(f"p50 {quantile(totals, 0.5) * 1e3:.2f} ms, p99 {quantile(totals, 0.99) * 1e3:.2f} ms")
    print(f"{'median of (ms)':22s}" + "".join(f"{k:>9s}" for k in (*STAGES, "total")))
    kinds = [("", rows)]
    if args.cold and args.mixed:  # the odd requests are the cold ones
        rid_of = {t: rid for rid, t in times.items()}
        kinds = [(f"{kind} ", [r for r in rows if int(rid_of[r[1]]) % 2 == odd])
                 for kind, odd in (("hot", 0), ("cold", 1))]
    for kind, some in kinds:
        m = len(some)
        if kind:
            print(f"{kind}p50 {quantile([s['total'] for s, _ in some], 0.5) * 1e3:.2f} ms, "
                  f"p99 {quantile([s['total'] for s, _ in some], 0.99) * 1e3:.2f} ms")
        for label, part in ((f"{kind}the middle fifth", some[int(m * 0.4):int(m * 0.6)]),
                            (f"{kind}the slowest 2 %", some[-max(1, m // 50):])):
            print(f"{label:22s}" + "".join(
                f"{statistics.median(s[k] for s, _ in part) * 1e3:9.2f}"
                for k in (*STAGES, "total")))
    if cpus:
        print_cpus(seen["requests"], cpus, [rid for rid in times if rid in seen["requests"]])
        for label, same in (("on the hand-over's CPU", True), ("on another CPU", False)):
            part = [s for s, _ in rows if (s["cpu_sandbox"] == s["cpu_begin"]) is same]
            if part:
                print(f"sandbox {label} ({len(part) / n:.0%}): median " + ", ".join(
                    f"{k} {statistics.median(x[k] for x in part) * 1e3:.2f}"
                    for k in ("begin", "sandbox", "inner", "conclude", "total")) + " ms")
    faults = [seen["requests"][rid]["faults"] for rid in times
              if "faults" in seen["requests"].get(rid, {})]
    if faults:
        print(f"page faults of a ready sandbox from its hand-over to its report: median "
              f"{statistics.median(faults):g} ({len(faults)} sandboxes)")
    if busy:
        print_busy(busy, rows, times)
    print(f"garbage collections while requests ran: "
          f"{[sum(1 for e in collections if e[2][0] == g) for g in (0, 1, 2)]} "
          f"(generations 0, 1, 2), {sum(e[2][1] for e in collections) * 1e3:.1f} ms in all; "
          f"{between} between requests")
    print(f"the slowest {args.show}, with what overlapped them:")
    for s, (t0, t1) in (rows[-args.show:] if args.show else []):
        inside = [e for e in events if t0 <= e[0] <= t1]
        gcs = [f"gen{e[2][0]} {e[2][1] * 1e3:.1f} ms" for e in inside if e[1] == "gc"]
        forks = sum(1 for e in inside if e[1] == "fork")
        print("  " + " ".join(f"{k}={s[k] * 1e3:.2f}" for k in (*STAGES, "total"))
              + f"  forks={forks}" + (f"  gc: {', '.join(gcs)}" if gcs else ""))


if __name__ == "__main__":
    main()
