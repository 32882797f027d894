"""Where one hot invocation at rest goes on ``process``, against the bare call (issue 19).

The matrix function (128×128 int64 M·Mᵀ, ``examples/matmul.py``) handed to its reusable
sandbox as an event loop hands it (:meth:`ProcessEngine.begin`, then the report read as it
arrives), one invocation at a time with ``--gap`` seconds of rest before each (the paper's
unloaded series rests 30 ms), taking turns with the same product computed in this process
after the same rest (a bare call at rest is slower than one back to back: caches and TLBs
go cold while a virtual machine's CPU idles).  Per invocation, measured from outside the
sandbox (nothing in the product exists for this benchmark):

- ``function``: the function's own time, as the sandbox reports it;
- ``read``: from the report's arrival, reading it, its outcome and the outputs (the
  worker);
- ``handover``: the rest: laying the inputs out and handing the context over (the
  worker), the sandbox's wake-up, mapping the context, reading the inputs, writing the
  outputs and reporting, and the worker's wake-up.  Not split further from outside: the
  sandbox, woken on the worker's CPU, often preempts the worker before its hand-over
  call returns and runs the function then;
- ``total``, and ``over bare`` = total − the bare call's median.

Each round runs in a fresh process of its own (an engine, its zygote, 20 invocations to
warm up); ``--before PYTHON`` runs every other round with another interpreter (the
virtualenv of a checkout before a change, which runs this same file), the order reversed
every other round.  Medians over all rounds; the load average before and after.

    python benchmarks/bench_handover.py [--rounds 4] [--n 100] [--gap 0.03]
                                        [--before PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PHASES = ("handover", "function", "read", "total", "bare")


def _round(n: int, gap: float) -> dict[str, Any]:
    """``n`` invocations through the engine, each after ``gap`` s of rest and followed by
    a bare call after the same rest: the samples of each phase in seconds, and on which
    CPUs the worker and the sandbox ran."""
    import numpy as np

    import dandelion as dd
    from dandelion.backends.engines.process import pool
    from dandelion.backends.engines.process.engine import ProcessEngine
    from dandelion.runtime.engine import FunctionCall

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.matmul import gram

    m = np.random.default_rng(0).integers(-100, 100, (128, 128), dtype=np.int64)
    impl = gram.spec.implementations[0]
    call = FunctionCall(gram.spec, impl, gram.artifact, 10.0)
    engine = ProcessEngine(reuse_sandboxes=True)
    samples: dict[str, list[float]] = {p: [] for p in PHASES}
    same_cpu = 0

    def once(record: bool) -> None:
        nonlocal same_cpu
        context = engine.domain.acquire()
        try:
            context.place([[dd.Item(m)]])
            t0 = time.perf_counter()
            started = engine.begin(context, call)
            while started is None:  # no sandbox ready yet (warming up)
                time.sleep(0.001)
                t0 = time.perf_counter()
                started = engine.begin(context, call)
            try:
                select.select([started.fd], [], [], 10)
                t2 = time.perf_counter()
                while not started.feed():
                    select.select([started.fd], [], [], 10)
                seconds = started.outcome()
                out = context.extract()
                t3 = time.perf_counter()
                assert out[0][0].value.shape == (128, 128)
                if record:
                    function = seconds or 0.0
                    for phase, value in (("handover", t2 - t0 - function),
                                         ("function", function), ("read", t3 - t2),
                                         ("total", t3 - t0)):
                        samples[phase].append(value)
                    same_cpu += _cpu(started.sandbox.pid) == _cpu(os.getpid())
            finally:
                started.end()
        finally:
            engine.domain.release(context)

    try:
        for _ in range(20):
            once(False)
            time.sleep(0.005)
        for _ in range(n):
            time.sleep(gap)
            once(True)
            time.sleep(gap)
            t = time.perf_counter()
            m @ m.T
            samples["bare"].append(time.perf_counter() - t)
        resets, discarded = engine.ahead.resets, engine.ahead.discarded
    finally:
        engine.close()
        pool.shutdown()
    return {"samples": samples, "same_cpu": same_cpu, "n": n, "resets": resets,
            "discarded": discarded}


def _cpu(pid: int) -> int:
    """The CPU process ``pid`` last ran on."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def main() -> None:
    """Run the rounds (each in a process of its own) and print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=100, help="invocations a round")
    ap.add_argument("--gap", type=float, default=0.03, help="seconds of rest before each")
    ap.add_argument("--before", metavar="PYTHON",
                    help="also run every other round with this interpreter, side by side")
    ap.add_argument("--round", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.round:  # one round, in this process: its samples on stdout
        print(json.dumps(_round(args.n, args.gap)))
        return
    pythons = [("this tree", sys.executable)]
    if args.before:
        pythons.append(("before", args.before))
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in pythons}
    load = os.getloadavg()[0]
    print(f"bench_handover: {args.rounds} rounds of {args.n}, {args.gap * 1e3:g} ms of rest "
          f"before each; load {load:.2f}", flush=True)
    for r in range(args.rounds):
        for label, python in (pythons if r % 2 == 0 else pythons[::-1]):
            out = subprocess.run([python, __file__, "--round", "--n", str(args.n), "--gap",
                                  str(args.gap)], check=True, capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parents[1])
            one = json.loads(out.stdout.strip().splitlines()[-1])
            results[label].append(one)
            total = statistics.median(one["samples"]["total"]) * 1e3
            print(f"  round {r} {label:9s} total p50 {total:.3f} ms (load "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
    print(f"medians over all rounds, µs (load {load:.2f} before, {os.getloadavg()[0]:.2f} "
          "after):")
    print(f"  {'':9s} " + " ".join(f"{p:>9s}" for p in PHASES) + "  over bare  same CPU")
    for label, rounds in results.items():
        med = {p: statistics.median(s for one in rounds for s in one["samples"][p]) * 1e6
               for p in PHASES}
        n = sum(one["n"] for one in rounds)
        same = sum(one["same_cpu"] for one in rounds)
        discarded = sum(one["discarded"] for one in rounds)
        print(f"  {label:9s} " + " ".join(f"{med[p]:9.1f}" for p in PHASES) +
              f"  {med['total'] - med['bare']:9.1f}  {same / n:7.0%}"
              + (f"  ({discarded} discarded)" if discarded else ""))


if __name__ == "__main__":
    main()
