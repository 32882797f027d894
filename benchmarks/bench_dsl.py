"""Parse + lower + verify of a 10,000-application composition (issue 3).

The composition is a layered DAG written in the ``.dd`` notation: stages of ``for each``
fan-outs, keyed joins and whole-set reductions, every set declared with its type, each
application on its own line (about 0.9 MB of text).  Timed phases, median of ``--repeat``:

* parse: text -> syntax tree (lark LALR, transformer run during parsing);
* lower+verify: syntax tree -> IR -> :func:`dandelion.ir.verify`;
* total: :func:`dandelion.dsl.parse` end to end;
* baseline, same run: :func:`dandelion.ir.from_json` of the same IR (reading the IR from its
  JSON form, the cheapest way to get it from text), so the DSL's cost is also a ratio.

Peak memory of one total run is measured with :mod:`tracemalloc` in a separate pass (it
slows the code down, so it is not timed).  CPU time is reported next to wall time because
the developer machine is shared.

    python benchmarks/bench_dsl.py [--apps 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from typing import Any, Callable

import dandelion.dsl as dsl
from dandelion.dsl.api import _paused_gc, compile_text
from dandelion.dsl.diagnostics import Report, Source
from dandelion.dsl.parser import parse_ast
from dandelion.ir import from_json, to_json, verify

HEADER = """\
function split(item[str] doc) -> set[str] words
function score(item[str] word, item[int] weight) -> item[int]
function merge(set[int] left, set[int] right) -> set[int]
function total(set[int] parts) -> item[int]
"""


def program(apps: int) -> str:
    """A ``.dd`` composition with exactly ``apps`` applications."""
    lines = ["input set[str] docs", "input item[int] weight"]
    body: list[str] = []
    sets: list[tuple[str, str]] = []  # (name, type)
    n = 0
    stage = 0
    while n < apps:
        s = f"s{stage}"
        kind = stage % 4
        prev = f"s{stage - 1}"
        if kind == 0 or stage == 0:
            body.append(f"{s} = for each d in docs :\n    split(d)")
            sets.append((s, "set[str]"))
        elif kind == 1:
            body.append(f"{s} = for each w in {prev} :\n    score(w, weight)")
            sets.append((s, "set[int]"))
        elif kind == 2:
            body.append(f"{s} = for each key l in {prev}, each key r in s{stage - 1} "
                        f"by l inner r :\n    merge(l, r)")
            sets.append((s, "set[int]"))
        else:
            body.append(f"{s} = total({prev})")
            sets.append((s, "item[int]"))
        n += 1
        stage += 1
    last, last_type = sets.pop()
    lines.append(f"output {last_type} {last}")
    lines += [f"ephemeral {t} {name}" for name, t in sets]
    return HEADER + "\n".join(lines + [""] + body) + "\n"


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) of ``repeat`` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    text = program(args.apps)
    module = dsl.parse(text, "bench.dd")
    comp = module.compositions[0]
    assert len(comp.applications) == args.apps
    as_json = to_json(module)
    print(f"{args.apps} applications, {len(text) / 1e6:.2f} MB of .dd text, "
          f"{len(as_json) / 1e6:.2f} MB of IR JSON")

    def parse_only() -> None:
        with _paused_gc():  # as compile_text does
            parse_ast(text, "bench.dd", "dd", Report(Source(text, "bench.dd")))

    def lower_verify() -> None:
        compile_text(text, "bench.dd")

    rows = [
        ("parse (text -> syntax tree)", timed(parse_only, args.repeat)),
        ("total: parse + lower + verify", timed(lower_verify, args.repeat)),
        ("verify alone", timed(lambda: verify(module), args.repeat)),
        ("baseline: from_json of the IR", timed(lambda: from_json(as_json), args.repeat)),
    ]
    base_wall = rows[-1][1][0]
    for label, (wall, cpu) in rows:
        print(f"  {label:32s} {wall * 1e3:8.1f} ms wall  {cpu * 1e3:8.1f} ms cpu  "
              f"{wall / base_wall:5.1f}x baseline")
    total_wall, total_cpu = rows[1][1]
    print(f"  per application: {total_cpu / args.apps * 1e6:.1f} us cpu; target < 1 s total: "
          f"wall {'met' if total_wall < 1 else 'NOT met'}, "
          f"cpu {'met' if total_cpu < 1 else 'NOT met'}")

    tracemalloc.start()
    compile_text(text, "bench.dd")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  peak memory of one parse + lower + verify: {peak / 2**20:.1f} MiB "
          f"(text {len(text) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
