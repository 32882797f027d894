"""The paper's experiment end to end (issue 19): latency against offered load over HTTP.

    python benchmarks/paper/run.py [--quick] [--out benchmarks/results]

Every system answers HTTP requests for the 128×128 int64 M·Mᵀ, driven by one open-loop
Poisson load generator (``loadgen.py``, a process of its own, whose lateness is reported):

- Dandelion with the ``process`` engine (isolated) and ``inline`` (the no-isolation bound);
- Dandelion running the function's C implementation (``examples/matmul.c``, built by the
  C SDK; the paper's functions are compiled code) on the ``process``, ``kvm`` and ``wasm``
  engines (``--native``), with 39 cold copies as the Python function has (each an image of
  its own: ``COPY``), at 100 and 95 % hot (and 90 % without ``--quick``);
  caching is off (``--cache off --result-cache 0``: every request computes), the access log
  is off, and its admission control is the default one (``--max-wait 0.25``: what would
  wait longer for an engine gets a fast 503);
- a plain aiohttp server calling the function in its process (the HTTP stack's bound);
- Ray Serve with one deployment (Serve's defaults otherwise), when ``ray[serve]`` imports;
- a fresh Python interpreter per request that imports numpy and runs the function;
- one Ray task per request.

Unloaded latency: requests one at a time, each at rest: ``--rest`` (30 ms) after the previous
answer, for every system alike, so that it does not compete with the work the previous one
left behind (``rest.py`` measures how long that lasts); the same requests back to back are
reported beside it, for information.  The hot series are sent in ``--unloaded-rounds`` (5)
rounds of 40 requests, the systems taking turns (in reverse order every other round), so
that a busy moment of a shared machine falls on every system alike; a system's unloaded
latency is the p50 of its 200 requests together, and each round's p50 is kept beside it
(``unloaded.rounds``: the spread).

Cold requests, unloaded: 800 one at a time at rest (``COLD_REQUESTS``, as
``bench_cold.py`` sends), each to a copy of the function pushed out of memory, and as many
to the fresh interpreter (each of which is cold); their p99s (the eighth slowest) are given
with a 95 % confidence interval, whose upper bound is then below the slowest.  They are
sent in ``COLD_ROUNDS`` (20) rounds, the systems taking turns (in reverse order every other
round) as in the hot series, so that the fresh interpreter's p99 and ours, whose ratio is a
target, are measured under the same conditions of a shared machine.

Mixes: 100/95/90% hot requests.  A cold request goes to one of 39 copies of the function
the Dandelion worker has evicted (``--hot-functions 4``), so its code comes from the
artifact store (a C copy's image from disk, prepared anew by its engine); for Ray tasks it
defines a new remote function.  The other baselines have no cold functions
(the fresh interpreter: every request is cold), so they run once, at 100%.  All systems are
up at once and each round offers the next rate to every system not yet saturated, so they
share the machine's interference alike; ratios within one run are what counts.  The rates
step 1.4× (1.8× with ``--quick``); once a sweep has saturated, more levels narrow each of its
peaks down (at p99 ≤ 50 ms and at p99 ≤ 10× unloaded), each halfway (geometrically) between
the last rate that passes and the first that fails of the peak whose two are furthest
apart (``report.bisect_rate``), until the two of each peak are ``--bisect`` (2) halvings of
the step apart (a step of 1.8× becomes 1.16×, ``report.resolution``), at most ``--bisect``
levels per peak, the same for every system and in the same rounds; where a sweep's lowest
rate already fails a bound above its unloaded latency (a busy machine can), up to
``--bisect`` levels a grid step lower each go first (``report.descent_rate``), so that a
peak is read rather than 0.  Each sweep
ends with one level at twice its best throughput (behaviour past saturation).  A level lasts
2 s (``--quick``) or 4 s, longer at low rates: at least 200 requests where that takes at most
four times as long (the p99 of fewer than 100 requests is their slowest).  A level that fails
(p99 over 50 ms or 10× the system's unloaded latency, or more than 1 % refused, timed out or
failed) is run a second time where that can change a peak (no lower rate failed the same
bound: ``report.rerun``), and a rate fails only if it fails twice (``report.fails``): near
the edge, one busy moment of a shared machine would otherwise decide a peak.

Writes ``paper.json`` and, through ``report.py``, the table ``paper.txt`` and the figures
``paper_hot100.png``, ``paper_hot95.png``, ``paper_hot90.png``.

``--systems`` starts only some of the systems, and ``--unloaded-only ROUNDS`` runs only
their unloaded series at rest, the systems taking turns, and writes nothing: the unloaded
target of ``process`` against the aiohttp server in a minute or two::

    python benchmarks/paper/run.py --systems process aiohttp --native --unloaded-only 5
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_http  # noqa: E402  (the workload, its copies and the bare reference)
import report  # noqa: E402
from quantiles import bounds, quantile  # noqa: E402

COLD = [f"mmt{i}" for i in range(1, bench_http.COPIES)]
#: Seconds between an answer and the next request in the unloaded series, for every system:
#: long enough for the work a request leaves behind to be done.  A forking worker
#: (``process``) kept using CPU for 8-16 ms (median) and up to 23 ms after an answer (the
#: sandbox's teardown, the replacement's fork and warm-up; ``rest.py``, load 1.0-1.3), the
#: aiohttp server and the fresh interpreter's for 0 ms (median), up to 14 ms.
REST = 0.030
#: Rounds of the hot unloaded series (``--unloaded-rounds``), 40 requests each, the systems
#: taking turns: with one series of 40 per system, sent one system after the other, the same
#: tree read 0.73, 1.33 and 1.76 ms over the aiohttp server within an hour (issue 19)
UNLOADED_ROUNDS = 5
#: The systems besides the C ones (``--systems``): Dandelion's Python function on process
#: and inline, the aiohttp server, the fresh interpreter, Ray (tasks and Serve)
SYSTEMS = ("process", "inline", "aiohttp", "fresh", "ray")
#: Requests a load level sends at least, where that takes at most four times its seconds
MIN_REQUESTS = 200
#: Requests of each series whose p99 the cold-start ratio compares (the cold one of every
#: system with cold code, and the fresh interpreter's), as ``bench_cold.py`` sends: the p99
#: (nearest rank) of 200 is their second slowest, with no upper confidence bound (at least
#: 367 are needed, ``quantiles.bounds``); of 400, their fourth slowest, bounded by the
#: slowest; of 800, their eighth slowest, bounded by the fourth slowest
COLD_REQUESTS = 800
#: Rounds the cold series are sent in, the systems taking turns (:func:`cold_rounds`): in
#: the quiet run of 2026-12-07, sent one system after the other, the fresh interpreter's
#: p99 read 148 ms against 189 ms the run before, and the ratio to ours moved with it
COLD_ROUNDS = 20
#: Halvings of the grid's step around each peak (p99 <= 50 ms, <= 10x unloaded) once a sweep
#: has climbed (``--bisect``): a level each at most (1.8x with ``--quick``: to 1.16x)
BISECT = 2


@dataclass
class System:
    """One system under test: how to reach it and which mixes it runs."""

    name: str
    label: str
    isolated: bool
    url: str
    body: str
    headers: dict[str, str]
    mixes: tuple[float, ...]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cold: bool = True  # whether it has cold functions to measure

    def stop(self) -> None:
        """Terminate its processes, last started first."""
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def loadgen(system: System, **spec: Any) -> dict[str, Any]:
    """One level (or sequential series) from the load generator's own process."""
    spec = {"url": system.url, "body": system.body, "headers": system.headers,
            "hot_name": "mmt0", "cold_names": COLD, **spec}
    out = subprocess.run([sys.executable, str(HERE / "loadgen.py")], input=json.dumps(spec),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cold_rounds(systems: list[System], rest: float, requests: int = COLD_REQUESTS,
                rounds: int = COLD_ROUNDS) -> dict[str, dict[str, Any]]:
    """Each system's cold series: ``requests`` requests one at a time, each ``rest`` seconds
    after the previous answer, every one to a copy of the function pushed out of memory (the
    fresh interpreter's to its one function, every request of which is cold), sent in
    ``rounds`` rounds, the systems taking turns (in reverse order every other round), so
    that a busy moment of the shared machine falls on every system alike; each round goes
    on with the copies where the last one stopped.  Per system: the p50 and p99 of all its
    requests, the p99's 95 % confidence interval (``p99_bounds``, ``quantiles.bounds``),
    how many were sent and answered."""
    records: dict[str, list[Any]] = {s.name: [] for s in systems}
    per = max(1, requests // rounds)
    for r in range(rounds):
        for s in systems if r % 2 == 0 else systems[::-1]:
            series = loadgen(s, hot=1.0 if s.name == "fresh" else 0.0, sequential=per,
                             pause=rest, records=True, cold_start=r * per)
            records[s.name] += series["records"]
    out = {}
    for s in systems:
        ok = [latency for _, status, latency in records[s.name] if status == 200]
        out[s.name] = {"hot_fraction": 1.0 if s.name == "fresh" else 0.0,
                       "sent": len(records[s.name]), "ok": len(ok), "turns": rounds,
                       "p50": quantile(ok, 0.5), "p99": quantile(ok, 0.99),
                       "p99_bounds": list(bounds(ok, 0.99))}
    return out


def wait_ready(system: System, seconds: float = 180) -> None:
    """Until the system answers a request (Ray takes a while to start)."""
    deadline = time.monotonic() + seconds
    body = Path(system.body).read_bytes()
    while True:
        try:
            req = urllib.request.Request(system.url.format(name="mmt0"), data=body,
                                         headers=system.headers)
            urllib.request.urlopen(req, timeout=10).read()
            return
        except OSError:
            if time.monotonic() > deadline or any(p.poll() is not None for p in system.procs):
                system.stop()
                raise RuntimeError(f"{system.label} did not start") from None
            time.sleep(0.5)


def _serve(engine: str, workers: int, state: str, name: str, label: str,
           bodies: dict[str, str], mixes: tuple[float, ...], cold: bool = True) -> System:
    """A Dandelion worker on ``engine``, up (nothing registered yet)."""
    port = bench_http.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dandelion", "serve", "--port", str(port), "--engine", engine,
         "--workers", str(workers), "--hot-functions", "4", "--cache", "off",
         "--result-cache", "0", "--no-access-log", "--state-dir", state],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    system = System(name, label, engine != "inline", url + "/v1/functions/{name}/invoke",
                    bodies["msgpack"],
                    {"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
                    mixes, [proc], cold=cold)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return system
        except OSError:
            if time.monotonic() > deadline:
                system.stop()
                raise RuntimeError("the Dandelion worker did not start") from None
            time.sleep(0.2)


def start_dandelion(engine: str, workers: int, state: str, bodies: dict[str, str],
                    mixes: tuple[float, ...]) -> System:
    """A Dandelion worker with the function and its cold copies registered."""
    system = _serve(engine, workers, state, f"dandelion-{engine}", f"Dandelion {engine}",
                    bodies, mixes)
    bench_http.register(system.url.split("/v1/")[0])
    wait_ready(system)
    return system


#: The function in C (the paper's functions are compiled code): built by the C SDK for the
#: process and kvm engines (an ELF) or for wasm
MATMUL_C = HERE.parents[1] / "examples" / "matmul.c"
#: What makes a C copy of the function an image of its own: a constant in its read-only
#: data that nothing reads (``used, retain``: the linkers keep it), so each copy has its
#: own digest and computes the same, as the Python copies differ by a comment
COPY = '\n__attribute__((used, retain)) const char dandelion_copy[] = "copy {index}";\n'


def native_copies(engine: str, directory: Path) -> list[Any]:
    """The C function's ``bench_http.COPIES`` images for ``engine`` (an ELF for process and
    kvm, a wasm module for wasm), each built once per content by the SDK (its build cache,
    in the artifact store's directory; how long that took is printed)."""
    from dandelion.sdk import native_artifact, wasm_artifact

    make = wasm_artifact if engine == "wasm" else native_artifact
    source = MATMUL_C.read_text()
    start = time.perf_counter()
    images = []
    for i in range(bench_http.COPIES):
        path = directory / f"mmt{i}.c"
        path.write_text(source + COPY.format(index=i))
        images.append(make(str(path), f"mmt{i}"))
    print(f"{engine} C: {len(images)} images built in {time.perf_counter() - start:.2f} s "
          "(the SDK's cache keeps them)", flush=True)
    return images


def start_native(engine: str, workers: int, state: str, bodies: dict[str, str],
                 mixes: tuple[float, ...]) -> System:
    """A Dandelion worker running the C implementation of the function on ``engine``
    (``process``: the ELF in a process sandbox; ``kvm``: in a virtual machine; ``wasm``:
    built for WebAssembly), with its cold copies registered as the Python function's are
    (a worker keeps native functions loaded within ``--hot-functions`` too)."""
    import dandelion as dd

    system = _serve(engine, workers, state, f"dandelion-{engine}-c", f"Dandelion {engine} C",
                    bodies, mixes)
    directory = Path(state) / "sources"
    directory.mkdir(parents=True, exist_ok=True)
    with dd.Client(system.url.split("/v1/")[0]) as client:
        for i, image in enumerate(native_copies(engine, directory)):
            client.register_native(f"mmt{i}", image, params={"m": "item[ndarray]"},
                                   results={"result": "item[ndarray]"}, engine_type=engine)
    wait_ready(system)
    return system


def start_baseline(kind: str, label: str, bodies: dict[str, str], mixes: tuple[float, ...],
                   *extra: str, cold: bool = False) -> System:
    """One of baselines.py's servers."""
    port = bench_http.free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "baselines.py"), kind, str(port),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    system = System(kind, label, False, f"http://127.0.0.1:{port}/invoke/{{name}}",
                    bodies["npy"], {"Content-Type": "application/octet-stream"}, mixes,
                    [proc], cold)
    wait_ready(system)
    return system


class Sweep:
    """Increasing offered rates for one system and mix, until saturation; then levels that
    narrow each of its peaks down to ``bisect`` halvings of the grid's step
    (:func:`report.bisect_rate`, at most ``bisect`` levels a peak); then overload."""

    def __init__(self, system: System, hot: float, unloaded: float, factor: float,
                 max_levels: int, bisect: int = BISECT) -> None:
        self.system, self.hot, self.factor, self.max_levels = system, hot, factor, max_levels
        self.unloaded, self.bisect = unloaded, bisect
        self.rate = max(1.0, 0.15 / unloaded)
        self.levels: list[dict[str, Any]] = []
        self.overload: dict[str, Any] | None = None
        self.climbing = True  # offering each rate ``factor`` times the last
        self.saturated = False
        self.done = False

    def step(self, seconds: float, timeout: float) -> None:
        """Run the next level (long enough for at least 12 requests)."""
        if self.climbing:
            runs = self._level(self.rate, seconds, timeout)
            self.rate *= self.factor
            self.saturated = all(self._saturated(lv) for lv in runs)
            # (rates, not runs: a level run a second time is one step of the climb)
            self.climbing = not self.saturated and \
                len(report.rates(self.levels)) < self.max_levels
            return
        # a peak whose lowest rate failed is read lower down (at most ``bisect`` levels,
        # where its bound is above the unloaded latency: else no rate can pass it)
        below = len({lv["offered"] for lv in self.levels if lv.get("below")})
        rate = report.descent_rate(self.levels, tuple(b for b in self.bounds()
                                                      if b > self.unloaded), self.factor) \
            if below < self.bisect else None
        if rate is not None:
            self._level(rate, seconds, timeout, tag="below")
            return
        # each peak (p99 <= 50 ms, <= 10x unloaded) narrowed to the step of ``bisect``
        # halvings of the grid's, at most ``bisect`` levels each (fewer where they share)
        narrowed = len({lv["offered"] for lv in self.levels if lv.get("bisect")})
        rate = report.bisect_rate(self.levels, self.bounds(),
                                  report.resolution(self.factor, self.bisect)) \
            if narrowed < self.bisect * len(self.bounds()) else None
        if rate is not None:  # each level as long as the others at its rate
            self._level(rate, seconds, timeout, tag="bisect")
            return
        if self.saturated:
            rate = 2 * max(lv["achieved"] for lv in self.levels)
            self.overload = loadgen(self.system, hot=self.hot, rate=rate,
                                    seconds=max(seconds, 12 / rate), timeout=timeout,
                                    seed=len(self.levels))
            self._print(self.overload, "overload")
        self.done = True

    def _level(self, rate: float, seconds: float, timeout: float, tag: str | None = None
               ) -> list[dict[str, Any]]:
        """One level at ``rate`` (``tag``: ``bisect``, one that narrows a peak down, or
        ``below``, one below the lowest rate), kept in :attr:`levels`, and run a second
        time where that can change a peak (:func:`report.rerun`); its runs."""
        # at least MIN_REQUESTS where that takes at most 4 levels' time: the p99 of fewer
        # than 100 requests is their slowest, one busy moment of the machine
        spec = {"hot": self.hot, "rate": rate, "timeout": timeout,
                "seconds": max(seconds, 12 / rate, min(MIN_REQUESTS / rate, 4 * seconds))}
        runs = [self._keep(loadgen(self.system, **spec, seed=len(self.levels)), tag)]
        # once more where a second run can change a peak (the level fails a bound the
        # report reads peaks at, above no rate failing it already): the rate then fails only
        # if it fails twice (report.fails), so one busy moment does not end a peak
        if report.rerun(self.levels[:-1], runs[0], self.bounds()):
            again = loadgen(self.system, **spec, seed=1000 + len(self.levels))
            again["again"] = True
            runs.append(self._keep(again, tag))
        return runs

    def _keep(self, level: dict[str, Any], tag: str | None) -> dict[str, Any]:
        if tag:
            level[tag] = True
        self.levels.append(level)
        self._print(level, " ".join(t for t in ("below", "bisect", "again") if level.get(t)))
        return level

    def bounds(self) -> tuple[float, float]:
        """The p99 bounds the report reads this sweep's peaks at (seconds): 50 ms and 10×
        the system's unloaded latency."""
        return report.SLO_MS / 1e3, 10 * self.unloaded

    def _saturated(self, lv: dict[str, Any]) -> bool:
        bad = lv["rejected"] + lv["timeouts"] + lv["failed"]
        # not keeping up: fewer answers than requests (the Poisson draw, not the nominal
        # rate) *and* a queue (the median grows; a tail spike alone is the machine's noise)
        sent_rate = lv["sent"] / lv["seconds"]
        p50 = lv["p50"] or float("inf")
        return ((lv["achieved"] < 0.85 * sent_rate and p50 > 3 * self.unloaded)
                or bad > 0.01 * lv["sent"] or p50 > 10 * self.unloaded)

    def _print(self, lv: dict[str, Any], tag: str) -> None:
        def ms(x: float | None) -> str:
            return "   -   " if x is None else f"{x * 1e3:7.1f}"

        busy = lv.get("generator_cpu")  # (not in results from before it was measured)
        cpu = "  -" if busy is None else f"{busy:3.0%}"

        print(f"  {self.system.label:18s} {self.hot:4.0%}  offered {lv['offered']:7.1f}/s  "
              f"achieved {lv['achieved']:7.1f}/s  p50 {ms(lv['p50'])} p99 {ms(lv['p99'])} ms"
              f"  rejected {lv['rejected']:4d} timeouts {lv['timeouts']:4d}  "
              f"gen late p99 {ms(lv['late_p99'])} ms cpu {cpu} {tag}", flush=True)

    def result(self) -> dict[str, Any]:
        """What the report needs."""
        return {"hot": self.hot, "levels": self.levels, "overload": self.overload}


def unloaded_rounds(systems: list[System], rounds: int, rest: float
                    ) -> dict[str, dict[str, Any]]:
    """Each system's hot unloaded series: ``rounds`` rounds of 40 requests one at a time,
    each ``rest`` seconds after the previous answer, the systems taking turns (in reverse
    order every other round).  Per system: the p50 and p99 of all its requests together,
    how many were sent and answered, and each round's p50 (``rounds``)."""
    records: dict[str, list[Any]] = {s.name: [] for s in systems}
    p50s: dict[str, list[float]] = {s.name: [] for s in systems}
    for r in range(rounds):
        for s in systems if r % 2 == 0 else systems[::-1]:
            series = loadgen(s, hot=1.0, sequential=40, pause=rest, records=True)
            records[s.name] += series["records"]
            p50s[s.name].append(series["p50"])
    out = {}
    for s in systems:
        ok = [latency for _, status, latency in records[s.name] if status == 200]
        out[s.name] = {"p50": quantile(ok, 0.5), "p99": quantile(ok, 0.99),
                       "sent": len(records[s.name]), "ok": len(ok), "rounds": p50s[s.name]}
    return out


def unloaded_only(systems: list[System], rounds: int, rest: float) -> None:
    """The unloaded series at rest alone (``--unloaded-only``, :func:`unloaded_rounds`):
    each system's p50, its difference to the aiohttp server's, and each round's p50."""
    print(f"unloaded at rest ({rest * 1e3:g} ms after each answer), load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    series = unloaded_rounds(systems, rounds, rest)
    base = series.get("aiohttp")
    for s in systems:
        mine = series[s.name]
        over = f"  ({(mine['p50'] - base['p50']) * 1e3:+.2f} ms over aiohttp)" \
            if base and s.name != "aiohttp" else ""
        print(f"  {s.label:20s} p50 {mine['p50'] * 1e3:6.2f} ms{over}  rounds: "
              + " ".join(f"{x * 1e3:.2f}" for x in mine["rounds"]), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} after", flush=True)


def machine() -> dict[str, Any]:
    """What this machine is and how loaded it was."""
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "platform": platform.platform(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer, shorter levels, baselines at 100%% only (a few minutes)")
    parser.add_argument("--out", default="benchmarks/results", help="where to write results")
    parser.add_argument("--no-ray", action="store_true", help="skip Ray tasks and Ray Serve")
    parser.add_argument("--no-python", action="store_true",
                        help="skip the Dandelion systems running the Python function (process, "
                             "inline): with --no-ray, the C systems against the aiohttp "
                             "server and the fresh interpreter alone")
    parser.add_argument("--native", nargs="*", default=["process", "kvm", "wasm"],
                        metavar="ENGINE", choices=["process", "kvm", "wasm", "none"],
                        help="engines that also run the function's C implementation "
                             "(examples/matmul.c; default: process kvm wasm; 'none', or "
                             "no engine: no C systems)")
    parser.add_argument("--rest", type=float, default=REST, metavar="SECONDS",
                        help="pause between an answer and the next request of the unloaded "
                             f"series (default {REST:g}: each request at rest)")
    parser.add_argument("--bisect", type=int, default=BISECT, metavar="LEVELS",
                        help="halvings of the grid's step that narrow each peak (p99 <= 50 "
                             "ms, <= 10x unloaded) down, between its last passing and first "
                             "failing rate, once a sweep has climbed: a level each at most "
                             f"(default {BISECT}; 0: the grid's levels alone)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                        metavar="SYSTEM",
                        help="the systems besides the C ones (--native): "
                             f"{', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--unloaded-rounds", type=int, default=UNLOADED_ROUNDS,
                        metavar="ROUNDS",
                        help="rounds of 40 hot requests at rest to each system, the systems "
                             f"taking turns (default {UNLOADED_ROUNDS})")
    parser.add_argument("--unloaded-only", type=int, default=0, metavar="ROUNDS",
                        help="only the unloaded series at rest, ROUNDS times with the systems "
                             "taking turns; prints each system's p50 and writes nothing")
    args = parser.parse_args()
    args.native = [engine for engine in args.native if engine != "none"]
    seconds, factor, max_levels = (2.0, 1.8, 8) if args.quick else (4.0, 1.4, 14)
    mixes = (1.0, 0.95, 0.90)
    timeout = 10.0

    payload = bench_http.matrix()
    m = np.load(io.BytesIO(payload))
    bare = {"latency": bench_http.bare_latency(m), "peak": bench_http.bare_peak(m, 1)}
    print(f"bare function: {bare['latency'] * 1e3:.3f} ms, peak {bare['peak']:.0f}/s",
          flush=True)
    info = {"before": machine()}
    cpus = os.cpu_count() or 1

    tmp = tempfile.TemporaryDirectory()
    bodies = {"npy": f"{tmp.name}/body.npy", "msgpack": f"{tmp.name}/body.msgpack"}
    Path(bodies["npy"]).write_bytes(payload)
    Path(bodies["msgpack"]).write_bytes(
        msgpack.packb({"inputs": {"m": [payload]}}, use_bin_type=True))

    systems: list[System] = []
    try:
        chosen = set(args.systems)
        if not args.no_python and "process" in chosen:
            systems.append(start_dandelion("process", cpus, f"{tmp.name}/process", bodies,
                                           mixes))
        if not args.no_python and "inline" in chosen:
            systems.append(start_dandelion("inline", 1, f"{tmp.name}/inline", bodies,
                                           (1.0,) if args.quick else mixes))
        for engine in args.native:
            systems.append(start_native(engine, cpus, f"{tmp.name}/{engine}-c", bodies,
                                        (1.0, 0.95) if args.quick else mixes))
        if "aiohttp" in chosen:
            systems.append(start_baseline("aiohttp", "aiohttp in process", bodies, (1.0,)))
        if "fresh" in chosen:
            systems.append(start_baseline("fresh", "fresh interpreter", bodies, (1.0,)))
        if args.unloaded_only:
            unloaded_only(systems, args.unloaded_only, args.rest)
            return
        if not args.no_ray and "ray" in chosen:
            try:
                import ray.serve  # noqa: F401
                serve_port = bench_http.free_port()
            except ImportError as e:  # Ray tasks only
                print(f"Ray Serve skipped: {e}", flush=True)
                serve_port = 0
            ray_tasks = start_baseline("ray", "Ray tasks", bodies,
                                       (1.0,) if args.quick else (1.0, 0.95), str(serve_port),
                                       cold=True)
            ray_tasks.name = "raytasks"
            systems.append(ray_tasks)
            if serve_port:
                serve = System("rayserve", "Ray Serve", False,
                               f"http://127.0.0.1:{serve_port}/invoke/{{name}}",
                               bodies["npy"], ray_tasks.headers, (1.0,), cold=False)
                wait_ready(serve)
                systems.append(serve)

        results: dict[str, Any] = {}
        sweeps: list[Sweep] = []
        # the hot series of every system but the fresh interpreter (whose requests are all
        # cold: its cold series below), the systems taking turns
        hots = unloaded_rounds([s for s in systems if s.name != "fresh"],
                               args.unloaded_rounds, args.rest)
        # the series whose p99s the cold-start ratio compares, the cold one of each
        # system with cold code and the fresh interpreter's (every request of which is
        # cold), COLD_REQUESTS long, in rounds too
        colds = cold_rounds([s for s in systems if s.cold or s.name == "fresh"], args.rest)
        for s in systems:
            # one at a time, each request at rest (args.rest after the previous answer, the
            # same for every system); the hot series, whose p50 only is used, were sent
            # above in rounds
            hot = colds[s.name] if s.name == "fresh" else hots[s.name]
            # informational: the same requests back to back, each overlapping the work the
            # previous one left behind (for a forking worker: its sandbox's teardown and the
            # replacement's fork and warm-up)
            b2b = loadgen(s, hot=1.0, sequential=40)
            cold = colds[s.name] if s.cold else None
            results[s.name] = {"label": s.label, "isolated": s.isolated, "unloaded": hot,
                               "unloaded_b2b": b2b, "unloaded_cold": cold, "sweeps": []}
            print(f"{s.label}: unloaded p50 {hot['p50'] * 1e3:.2f} ms, p99 "
                  f"{hot['p99'] * 1e3:.2f} ms (back to back: p50 {b2b['p50'] * 1e3:.2f} ms)"
                  + (f"; cold p50 {cold['p50'] * 1e3:.2f} ms, p99 {cold['p99'] * 1e3:.2f} ms"
                     if cold else ""), flush=True)
            sweeps += [Sweep(s, hot_fraction, hot["p50"], factor, max_levels, args.bisect)
                       for hot_fraction in s.mixes]
        while any(not sw.done for sw in sweeps):  # one level per system and mix per round
            for sw in sweeps:
                if not sw.done:
                    sw.step(seconds, timeout)
        for sw in sweeps:
            results[sw.system.name]["sweeps"].append(sw.result())
    finally:
        for s in systems:
            s.stop()
        tmp.cleanup()
    after = bench_http.bare_peak(m, 1)
    bare["peak"] = max(bare["peak"], after)
    info["after"] = machine()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"quick": args.quick, "seconds_per_level": seconds, "rest": args.rest,
            "grid": factor, "bisect": args.bisect, "rerun": True,
            "resolution": report.resolution(factor, args.bisect), "descend": True,
            "unloaded_rounds": args.unloaded_rounds,
            "machine": info, "bare": bare, "systems": results}
    (out / "paper.json").write_text(json.dumps(data, indent=1))
    report.write(data, out)


if __name__ == "__main__":
    main()
