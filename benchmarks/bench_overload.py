"""Past saturation (issue 19): does a worker keep its throughput and refuse the excess fast?

A worker (``dandelion serve``, the ``process`` engine, 2 engines, caching off) runs the
128×128 int64 M·Mᵀ, 100 % hot; the open-loop Poisson generator of the paper's experiment
(``paper/loadgen.py``, its own process) offers it increasing rates until the achieved
throughput stops growing (its *peak*), then 1×, 1.5×, 2× and 3× that peak.  Reported per
level: achieved throughput and its share of the peak (the target: ≥ 90 % at 2×), the share
refused with 503/429 and their p99 latency (a fast refusal: milliseconds), the p99 of the
answered requests, time-outs, the generator's own lateness (if its p99 is more than a few
ms, the generator was a bottleneck: such a level is marked ``GENERATOR-BOUND``, and it
measures bursts, not the offered rate), the worker process's CPU time per request (the
sandboxes, forked by the zygote, are not in it) and the generator's own; then the CPU time
per *answered* request of each of the worker's processes — the worker, its zygotes (forks,
resets), their sandboxes (reaped and alive) — and of the generator, refusals included: on
a machine whose CPUs are all busy past saturation, throughput falls as this rises (the
refusals' share, and an answer that costs more once requests queue).  ``--before PYTHON``
runs a second worker with another interpreter (e.g. the virtualenv of a checkout before a
change) on the same levels, alternating level by level; ``--worker-args`` are added to every
worker's command line (e.g. ``--max-wait 0.1``); ``--before-generator`` drives the second
worker with another load generator (a checkout's ``paper/loadgen.py`` before a change to it).

    python benchmarks/bench_overload.py [--seconds 4] [--before PYTHON]
                                        [--before-generator LOADGEN]
                                        [--worker-args "--max-wait 0.1"] [--rounds 2]
                                        [--refusals]

The overload levels run ``--rounds`` (2) times, the workers taking turns; the end gives
each level's median throughput and its share of the same worker's at 1× (the share of the
search's peak above swings with that one level's reading).

``--refusals`` measures instead what a refused request costs: the worker's CPU time per
request when every request is refused (``--max-waiting 0``, both engines held by
invocations that sleep), with the experiment's 131 KB body and with a 100-byte one, next to
a bare aiohttp application answering each with a JSON 503 without reading the body (the
floor for a refusal on a kept connection, whose body must still be received); the kinds
take turns, round by round.

On a shared 2-core machine the generator, the worker and its sandboxes share the CPUs with
everything else: say the load average with every number, and compare the two workers of
one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_http  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "paper" / "loadgen.py"
LEVELS = (1.0, 1.5, 2.0, 3.0)
#: A level whose generator sent its p99 request later than this (seconds) measured the
#: generator: it sent in bursts, not at the offered rate (marked GENERATOR-BOUND).
LATE = 0.010


def _stat(pid: int) -> tuple[int, float, float]:
    """Parent, own CPU time and the CPU time of its reaped children (seconds) of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick,
            (int(fields[13]) + int(fields[14])) / tick)


def tree_cpu(worker: int) -> dict[str, float]:
    """CPU time so far of a worker's processes: the worker itself, its zygotes (its
    children: forks, resets, snapshots) and their sandboxes (the reaped ones, from the
    zygotes' children's time, and those alive)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = _stat(int(entry))[0]
            except (OSError, IndexError, ValueError):  # it exited meanwhile
                pass
    out = {"worker": 0.0, "zygotes": 0.0, "sandboxes": 0.0}
    zygotes = [pid for pid, parent in parents.items() if parent == worker]
    for pid, what in [(worker, "worker")] + [(z, "zygotes") for z in zygotes] + \
            [(pid, "sandboxes") for pid, parent in parents.items() if parent in zygotes]:
        try:
            _, own, reaped = _stat(pid)
        except (OSError, IndexError, ValueError):
            continue  # (a sandbox that exited since: its zygote's reaped time has it)
        out[what] += own
        if what == "zygotes":
            out["sandboxes"] += reaped
    return out


def level(proc: subprocess.Popen[bytes], url: str, body: str, rate: float, seconds: float,
          generator: Path = LOADGEN) -> dict[str, Any]:
    """One load level against one worker, with the worker's and the generator's CPU time
    per request."""
    spec = {"url": url + "/v1/functions/{name}/invoke", "body": body,
            "headers": {"Content-Type": "application/msgpack",
                        "Accept": "application/msgpack"},
            "hot_name": "mmt0", "hot": 1.0, "rate": rate, "seconds": seconds,
            "timeout": 10.0, "seed": 1}
    before = tree_cpu(proc.pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the generators that ended
    out = subprocess.run([sys.executable, str(generator)], input=json.dumps(spec),
                         capture_output=True, text=True, check=True)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = tree_cpu(proc.pid)
    result: dict[str, Any] = json.loads(out.stdout)
    spent = done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime
    result["generator_cpu_per_request"] = spent / max(1, result["sent"])
    result["cpu_per_request"] = (after["worker"] - before["worker"]) / max(1, result["sent"])
    # per answered request: what each part of the tree and the generator used, the
    # refusals' share included (a refusal's cost: --refusals)
    result["cpu_per_answer"] = {**{part: (after[part] - before[part]) / max(1, result["ok"])
                                   for part in after},
                                "generator": spent / max(1, result["ok"])}
    result["load"] = os.getloadavg()[0]
    return result


HOLD = '''
import time
import dandelion as dd

@dd.compute
def hold(x: int) -> int:
    time.sleep(x)
    return x
'''

#: A bare aiohttp application refusing every request from its head (the body unread)
REFUSER = '''
import sys
from aiohttp import web

async def refuse(request):
    return web.json_response({"error": {"type": "Overloaded", "message": "overloaded"}},
                             status=503, headers={"Retry-After": "1"})

app = web.Application()
app.router.add_post("/v1/functions/{name}/invoke", refuse)
web.run_app(app, port=int(sys.argv[1]), access_log=None, print=None)
'''


def _quietly(fn: Any, *args: Any) -> None:
    """``fn(*args)``, whose failure (the worker ended under it) is no news."""
    try:
        fn(*args)
    except OSError:
        pass


def refusals(pythons: dict[str, str], extra: list[str], state: str, rounds: int = 3,
             rate: float = 300.0, seconds: float = 3.0) -> None:
    """CPU time per refused request: each worker with both engines held and no room to
    wait, and the bare aiohttp refuser, with a 131 KB and a 100-byte body."""
    import threading
    import urllib.request

    bodies = {"131KB": os.path.join(state, "body"), "100B": os.path.join(state, "small")}
    Path(bodies["100B"]).write_bytes(msgpack.packb({"inputs": {"m": [b"x" * 64]}},
                                                   use_bin_type=True))
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, python in pythons.items():
            proc, url = bench_http.start_worker(2, os.path.join(state, name), "process",
                                                python, [*extra, "--max-waiting", "0"])
            req = urllib.request.Request(f"{url}/v1/functions", headers={
                "Content-Type": "application/json"}, data=json.dumps({"source": HOLD}).encode())
            urllib.request.urlopen(req).read()
            for _ in range(2):  # both engines busy for the whole measurement
                hold = urllib.request.Request(
                    f"{url}/v1/functions/hold/invoke", data=b'{"inputs": {"x": [3600]}}',
                    headers={"Content-Type": "application/json"})
                threading.Thread(target=_quietly, args=(urllib.request.urlopen, hold),
                                 daemon=True).start()
            servers[name] = proc, url
        port = bench_http.free_port()
        proc = subprocess.Popen([sys.executable, "-c", REFUSER, str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers["aiohttp"] = proc, f"http://127.0.0.1:{port}"
        time.sleep(2)  # the holders admitted, the refuser listening
        print(f"CPU per refused request (ms), {rate:g} requests/s for {seconds:g} s each, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        for r in range(rounds):
            for name, (proc, url) in servers.items():
                for size, body in bodies.items():
                    result = level(proc, url, body, rate, seconds)
                    assert result["rejected"] == result["sent"], result
                    print(f"  round {r}  {name:7s} {size:5s} server "
                          f"{result['cpu_per_request'] * 1e3:.3f}  generator "
                          f"{result['generator_cpu_per_request'] * 1e3:.3f}  503 p99 "
                          f"{ms(result['rejected_p99'])} ms  load {result['load']:.1f}",
                          flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}"


def show(name: str, r: dict[str, Any], peak: float | None = None) -> None:
    share = f"{r['achieved'] / peak:5.0%}" if peak else "     "
    print(f"{name:7s} offered {r['offered']:6.0f} achieved {r['achieved']:6.1f} {share} "
          f"p99 {ms(r['p99']):>5s} ms  refused {r['rejected'] / max(1, r['sent']):4.0%} "
          f"(p99 {ms(r['rejected_p99']):>4s} ms)  t/o {r['timeouts']:3d}  "
          f"gen.late {ms(r['late_p99']):>4s} ms  worker CPU "
          f"{r['cpu_per_request'] * 1e3:.2f} ms/req  generator CPU "
          f"{r['generator_cpu_per_request'] * 1e3:.2f} ms/req  load {r['load']:.1f}"
          f"{'  GENERATOR-BOUND' if (r['late_p99'] or 0) > LATE else ''}", flush=True)
    per = r.get("cpu_per_answer")
    if per:
        print("        CPU per answered request (ms): " + "  ".join(
            f"{part} {seconds * 1e3:.2f}" for part, seconds in per.items())
              + f"  all {sum(per.values()) * 1e3:.2f}", flush=True)


def _medians(workers: Any, values: dict[tuple[str, float], list[float]], scale: float,
             spec: str) -> None:
    """Print each worker's median of ``values`` at each level (times ``scale``, formatted
    with ``spec``) and its share of the same worker's at 1x."""
    for name in workers:
        at1 = statistics.median(values[(name, 1.0)])
        print(f"  {name:7s} " + "  ".join(
            f"{f:3.1f}x {statistics.median(values[(name, f)]) * scale:{spec}} "
            f"({statistics.median(values[(name, f)]) / at1:4.0%})" for f in LEVELS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per level")
    parser.add_argument("--before", metavar="PYTHON", help="also run a worker with this "
                        "interpreter, level by level in turn")
    parser.add_argument("--worker-args", default="", help="added to each worker's command")
    parser.add_argument("--before-generator", metavar="LOADGEN", type=Path,
                        help="drive the --before worker with this load generator (e.g. a "
                             "checkout's benchmarks/paper/loadgen.py before a change)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of the overload levels (their medians are compared)")
    parser.add_argument("--refusals", action="store_true",
                        help="measure what a refused request costs instead (see above)")
    args = parser.parse_args()
    extra = shlex.split(args.worker_args)
    pythons = {"after": sys.executable, **({"before": args.before} if args.before else {})}
    generators = {"after": LOADGEN, "before": args.before_generator or LOADGEN}
    with tempfile.TemporaryDirectory() as state:
        body = os.path.join(state, "body")
        Path(body).write_bytes(msgpack.packb({"inputs": {"m": [bench_http.matrix()]}},
                                             use_bin_type=True))
        if args.refusals:
            refusals(pythons, extra, state)
            return
        workers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for name, python in pythons.items():
                proc, url = bench_http.start_worker(2, os.path.join(state, name), "process",
                                                    python, extra)
                bench_http.register(url)
                workers[name] = proc, url
                level(proc, url, body, 20, 2, generators[name])  # warm-up: zygote, numpy, code
            peaks: dict[str, float] = {}  # the best throughput, once it stops growing
            best = {name: 0.0 for name in workers}
            rate = 50.0
            while len(peaks) < len(workers):
                for name, (proc, url) in workers.items():
                    if name in peaks:
                        continue
                    r = level(proc, url, body, rate, args.seconds, generators[name])
                    show(name, r)
                    if r["achieved"] < 0.9 * rate or r["achieved"] <= best[name]:
                        peaks[name] = max(best[name], r["achieved"])
                    best[name] = max(best[name], r["achieved"])
                rate *= 1.5
            print(f"peaks: {', '.join(f'{n} {p:.0f} req/s' for n, p in peaks.items())}")
            achieved: dict[tuple[str, float], list[float]] = {}
            serving: dict[tuple[str, float], list[float]] = {}  # the tree's CPU per answer
            for _ in range(args.rounds):
                for factor in LEVELS:
                    for name, (proc, url) in workers.items():
                        r = level(proc, url, body, factor * peaks[name], args.seconds,
                                  generators[name])
                        print(f"{factor:3.1f}x ", end="")
                        show(name, r, peaks[name])
                        achieved.setdefault((name, factor), []).append(r["achieved"])
                        serving.setdefault((name, factor), []).append(
                            sum(v for k, v in r["cpu_per_answer"].items() if k != "generator"))
            print(f"median of {args.rounds} rounds: achieved (share of the same worker's "
                  f"at 1x, whose rate the search's noise does not move), load "
                  f"{os.getloadavg()[0]:.1f}")
            _medians(workers, achieved, 1.0, "6.1f")
            print("median CPU of the worker's processes (worker, zygotes, sandboxes) per "
                  "answered request, refusals included, and its share of the same worker's "
                  "at 1x (ms)")
            _medians(workers, serving, 1e3, "5.2f")
        finally:
            for proc, _ in workers.values():
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
