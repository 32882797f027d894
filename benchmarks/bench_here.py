"""A script's run of one function on ``process``: driven from the calling thread, against
handed to a worker thread (the dispatcher's path), in one process, taking turns.

``Runtime.run`` of a plan that is one call of one instance is driven by the calling thread
itself where the engine can begin a function without waiting for it
(:mod:`dandelion.runtime.here`); before, the dispatcher handed the instance to a worker
thread of the pool, which ran it in a generic sandbox and woke the caller.  Both paths are
timed here in the same process, on two runtimes of the same engine settings, taking turns
run by run (the second runtime's pool told it cannot begin: ``pool.begins = False``, which
sends every run down the dispatcher's path, as before this change):

1. the paper's matrix function (128×128 int64 M·Mᵀ, numpy in the sandbox), a new input each
   run, one run at a time: median, 90th and 99th percentiles of the whole run (wall), and
   the calling process's CPU time per run;
2. a Python no-op (``x + 1``), the same way: the path's own cost.

    python benchmarks/bench_here.py [--runs 1001]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import dandelion as dd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.matmul import example_matrix, matmul  # noqa: E402


@dd.compute
def plus_one(x: int) -> int:
    return x + 1


def turns(runs: int, fn: Callable[[Any], Any], inputs: Callable[[int], Any]
          ) -> dict[str, tuple[list[float], list[float]]]:
    """Per path, the wall and CPU seconds of each of ``runs`` runs of ``fn`` taking turns
    (which path goes first alternates), on ``inputs(i)``, new to each run."""
    out: dict[str, tuple[list[float], list[float]]] = {"here": ([], []), "worker": ([], [])}
    with contextlib.ExitStack() as stack:
        here = stack.enter_context(dd.Runtime(engine="process", workers=2, cache=False))
        worker = stack.enter_context(dd.Runtime(engine="process", workers=2, cache=False))
        worker.backend.pool.begins = False  # type: ignore[attr-defined]
        pair = [("here", here), ("worker", worker)]
        for i in range(10):  # the zygotes started, the function's sandboxes made ready
            for _, rt in pair:
                rt.run(fn, inputs(-1 - i))
        for i in range(runs):
            for name, rt in pair if i % 2 else pair[::-1]:
                value = inputs(2 * i + (name == "worker"))
                c0, t0 = time.process_time(), time.perf_counter()
                rt.run(fn, value)
                out[name][0].append(time.perf_counter() - t0)
                out[name][1].append(time.process_time() - c0)
    return out


def report(title: str, measured: dict[str, tuple[list[float], list[float]]]) -> None:
    print(f"\n{title}")
    medians = {}
    for name, (wall, cpu) in measured.items():
        ordered = sorted(wall)
        n = len(ordered)
        medians[name] = statistics.median(wall)
        print(f"   {name:7} median {medians[name] * 1e6:8.0f} µs   p90 "
              f"{ordered[int(n * 0.9)] * 1e6:8.0f}   p99 {ordered[int(n * 0.99)] * 1e6:8.0f}"
              f"   CPU of this process {statistics.median(cpu) * 1e6:6.0f} µs")
    print(f"   driven from the calling thread: {medians['worker'] / medians['here']:.2f}x "
          "faster (ratio of the medians)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1001)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    matrices = {i: example_matrix(i + 20) for i in range(-10, 2 * args.runs)}
    report("1. matrix M·Mᵀ (128x128 int64), process engine, 2 workers, a new input each run",
           turns(args.runs, matmul, matrices.__getitem__))
    report("2. Python no-op (x + 1), process engine, 2 workers",
           turns(args.runs, plus_one, lambda i: i))


if __name__ == "__main__":
    main()
