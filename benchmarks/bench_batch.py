"""Batching (issue 16): many instances of one application per sandbox invocation.

All numbers are throughputs relative to a baseline measured in the same run (medians over
repetitions), with the result cache off so that every run computes:

1. the 1,000-way fan-out of the paper's 128×128 int64 M·Mᵀ on the local backend: the
   ``process`` engine one instance per sandbox (``batch=1``), batched as the worker chooses,
   and with a vectorised implementation, each against the ``inline`` engine's per-instance
   implementation (targets: batched >= 0.8x, vectorised >= 2x);
2. a composition that cannot be batched (one application, one instance) on ``process``:
   with batching on against ``batch=1`` (target: unchanged within noise).

Two vectorised implementations are measured: ``np.matmul`` over the stacked int64 array
(the same arithmetic as the per-instance function), and the same product computed in
float64 through BLAS, exact because every entry of the products stays below 2**53 (checked).

    python benchmarks/bench_batch.py [--fanout 1000] [--repeat 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from typing import Any, Callable

import numpy as np

import dandelion as dd

N = 128


@dd.compute
def gram(m: np.ndarray) -> np.ndarray:
    return m @ m.T


@dd.compute
def gram_stacked(m: np.ndarray) -> np.ndarray:
    return m @ m.T


@gram_stacked.vectorised
def gram_stacked_many(ms: np.ndarray) -> np.ndarray:
    return np.matmul(ms, ms.transpose(0, 2, 1))


@dd.compute
def gram_blas(m: np.ndarray) -> np.ndarray:
    return m @ m.T


@gram_blas.vectorised
def gram_blas_many(ms: np.ndarray) -> np.ndarray:
    bound = int(np.abs(ms).max()) if ms.size else 0
    if bound * bound * ms.shape[-1] >= 2 ** 53:  # float64 would round: stay in int64
        return np.matmul(ms, ms.transpose(0, 2, 1))
    f = ms.astype(np.float64)
    return np.matmul(f, f.transpose(0, 2, 1)).astype(np.int64)


@dd.composition
def fan(ms: list[np.ndarray]) -> list[np.ndarray]:
    return gram(dd.each(ms))


@dd.composition
def fan_stacked(ms: list[np.ndarray]) -> list[np.ndarray]:
    return gram_stacked(dd.each(ms))


@dd.composition
def fan_blas(ms: list[np.ndarray]) -> list[np.ndarray]:
    return gram_blas(dd.each(ms))


@dd.composition
def single(m: np.ndarray) -> np.ndarray:
    return gram(m)


def median_time(run: Callable[[], Any], repeat: int, check: Callable[[Any], bool]) -> float:
    times = []
    run()  # warm: zygotes, the artifact store, the batch measurements
    for _ in range(repeat):
        started = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - started)
        assert check(out), "wrong result"
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fanout", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ms = [rng.integers(-100, 100, size=(N, N), dtype=np.int64) for _ in range(args.fanout)]
    expected = [m @ m.T for m in ms]

    def exact(out: Any) -> bool:
        return len(out) == len(expected) and all(np.array_equal(o, e)
                                                 for o, e in zip(out, expected))

    print(f"load average before: {os.getloadavg()}  workers: {args.workers}  "
          f"fan-out: {args.fanout}  repeat: {args.repeat}")
    cases = [("inline, per instance", "inline", None, fan),
             ("process, batch=1 (one sandbox each)", "process", 1, fan),
             ("process, batched (chosen)", "process", None, fan),
             ("process, vectorised (stacked int64)", "process", None, fan_stacked),
             ("process, vectorised (float64 BLAS, exact)", "process", None, fan_blas),
             ("inline, vectorised (float64 BLAS, exact)", "inline", None, fan_blas)]
    times: dict[str, float] = {}
    for label, engine, batch, comp in cases:
        with dd.Runtime(engine=engine, workers=args.workers, cache=False, batch=batch) as rt:
            times[label] = median_time(functools.partial(rt.run, comp, ms), args.repeat, exact)
        print(f"  {label:44s} {times[label]:7.3f} s  "
              f"{args.fanout / times[label]:8.1f} inst/s")
    base = times["inline, per instance"]
    print("throughput relative to inline, per instance:")
    for label, t in times.items():
        print(f"  {label:44s} {base / t:6.2f}x")

    m = ms[0]
    single_times = {}
    for batch in (1, None):
        with dd.Runtime(engine="process", workers=args.workers, cache=False,
                        batch=batch) as rt:
            single_times[batch] = median_time(functools.partial(rt.run, single, m),
                                              20 * args.repeat,
                                              lambda out: np.array_equal(out, expected[0]))
    print(f"single application on process: batch=1 {single_times[1] * 1e3:.2f} ms, "
          f"batching on {single_times[None] * 1e3:.2f} ms "
          f"(ratio {single_times[None] / single_times[1]:.2f})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
