"""What a large input costs a sandbox (issue 17): a Python function reading one ``bytes``
item and returning its length, on the process engine against the inline engine, per input
size, every number from one run.

Per size and engine, rounds alternate between the two engines (noise falls on both alike);
each invocation is timed end to end as a runtime makes it (acquire a context, place the
item, run, extract, release).  For the process engine the time is split into:

- *layout*: the worker laying the input into a context (``SharedContext.layout``, timed on
  a context of its own with the same input);
- *sandbox*: the rest of ``run``: handing the context over, the sandbox mapping it and
  copying the input into the ``bytes`` object the function receives, the function, its
  report;
- *wipe*: zeroing what the invocation wrote (``release``);
- *faults*: the minor page faults of a sandbox per invocation (what its zygote has reaped,
  from ``/proc/<zygote>/stat``: a sandbox is the zygote's child).

    python benchmarks/bench_inputs.py [--sizes 1,64,1024,4096,16384] [--rounds 30]

Sizes are in KiB.  Times are the fastest round (the machine may be shared: its load average
is printed); faults are the mean over the rounds.  To compare two trees, run this script
alternately with each tree's Python.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import dandelion as dd
from dandelion.backends.engines.inline import InlineEngine
from dandelion.backends.engines.process import pool
from dandelion.backends.engines.process.engine import ProcessEngine
from dandelion.backends.engines.process.memory import SharedContext
from dandelion.items import Item
from dandelion.runtime.engine import Engine, FunctionCall

MS = 1e3


@dd.compute
def size(data: bytes) -> int:
    """The length of ``data``: reads one bytes item, writes 8 bytes."""
    return len(data)


def reaped_faults() -> int:
    """Minor page faults of every sandbox the process engine's zygotes have reaped."""
    total = 0
    for zygote in pool.running():
        with open(f"/proc/{zygote.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[8])  # cminflt: field 11, the 9th after the command's name
    return total


def invoke(engine: Engine, call: FunctionCall, inputs: list[list[Item[Any]]]
           ) -> tuple[float, float, float]:
    """One invocation end to end: (total, run, release) seconds."""
    t0 = time.perf_counter()
    ctx = engine.domain.acquire()
    ctx.place(inputs)
    t1 = time.perf_counter()
    engine.run(ctx, call)
    t2 = time.perf_counter()
    ctx.extract()
    t3 = time.perf_counter()
    engine.domain.release(ctx)
    t4 = time.perf_counter()
    return t4 - t0, t2 - t1, t4 - t3


def layout_time(engine: ProcessEngine, inputs: list[list[Item[Any]]]) -> float:
    """Seconds the worker takes to lay ``inputs`` into a context (one already grown)."""
    ctx = engine.domain.acquire()
    assert isinstance(ctx, SharedContext)
    try:
        ctx.place(inputs)
        ctx.layout([("data", 1)], [("result", 0)], b"\0", engine.output_limit)
        ctx.wipe()
        ctx.place(inputs)
        t = time.perf_counter()
        ctx.layout([("data", 1)], [("result", 0)], b"\0", engine.output_limit)
        return time.perf_counter() - t
    finally:
        engine.domain.release(ctx)


def measure(kib: int, rounds: int, process: ProcessEngine, inline: InlineEngine,
            call: FunctionCall) -> dict[str, float]:
    inputs = [[Item(os.urandom(64) * (kib * 16))]]
    for _ in range(3):  # warm: the context grows to the size, the zygote loads the function
        invoke(process, call, inputs)
        invoke(inline, call, inputs)
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = min(best.get(name, value), value)

    faults = reaped_faults()
    for _ in range(rounds):
        total, run, wipe = invoke(process, call, inputs)
        keep("process", total)
        keep("run", run)
        keep("wipe", wipe)
        keep("inline", invoke(inline, call, inputs)[0])
        keep("layout", layout_time(process, inputs))
    for zygote in pool.running():
        zygote.settle()  # the last sandboxes reaped
    best["faults"] = (reaped_faults() - faults) / rounds
    return best


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,64,1024,4096,16384",
                    help="input sizes in KiB, comma-separated")
    ap.add_argument("--rounds", type=int, default=30, help="rounds per size")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {load()}")
    process, inline = ProcessEngine(), InlineEngine()
    call = FunctionCall(size.spec, size.spec.implementations[0], size.artifact)
    fmt: Callable[[float], str] = lambda s: f"{s * MS:8.2f}"  # noqa: E731
    print(f"{'input':>9} {'inline':>8} {'process':>8} {'layout':>8} {'sandbox':>8} "
          f"{'wipe':>8} {'faults':>8}   (ms, fastest of {args.rounds}; faults per sandbox)")
    try:
        for kib in sizes:
            r = measure(kib, args.rounds, process, inline, call)
            print(f"{kib:>5} KiB {fmt(r['inline'])} {fmt(r['process'])} {fmt(r['layout'])} "
                  f"{fmt(r['run'] - r['layout'])} {fmt(r['wipe'])} {r['faults']:8.0f}")
    finally:
        process.close()
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
