"""Start-up time of the ``dandelion`` command (issue 13: ``--version`` imported the server).

Every command pays for what the ``dandelion`` entry point imports before it parses its
arguments, so the cheapest commands show it best.  Timed, as the wall time of a fresh process
(median and minimum of ``--repeat`` runs, the runs of all commands interleaved so that a
burst of load on a shared machine hits them alike):

* baseline, same run: ``python -c pass`` (the interpreter's own start-up) and
  ``python -c "import dandelion"`` (the public API's eager part);
* ``dandelion --version``, ``dandelion --help``, ``dandelion fmt --check FILE.dd`` and
  ``dandelion check FILE.dd`` (the last two parse a DSL file: they need the parser).

``--dandelion PATH`` times another installation's command (e.g. a checkout of an older
commit in its own virtualenv), for a before/after in the same run::

    python benchmarks/bench_cli.py [--repeat 21] [--dandelion OTHER/bin/dandelion]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "wordcount.dd")


def commands(dandelion: list[str]) -> dict[str, list[str]]:
    """Label -> command line, baselines first."""
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import dandelion'": [sys.executable, "-c", "import dandelion"],
        "dandelion --version": [*dandelion, "--version"],
        "dandelion --help": [*dandelion, "--help"],
        "dandelion fmt --check FILE.dd": [*dandelion, "fmt", "--check", EXAMPLE],
        "dandelion check FILE.dd": [*dandelion, "check", EXAMPLE],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--dandelion", action="append", default=[],
                        help="another dandelion command to time as well (repeatable)")
    args = parser.parse_args()
    runs = {"this checkout": commands([sys.executable, "-m", "dandelion"])}
    for other in args.dandelion:
        runs[other] = {k: v for k, v in commands([other]).items() if k.startswith("dandelion")}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for who, table in runs.items():
            for label, argv in table.items():
                start = time.perf_counter()
                subprocess.run(argv, capture_output=True, cwd=ROOT, check=False)
                times.setdefault((who, label), []).append(time.perf_counter() - start)
    base = statistics.median(times[("this checkout", "python -c pass")])
    print(f"{'command':34} {'installation':>24} {'median ms':>10} {'min ms':>8} "
          f"{'x python':>9}")
    for (who, label), values in times.items():
        median = statistics.median(values)
        print(f"{label:34} {who[-24:]:>24} {median * 1e3:10.1f} {min(values) * 1e3:8.1f} "
              f"{median / base:9.2f}")


if __name__ == "__main__":
    main()
