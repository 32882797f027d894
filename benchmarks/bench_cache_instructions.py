"""Instructions of the cache's work on an all-miss run, counted where the machine's load does
not change them: a process making ``N`` runs of the matrix composition (``inline``, each on a
new matrix, after 10 runs to warm up), all missing a memory store (``miss``) or uncached
(``plain``), run under ``valgrind --tool=callgrind``; the difference between ``N`` runs and
none, divided by ``N``, is one run, and an all-miss run less an uncached one is the cache's
work (docs/caching.rst)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/bench_cache_instructions.py miss 200   # then: miss 0, plain 200,
                                                                 # plain 0 ("Collected")
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dandelion as dd
from dandelion.cache import MemoryStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.matmul import example_matrix, matmul  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=("miss", "plain"))
    ap.add_argument("runs", type=int)
    args = ap.parse_args()
    fresh = [example_matrix(seed) for seed in range(1, args.runs + 11)]
    cache = MemoryStore() if args.mode == "miss" else False
    with dd.Runtime(engine="inline", workers=1, cache=cache) as rt:
        for m in fresh:
            rt.run(matmul, m)


if __name__ == "__main__":
    main()
