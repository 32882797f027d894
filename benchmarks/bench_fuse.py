"""Fusion (issue 16): a chain of functions linked 1:1 in one sandbox invocation per instance.

All numbers are wall times relative to a baseline measured in the same run (medians over
repetitions, one warm-up each; the fused and unfused runtimes alive together, taking
turns, their order alternating), with the result cache off so that every run computes, on
the local backend with the ``process`` engine:

1. a ``--length`` (100) long chain, fused (the default) against ``fuse=False`` (every member
   in a sandbox of its own), for two functions: the paper's 128x128 int64 M·Mᵀ, and
   ``x + 1`` (where the sandbox is all of the cost).  The issue's target, "100-long chain
   on ``process``, fused vs unfused: >= 5x faster", is judged on each and said per line:
   fusion saves a sandbox per member, so a chain's speed-up is at most
   1 + (a sandbox's cost / the member's own time), which the per-member times printed
   show — ``x + 1`` meets it by far, an M·Mᵀ chain (a few ms of compute per member) cannot;
2. the same chain repeated over ``--width`` (8) items (``each`` -> ``each``), fused and not,
   so that both workers are busy;
3. a composition that cannot be fused (one application, a ``--fanout``-way fan-out of
   M·Mᵀ): fusion on against off (target: unchanged within noise);
4. what marking each member's end in the captured output costs a chain whose members print
   nothing (:func:`dandelion.runtime.logs.end_member`, so that what a member prints is shown
   under its name): the ``--length``-long ``x + 1`` chain's
   :meth:`~dandelion.runtime.fused.FusedFunction.invoke` under the inline engine's capture,
   against the same with a no-op in its place, alternating.

    python benchmarks/bench_fuse.py [--length 100] [--repeat 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np

import dandelion as dd


@dd.compute
def mmt(m: np.ndarray) -> np.ndarray:
    return m @ m.T


@dd.compute
def inc(x: int) -> int:
    return x + 1


def chain_of(fn: Any, annotation: Any, length: int, each: bool) -> Any:
    """A composition applying ``fn`` ``length`` times in a row, to one item or to each item
    of a set."""
    def chain(x: Any) -> Any:
        for _ in range(length):
            x = fn(dd.each(x)) if each else fn(x)
        return x

    chain.__name__ = f"{fn.name}_chain{'_each' if each else ''}"
    chain.__annotations__ = ({"x": list[annotation], "return": list[annotation]} if each
                             else {"x": annotation, "return": annotation})
    return dd.composition(chain)


@dd.composition
def fan_out(ms: list[np.ndarray]) -> list[np.ndarray]:
    return mmt(dd.each(ms))


def same(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(a, b))


def marks_cost(length: int, rounds: int = 10, reps: int = 2000) -> dict[str, float]:
    """Part 4: seconds per chain instance (median of ``rounds``), with the member marks
    and with a no-op in their place."""
    from dandelion.items import Item
    from dandelion.runtime import fused, logs

    artifact = inc.artifact
    chain = fused.FusedFunction("inc_chain", [artifact] * length,
                                [[(("in", 0), True)]] + [[(("link", 0), True)]] * (length - 1),
                                [(length - 1, 0)], artifact.params, [[0]] * length)
    inputs = [[Item(1)]]
    real = fused.end_member
    times: dict[str, list[float]] = {"marks": [], "no-op": []}
    try:
        for r in range(rounds):
            for name in (("marks", "no-op") if r % 2 else ("no-op", "marks")):
                fused.end_member = real if name == "marks" else (lambda name: None)
                logs.begin_capture()
                start = time.perf_counter()
                for _ in range(reps):
                    chain.invoke(inputs)
                times[name].append((time.perf_counter() - start) / reps)
                logs.end_capture()
    finally:
        fused.end_member = real
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    m = rng.integers(0, 10, (128, 128), dtype=np.int64)
    ms = [rng.integers(0, 10, (128, 128), dtype=np.int64) for _ in range(args.fanout)]
    cases: list[tuple[str, Any, tuple[Any, ...]]] = [
        (f"{args.length}-long chain of M@M.T", chain_of(mmt, np.ndarray, args.length, False),
         (m,)),
        (f"{args.length}-long chain of x+1", chain_of(inc, int, args.length, False), (1,)),
        (f"{args.length}-long chain of M@M.T over {args.width} items (each)",
         chain_of(mmt, np.ndarray, args.length, True), (ms[:args.width],)),
        (f"{args.fanout}-way fan-out of M@M.T (nothing to fuse)", fan_out, (ms,)),
    ]
    print(f"local backend, process engine, {args.workers} workers, cache off, median of "
          f"{args.repeat}; load average {os.getloadavg()[0]:.1f}")
    print(f"  {'composition':52s} {'unfused s':>10s} {'fused s':>8s} {'speed-up':>9s}  "
          "per member unfused / fused; target")
    for case, (name, comp, inputs) in enumerate(cases):
        # both runtimes alive, the order alternating: a run's pool forks its next
        # sandboxes in the background, which would slow whichever runs right after it
        rts = {fuse: dd.Runtime(engine="process", workers=args.workers, cache=False,
                                fuse=fuse) for fuse in (False, True)}
        try:
            results = {fuse: rt.run(comp, *inputs) for fuse, rt in rts.items()}  # warm-up
            times: dict[bool, list[float]] = {False: [], True: []}
            for rep in range(args.repeat):
                for fuse in ((False, True) if rep % 2 else (True, False)):
                    start = time.perf_counter()
                    results[fuse] = rts[fuse].run(comp, *inputs)
                    times[fuse].append(time.perf_counter() - start)
        finally:
            for rt in rts.values():
                rt.close()
        if not same(results[True], results[False]):
            raise SystemExit(f"{name}: fused and unfused results differ")
        seconds = {fuse: statistics.median(t) for fuse, t in times.items()}
        speedup = seconds[False] / seconds[True]
        if case < 2:  # the 100-long chain on process, one function each
            verdict = (f"{1e3 * seconds[False] / args.length:.2f} / "
                       f"{1e3 * seconds[True] / args.length:.2f} ms; target >= 5x: "
                       f"{'met' if speedup >= 5 else 'missed'}")
        elif case == len(cases) - 1:
            verdict = "target: unchanged within noise"
        else:
            verdict = ""
        print(f"  {name:52s} {seconds[False]:10.3f} {seconds[True]:8.3f} "
              f"{speedup:8.2f}x  {verdict}")
    cost = marks_cost(args.length)
    print(f"  member marks, {args.length}-long chain of x+1 printing nothing, in-process: "
          f"{1e6 * cost['no-op']:.1f} -> {1e6 * cost['marks']:.1f} us per chain instance "
          f"({1e6 * (cost['marks'] - cost['no-op']) / args.length:.2f} us per member)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
