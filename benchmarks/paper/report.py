"""The table and figures of the paper's experiment, from its results file.

    python benchmarks/paper/report.py [benchmarks/results/paper.json] [--rst docs/performance.rst]

``run.py`` calls :func:`write` after a run; run alone, this regenerates ``paper.txt``, the
figures and (with ``--rst``) the documentation page from the committed ``paper.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SLO_MS = 50.0
MIXES = (1.0, 0.95, 0.90)
FIXED_BASELINES = ("aiohttp", "fresh", "rayserve")  # the same at every mix (no cold code)


def ok_level(lv: dict[str, Any]) -> bool:
    """A level without more than 1% refused, timed-out or failed requests."""
    return lv["rejected"] + lv["timeouts"] + lv["failed"] <= 0.01 * lv["sent"]


def passes(lv: dict[str, Any], bound: float) -> bool:
    """Whether a level counts towards a peak at p99 within ``bound`` seconds."""
    return ok_level(lv) and lv["p99"] is not None and lv["p99"] <= bound


def rates(levels: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The levels grouped by offered rate, in increasing rate: the runs of each rate
    (``run.py`` runs a level a second time where that can change a peak, :func:`rerun`),
    in the order they ran.

    >>> rates([{"offered": 200, "seed": 1}, {"offered": 100}, {"offered": 200, "seed": 2}])
    [[{'offered': 100}], [{'offered': 200, 'seed': 1}, {'offered': 200, 'seed': 2}]]
    """
    by_rate: dict[float, list[dict[str, Any]]] = {}
    for lv in levels:
        by_rate.setdefault(lv["offered"], []).append(lv)
    return [by_rate[rate] for rate in sorted(by_rate)]


def fails(runs: list[dict[str, Any]], bound: float) -> bool:
    """Whether a rate fails at ``bound``: every one of its runs fails (:func:`passes`).  A
    rate run once fails with its one run; a rate run twice fails only if it fails twice, so
    that one busy moment of a shared machine does not end a peak (the same rule for every
    system).

    >>> lv = lambda p99: {"offered": 100, "achieved": 100, "p99": p99, "sent": 100,
    ...                   "rejected": 0, "timeouts": 0, "failed": 0}
    >>> [fails(runs, 0.05) for runs in ([lv(0.09)], [lv(0.09), lv(0.03)],
    ...                                 [lv(0.09), lv(0.06)])]
    [True, False, True]
    """
    return not any(passes(lv, bound) for lv in runs)


def bracket(levels: list[dict[str, Any]], bound: float) -> tuple[float, float] | None:
    """The offered rates between which a peak at p99 within ``bound`` seconds lies: the last
    rate that passes and the first that fails, in increasing offered rate (:func:`peak`'s
    reading, :func:`fails`); ``None`` when no rate fails, or none passes before the first
    failure (nothing to narrow).

    >>> lv = lambda rate, p99: {"offered": rate, "achieved": rate, "p99": p99, "sent": 100,
    ...                         "rejected": 0, "timeouts": 0, "failed": 0}
    >>> bracket([lv(100, 0.02), lv(180, 0.02), lv(324, 0.09)], 0.05)
    (180, 324)
    >>> bracket([lv(100, 0.02), lv(180, 0.09), lv(324, 0.04), lv(134, 0.03)], 0.05)
    (134, 180)
    >>> [bracket([lv(100, p99), lv(180, 0.04)], 0.05) for p99 in (0.02, 0.09)]
    [None, None]

    A rate that failed once and passed when run again is no bracket's upper end:

    >>> bracket([lv(100, 0.02), lv(180, 0.09), lv(180, 0.03), lv(324, 0.09)], 0.05)
    (180, 324)
    """
    last = None
    for runs in rates(levels):
        if fails(runs, bound):
            return None if last is None else (last, runs[0]["offered"])
        last = runs[0]["offered"]
    return None


def edge(levels: list[dict[str, Any]], bound: float) -> float | None:
    """How narrowly the peak at p99 within ``bound`` seconds was read: the first failing
    offered rate over the last passing one (:func:`bracket`), or ``None``.

    >>> lv = lambda rate, p99: {"offered": rate, "achieved": rate, "p99": p99, "sent": 100,
    ...                         "rejected": 0, "timeouts": 0, "failed": 0}
    >>> edge([lv(100, 0.02), lv(180, 0.09), lv(134, 0.03)], 0.05)
    1.3432835820895523
    """
    found = bracket(levels, bound)
    return None if found is None else found[1] / found[0]


def resolution(grid: float, halvings: int) -> float:
    """How far apart (a ratio) the last passing and the first failing rate of a peak are
    once ``halvings`` levels have narrowed a step of the ``grid`` (``run.py --bisect``).

    >>> [round(resolution(1.8, n), 3) for n in (0, 1, 2)]
    [1.8, 1.342, 1.158]
    """
    return float(grid ** 0.5 ** halvings)


def bisect_rate(levels: list[dict[str, Any]], bounds: tuple[float, ...], within: float
                ) -> float | None:
    """The offered rate of the next level that narrows a peak down: halfway (geometrically)
    between the last rate that passes and the first that fails (:func:`bracket`) of the
    bound of ``bounds`` whose two rates are furthest apart, where that is more than
    ``within`` (a ratio, :func:`resolution`); ``None`` when every peak is narrowed to
    ``within``, or has nothing to narrow.  The same for every system and for each of its
    peaks (``run.py`` reads them at p99 <= 50 ms and <= 10x unloaded).

    The levels' grid steps 1.4× (1.8× with ``--quick``), so a peak read off it alone can
    be a step below the edge; each level run at this rate halves a step, and :func:`peak`
    reads the levels together, whatever order they ran in:

    >>> lv = lambda rate, p99: {"offered": rate, "achieved": rate, "p99": p99, "sent": 100,
    ...                         "rejected": 0, "timeouts": 0, "failed": 0}
    >>> levels = [lv(100, 0.02), lv(180, 0.03), lv(324, 0.09)]
    >>> round(bisect_rate(levels, (0.05,), 1.16))
    241
    >>> round(bisect_rate(levels + [lv(241, 0.09)], (0.05,), 1.16))  # (180, 241)
    208
    >>> round(bisect_rate(levels + [lv(241, 0.09)], (0.05, 0.025), 1.16))  # (100, 180)
    134
    >>> bisect_rate(levels + [lv(241, 0.09), lv(208, 0.03)], (0.05,), 1.16) is None
    True
    >>> bisect_rate([lv(100, 0.02), lv(180, 0.04)], (0.05,), 1.16) is None
    True
    """
    brackets = [b for b in (bracket(levels, bound) for bound in bounds)
                if b and b[1] / b[0] > within * (1 + 1e-9)]
    if not brackets:
        return None
    low, high = max(brackets, key=lambda b: b[1] / b[0])
    return float((low * high) ** 0.5)


def descent_rate(levels: list[dict[str, Any]], bounds: tuple[float, ...], step: float,
                 floor: float = 1.0) -> float | None:
    """The offered rate of the next level below a sweep's lowest: ``step`` times lower than
    the lowest rate, where that rate fails one of ``bounds`` (:func:`fails`), so that a peak
    is read rather than 0 (a busy machine can fail a system's first level); ``None`` where
    the lowest rate passes every bound, or the next would be below ``floor`` req/s.

    >>> lv = lambda rate, p99: {"offered": rate, "achieved": rate, "p99": p99, "sent": 100,
    ...                         "rejected": 0, "timeouts": 0, "failed": 0}
    >>> round(descent_rate([lv(12, 0.2), lv(21.6, 0.3)], (0.05, 0.12), 1.8), 2)
    6.67
    >>> descent_rate([lv(12, 0.02), lv(21.6, 0.3)], (0.05, 0.12), 1.8) is None
    True
    >>> descent_rate([lv(1.5, 0.2)], (0.05,), 1.8) is None
    True
    """
    lowest = rates(levels)[0]
    rate = float(lowest[0]["offered"]) / step
    return rate if rate >= floor and any(fails(lowest, bound) for bound in bounds) else None


def rerun(levels: list[dict[str, Any]], level: dict[str, Any], bounds: tuple[float, ...]
          ) -> bool:
    """Whether ``run.py`` runs ``level`` (just run, not yet among ``levels``) a second
    time: it fails one of the ``bounds`` a peak is read at, and no lower rate of
    ``levels`` failed that bound already (a peak is read below the first failing rate, so
    only there can a second run change it).  The same rule for every system: where one
    busy moment failed a level, its second run decides (:func:`fails`).

    >>> lv = lambda rate, p99: {"offered": rate, "achieved": rate, "p99": p99, "sent": 100,
    ...                         "rejected": 0, "timeouts": 0, "failed": 0}
    >>> rerun([lv(100, 0.02)], lv(180, 0.08), (0.05,))
    True
    >>> rerun([lv(100, 0.02)], lv(180, 0.03), (0.05,))
    False
    >>> rerun([lv(100, 0.09), lv(100, 0.08)], lv(180, 0.08), (0.05,))  # 100 failed twice
    False
    >>> rerun([lv(100, 0.09), lv(100, 0.08)], lv(180, 0.2), (0.05, 0.1))  # not at 0.1 s
    True
    """
    lower = [lv for lv in levels if lv["offered"] < level["offered"]]
    return any(not passes(level, bound)
               and not any(fails(runs, bound) for runs in rates(lower))
               for bound in bounds)


def edge_late(levels: list[dict[str, Any]], bound: float) -> float | None:
    """The load generator's lateness (p99, seconds) at the first rate that fails
    ``bound`` (:func:`peak`'s reading), where that lateness may have failed it: a run of
    that rate failed by its p99 alone (nothing refused, timed out or failed), and its p99
    less the generator's lateness is within the bound (a request's latency counts from its
    scheduled arrival, so a late generator adds to it).  ``None`` where the system failed
    that rate on its own, or no rate fails.

    >>> lv = lambda rate, p99, late: {"offered": rate, "achieved": rate, "p99": p99,
    ...     "sent": 100, "rejected": 0, "timeouts": 0, "failed": 0, "late_p99": late}
    >>> edge_late([lv(100, 0.02, 0.001), lv(200, 0.055, 0.012), lv(300, 0.2, 0.03)], 0.05)
    0.012
    >>> edge_late([lv(100, 0.02, 0.001), lv(200, 0.09, 0.012), lv(300, 0.2, 0.03)], 0.05)
    """
    for runs in rates(levels):
        if fails(runs, bound):
            for lv in runs:
                late = lv.get("late_p99") or 0.0
                if ok_level(lv) and lv["p99"] is not None and lv["p99"] - late <= bound:
                    return late
            return None
    return None


def peak(levels: list[dict[str, Any]], bound: float, below_first_failure: bool = True
         ) -> float:
    """The best achieved throughput of the passing runs of the rates, in increasing offered
    rate, before the first rate that fails (every run of it refused, timed out or failed
    more than 1 % of its requests, or had a p99 over ``bound`` seconds, :func:`fails`): a
    rate that passes above a failed one does not count, so one quiet moment past the edge
    cannot raise a system's peak, and a rate that passes on its second run counts, so one
    busy moment below the edge cannot end it.

    >>> lv = lambda rate, p99: {"offered": rate, "achieved": rate, "p99": p99, "sent": 100,
    ...                         "rejected": 0, "timeouts": 0, "failed": 0}
    >>> peak([lv(50, 0.01), lv(100, 0.02), lv(140, 0.06), lv(190, 0.04)], 0.05)
    100
    >>> peak([lv(50, 0.01), lv(100, 0.02), lv(140, 0.06), lv(140, 0.04), lv(190, 0.04)],
    ...      0.05)
    190
    >>> peak([lv(50, 0.06), lv(100, 0.02)], 0.05)
    0.0

    ``below_first_failure=False``: the best of all passing levels (how results from before
    ``run.py --rest`` were read, with levels too short for the rule above).
    """
    best = 0.0
    for runs in rates(levels):
        if not fails(runs, bound):
            best = max([best] + [lv["achieved"] for lv in runs if passes(lv, bound)])
        elif below_first_failure:
            break
    return best


def sweep_for(system: dict[str, Any], name: str, hot: float) -> dict[str, Any] | None:
    """The system's sweep at this mix, or its 100% one when it has no cold functions."""
    by_mix = {sw["hot"]: sw for sw in system["sweeps"]}
    if hot in by_mix:
        return by_mix[hot]
    return by_mix.get(1.0) if name in FIXED_BASELINES else None


def metrics(data: dict[str, Any]) -> dict[tuple[str, float], dict[str, Any]]:
    """Per (system, mix): unloaded latency, peaks, saturation and overload behaviour."""
    out: dict[tuple[str, float], dict[str, Any]] = {}
    current = data.get("rest") is not None  # else: read as it was measured, before --rest
    for name, s in data["systems"].items():
        base = s["unloaded"]["p50"]
        for sw in s["sweeps"]:
            levels = sw["levels"]
            ov = sw["overload"]
            sat = max(lv["achieved"] for lv in levels + ([ov] if ov else []))
            b2b = s.get("unloaded_b2b")  # not in results from before it was measured
            out[(name, sw["hot"])] = {
                "label": s["label"], "unloaded": base,
                "unloaded_rounds": s["unloaded"].get("rounds"),
                "unloaded_b2b": b2b["p50"] if b2b else None,
                "peak10": peak(levels, 10 * base, current),
                "peak50": peak(levels, SLO_MS / 1e3, current), "saturation": sat,
                # how narrowly each peak was read: its first failing rate over its last
                # passing one (None where no rate failed, or none passed before one did)
                "edge10": edge(levels, 10 * base), "edge50": edge(levels, SLO_MS / 1e3),
                "overload_ratio": ov["achieved"] / sat if ov else None,
                "overload_rejected": ov["rejected"] / ov["sent"] if ov else None,
                "overload_rejected_p99": ov["rejected_p99"] if ov else None,
                "overload_timeouts": ov["timeouts"] if ov else None,
                # its offered rate against the best throughput before it (run.py: 2x), and
                # the generator's lateness there (a late generator sends bursts, not a rate)
                "overload_multiple": ov["offered"] / max(lv["achieved"] for lv in levels)
                if ov else None,
                "overload_late": ov.get("late_p99") if ov else None,
                # the share of the machine's CPUs the generator itself used at that level
                "overload_generator": (ov["cpu_per_request"] * ov["sent"] / ov["seconds"]
                                       / data["machine"]["before"]["cpus"])
                if ov and "cpu_per_request" in ov else None,
                "late_p99": max((lv["late_p99"] or 0) for lv in levels + ([ov] if ov else [])),
                # the most of its one CPU the generator used at a level (None: not measured)
                "generator_cpu": max((lv["generator_cpu"] for lv in levels + ([ov] if ov else [])
                                      if lv.get("generator_cpu") is not None), default=None),
                "edge_late": edge_late(levels, SLO_MS / 1e3),
                "edge_late10": edge_late(levels, 10 * base),
            }
    return out


def rest_line(data: dict[str, Any]) -> str:
    """How the unloaded series of this run were sent and how its peaks were read."""
    if data.get("rest") is None:  # results from before run.py rested between requests
        return ("unloaded: p50 of requests sent back to back; peaks: the best passing level "
                "(this run predates run.py --rest and the peak read below the first failing "
                "level)")
    line = (f"unloaded: p50 of requests one at a time, each {data['rest'] * 1e3:g} ms after "
            "the previous answer (at rest); b2b: the same back to back (for information)")
    if data.get("unloaded_rounds"):  # results from before: one series per system in turn
        line += (f"\nunloaded hot series: {data['unloaded_rounds']} rounds of 40 requests, "
                 "the systems taking turns; p50 of all of a system's requests together")
    if data.get("bisect") is None:  # results from before run.py --bisect
        return line + (f"\npeaks: the best level before the first failing one, on a grid of "
                       f"levels {1.8 if data['quick'] else 1.4:g}x apart")
    if data.get("resolution") is None:  # results from before: the peak at 50 ms alone
        line += (f"\npeaks: the best level before the first failing one, on a grid of "
                 f"levels {data['grid']:g}x apart and {data['bisect']} more between the "
                 "last passing and the first failing level at p99 <= 50 ms (each halving "
                 "the step)")
    else:
        line += (f"\npeaks: the best level before the first failing one, on a grid of "
                 f"levels {data['grid']:g}x apart, then, for each peak of every system "
                 "(p99 <= 50 ms and <= 10x unloaded), levels halfway between its last "
                 "passing and first failing rate until those are at most "
                 f"{data['resolution']:.2f}x apart ({data['bisect']} halvings of the step; "
                 "edge: the ratio reached)")
        if data.get("descend"):  # results from before: a first level failing read 0
            line += ("; where a sweep's lowest rate fails a bound above its unloaded latency, "
                     f"up to {data['bisect']} levels a grid step lower each")
    if data.get("rerun"):  # results from before: a level failing at the edge was pooled
        line += ("; a failing level below the first failed one is run again, and fails "
                 "only if it fails twice")
    return line


#: The share of its one CPU (one thread) above which the load generator may have been the
#: bottleneck of a level: a level's average, so its busiest moments were busier
GENERATOR_BUSY = 0.5


def generator_line(mt: dict[tuple[str, float], dict[str, Any]]) -> str:
    """What the table says of the load generator: the most of its one CPU it used and its
    worst lateness at any level, the sweeps where it used more than
    :data:`GENERATOR_BUSY` of it, and each peak whose ending level its lateness could have
    failed (:func:`edge_late`)."""
    cpu = [r["generator_cpu"] for r in mt.values() if r["generator_cpu"] is not None]
    busy = [f"{r['label']} {hot:.0%}" for (_, hot), r in mt.items()
            if (r["generator_cpu"] or 0) > GENERATOR_BUSY]
    line = "load generator: " + (
        f"at most {max(cpu):.0%} of its one CPU at a level, " if cpu else "") + (
        f"over {GENERATOR_BUSY:.0%} of it (it may have been the bottleneck) at a level of "
        f"{', '.join(busy)}, " if busy else "") + (
        f"late p99 at most {max(r['late_p99'] for r in mt.values()) * 1e3:.1f} ms; ")
    late = [f"{what} of {r['label']} {hot:.0%} (late {r[key] * 1e3:.1f} ms)"
            for (_, hot), r in mt.items()
            for key, what in (("edge_late", "peak@50ms"), ("edge_late10", "peak@10x"))
            if r.get(key) is not None]
    return line + ("no peak ended at a level its lateness could have failed" if not late
                   else f"its lateness could have failed the level that ended the "
                   f"{', '.join(late)}")


def fmt(x: float | None, scale: float = 1.0, digits: int = 1) -> str:
    """A number, or '-' for none."""
    return "-" if x is None else f"{x * scale:.{digits}f}"


def table(data: dict[str, Any]) -> str:
    """The text table: peaks, ratios, overload, cold requests and the issue's targets."""
    mt = metrics(data)
    bare = data["bare"]
    m = data["machine"]
    lines = [f"machine: {m['before']['cpus']} CPUs, {m['before']['platform']}, Python "
             f"{m['before']['python']}; load average {fmt(m['before']['load_average'][0])} "
             f"before, {fmt(m['after']['load_average'][0])} after; {m['before']['date']}"
             + ("; --quick" if data["quick"] else ""),
             f"bare function in process: {fmt(bare['latency'], 1e3, 2)} ms, peak "
             f"{bare['peak']:.0f} calls/s (1 thread)", rest_line(data), "",
             f"{'system':20s} {'hot':>4s} {'unloaded':>8s} {'b2b':>6s} {'peak@10x':>9s} "
             f"{'edge':>5s} {'/bare':>6s} {'peak@50ms':>9s} {'edge':>5s} {'/aiohttp':>8s} "
             f"{'satur.':>7s} {'overload':>8s} {'503/429':>7s} {'rej.p99':>7s} {'t/o':>4s} "
             f"{'gen.late':>8s} {'gen.cpu':>7s}",
             f"{'':20s} {'':4s} {'ms':>8s} {'ms':>6s} {'req/s':>9s} {'x':>5s} {'':6s} "
             f"{'req/s':>9s} {'x':>5s} {'':8s} {'req/s':>7s} {'/satur.':>8s} {'%':>7s} "
             f"{'ms':>7s} {'':4s} {'p99 ms':>8s} {'%':>7s}"]
    ref = mt.get(("aiohttp", 1.0))
    for (_, hot), r in mt.items():
        rel = r["peak50"] / ref["peak50"] if ref and ref["peak50"] else None
        lines.append(
            f"{r['label']:20s} {hot:4.0%} {fmt(r['unloaded'], 1e3, 2):>8s} "
            f"{fmt(r['unloaded_b2b'], 1e3, 2):>6s} {r['peak10']:9.0f} "
            f"{fmt(r['edge10'], 1, 2):>5s} {r['peak10'] / bare['peak']:6.3f} "
            f"{r['peak50']:9.0f} {fmt(r['edge50'], 1, 2):>5s} "
            f"{fmt(rel, 1, 2):>8s} {r['saturation']:7.0f} {fmt(r['overload_ratio'], 1, 2):>8s} "
            f"{fmt(r['overload_rejected'], 100, 0):>7s} "
            f"{fmt(r['overload_rejected_p99'], 1e3):>7s} "
            f"{fmt(r['overload_timeouts'], 1, 0):>4s} {fmt(r['late_p99'], 1e3):>8s} "
            f"{fmt(r['generator_cpu'], 100, 0):>7s}")
    lines += ["", generator_line(mt)]
    cold = {name: (s["unloaded_cold"] or (s["unloaded"] if name == "fresh" else None))
            for name, s in data["systems"].items()}
    turns = next((c["turns"] for c in cold.values() if c and c.get("turns")), None)
    lines += ["", "cold requests, unloaded (one at a time" + (
        f"; in {turns} rounds, the systems taking turns):" if turns else "):")]
    ours = cold.get("dandelion-process")
    for name, c in cold.items():
        if c is None:
            continue
        ratio = (f"  = {c['p99'] / ours['p99']:.1f}x Dandelion process's"
                 if ours and name != "dandelion-process" else "")
        lines.append(f"  {data['systems'][name]['label']:20s} p50 {fmt(c['p50'], 1e3):>7s} ms"
                     f"  p99 {fmt(c['p99'], 1e3):>7s} ms{interval(c)}  n={c['ok']:<4d}"
                     f"{ratio}".rstrip())
    lines += ["", "targets of issue 19 (ratios within this run):"]
    lines += [f"  {'MET ' if ok else 'NOT '} {text}" for ok, text in targets(mt, cold)]
    for name, what in C_SYSTEMS:
        if (name, 1.0) in mt:
            lines += ["", f"the same targets for Dandelion {what} (the function's C "
                          "implementation" + ("):" if cold.get(name) else ", hot only):")]
            lines += [f"  {'MET ' if ok else 'NOT '} {text}"
                      for ok, text in targets(mt, cold, name, what)]
    return "\n".join(lines) + "\n"


def interval(series: dict[str, Any]) -> str:
    """A series' p99 confidence interval as the table gives it ('' where the run has none).

    >>> interval({"p99_bounds": [0.0061, float("inf")]})
    ' [6.1, inf]'
    """
    found = series.get("p99_bounds")
    return "" if found is None else f" [{found[0] * 1e3:.1f}, {found[1] * 1e3:.1f}]"


def round_spread(mine: list[float] | None, theirs: list[float] | None) -> str:
    """The range of a difference of unloaded latencies round by round (the systems took
    turns in each round), in ms; empty for results from before the rounds.

    >>> round_spread([0.0041, 0.0050, 0.0043], [0.0033, 0.0034, 0.0036])
    '; by round 0.70 to 1.60 ms'
    >>> round_spread(None, [0.003])
    ''
    """
    if not mine or not theirs or len(mine) != len(theirs):
        return ""
    d = sorted((a - b) * 1e3 for a, b in zip(mine, theirs))
    return f"; by round {d[0]:.2f} to {d[-1]:.2f} ms"


def targets(mt: dict[tuple[str, float], dict[str, Any]], cold: dict[str, Any],
            name: str = "dandelion-process", what: str = "process"
            ) -> list[tuple[bool, str]]:
    """Each target of issue 19 that this run measured for the isolated Dandelion system
    ``name`` (``what`` in the text), and whether it was met."""
    out: list[tuple[bool, str]] = []
    p100, ai = mt.get((name, 1.0)), mt.get(("aiohttp", 1.0))
    if p100 and ai:
        d = (p100["unloaded"] - ai["unloaded"]) * 1e3
        out.append((d <= 0.8, f"unloaded latency {what} - aiohttp = {d:.2f} ms (<= 0.8 ms)"
                    + round_spread(p100.get("unloaded_rounds"), ai.get("unloaded_rounds"))))
        for hot, want in ((1.0, 0.5), (0.95, 0.4)):
            r = mt.get((name, hot))
            if r and ai["peak50"]:
                x = r["peak50"] / ai["peak50"]
                out.append((x >= want, f"peak at p99 <= 50 ms, {hot:.0%} hot: {what} / "
                                       f"aiohttp = {x:.2f} (>= {want})"))
            elif r:  # not measured: say so rather than leave the target out
                out.append((False, f"peak at p99 <= 50 ms, {hot:.0%} hot: {what} "
                                   f"{r['peak50']:.0f} req/s, aiohttp never within 50 ms in "
                                   f"this run: no ratio (>= {want})"))
    rs = mt.get(("rayserve", 1.0))
    if p100 and rs:
        if rs["peak50"]:
            x = p100["peak50"] / rs["peak50"]
            out.append((x >= 3, f"peak at p99 <= 50 ms: {what} / Ray Serve = {x:.2f} (>= 3)"))
        else:
            out.append((p100["peak50"] > 0, f"peak at p99 <= 50 ms: {what} "
                        f"{p100['peak50']:.0f} req/s, Ray Serve never within 50 ms (>= 3x)"))
        x = p100["peak10"] / rs["peak10"] if rs["peak10"] else float("inf")
        out.append((x >= 3, f"peak at p99 <= 10x unloaded: {what} / Ray Serve = {x:.2f} "
                            f"(>= 3)"))
        y = p100["unloaded"] / rs["unloaded"]
        out.append((y <= 0.3, f"unloaded latency: {what} / Ray Serve = {y:.2f} (<= 0.3)"))
    if p100 and p100["overload_ratio"] is not None:
        ok = p100["overload_ratio"] >= 0.9 and not p100["overload_timeouts"]
        out.append((ok, f"past saturation (2x): {what} achieves "
                        f"{p100['overload_ratio']:.0%} of its best, "
                        f"{p100['overload_rejected']:.0%} refused with 503 (p99 "
                        f"{fmt(p100['overload_rejected_p99'], 1e3)} ms), "
                        f"{p100['overload_timeouts']} time-outs (>= 90%, no time-outs)"
                        + (f"; the load generator used {p100['overload_generator']:.0%} of "
                           "the CPUs" if p100["overload_generator"] is not None else "")
                        + (f", offered {p100['overload_multiple']:.2f}x the best before it, "
                           f"generator late p99 {fmt(p100['overload_late'], 1e3)} ms"
                           if p100["overload_multiple"] is not None else "")))
    ours, fresh = cold.get(name), cold.get("fresh")
    if ours and fresh:
        x = fresh["p99"] / ours["p99"]
        sure = ""
        if "p99_bounds" in fresh and "p99_bounds" in ours:  # the worst case within both
            sure = (f", at least {fresh['p99_bounds'][0] / ours['p99_bounds'][1]:.1f} at 95 % "
                    "confidence")
        out.append((x >= 25, f"cold-request p99: fresh interpreter / {what} = {x:.1f}{sure} "
                             f"(>= 25; the paper: 45 against Firecracker)"))
    p95, fr = mt.get((name, 0.95)), mt.get(("fresh", 1.0))
    if p95 and fr:
        x = p95["saturation"] / fr["saturation"]
        out.append((x >= 10, f"throughput at 95% hot: {what} / fresh interpreter = {x:.1f} "
                             f"(saturation; >= 10)"))
    return out


#: The isolated Dandelion systems running the function's C implementation, whose targets
#: the table also checks (with cold copies of their own since run.py registers them; hot
#: only in results from before)
C_SYSTEMS = (("dandelion-process-c", "process C"), ("dandelion-kvm-c", "kvm C"),
             ("dandelion-wasm-c", "wasm C"))


def plot(data: dict[str, Any], hot: float, path: Path) -> None:
    """p50 and p99 latency against achieved throughput for every system at one mix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for ax, key in zip(axes, ("p50", "p99")):
        for name, s in data["systems"].items():
            sw = sweep_for(s, name, hot)
            if sw is None:
                continue
            levels = sorted((lv for lv in sw["levels"] if lv[key] is not None),
                            key=lambda lv: lv["offered"])  # narrowing levels ran last
            label = s["label"] + ("" if sw["hot"] == hot else " (no cold code)")
            line, = ax.plot([lv["achieved"] for lv in levels],
                            [lv[key] * 1e3 for lv in levels], marker="o", ms=3, label=label,
                            ls="-" if s["isolated"] else "--")
            ov = sw["overload"]
            if ov and ov[key] is not None:  # past saturation: a cross in the same colour
                ax.plot([ov["achieved"]], [ov[key] * 1e3], marker="x", ms=7,
                        color=line.get_color())
        ax.axhline(data["bare"]["latency"] * 1e3, color="k", ls=":", lw=1,
                   label="bare function latency")
        if key == "p99":
            ax.axhline(SLO_MS, color="gray", ls="-.", lw=1, label=f"{SLO_MS:.0f} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("achieved throughput (requests/s)")
        ax.set_ylabel(f"{key} latency (ms)")
        ax.set_title(f"{key}, {hot:.0%} hot: 128×128 int64 M·Mᵀ over HTTP")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].plot([], [], "kx", label="at 2× the best throughput")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_name(hot: float) -> str:
    """The figure file of one mix."""
    return f"paper_hot{round(hot * 100)}.png"


def write(data: dict[str, Any], out: Path) -> None:
    """Write the table and the figures into ``out``."""
    text = table(data)
    (out / "paper.txt").write_text(text)
    for hot in MIXES:
        plot(data, hot, out / figure_name(hot))
    print(text)


def rst(data: dict[str, Any], results: Path, page: Path) -> str:
    """The documentation page: the figures, the table, the machine and how to reproduce."""
    m = data["machine"]
    load = (m["before"]["load_average"][0], m["after"]["load_average"][0])
    bare = data["bare"]
    cpus = m["before"]["cpus"]
    mode = (f"used ``--quick`` ({data['seconds_per_level']:g} s per load level)"
            if data["quick"] else f"used {data['seconds_per_level']:g} s per load level")
    caveat = ("On a machine this loaded, absolute latencies and throughputs are several times "
              "worse than on a dedicated one, p99 is dominated by scheduling delays (the "
              "generator's own lateness shows how much), and a system that needs more "
              "processes per request (the sandbox, Ray) is likely to suffer more than one that "
              "needs fewer.  Only ratios within one run mean anything, and even those move "
              "between runs; rerun on a quiet machine before quoting absolute numbers."
              if max(load) > 2 * cpus else
              "Two vCPUs bound every system's throughput; compare ratios within one run.")
    rel = Path("/".join([".."] * (len(page.parent.parts) - len(Path().parts))) or ".")
    figures = "\n".join(
        f".. figure:: {(rel / results / figure_name(hot)).as_posix()}\n   :width: 100%\n\n"
        f"   p50 and p99 latency against achieved throughput, {hot:.0%} hot requests.\n"
        for hot in MIXES)
    body = "\n".join("   " + line if line else "" for line in table(data).splitlines())
    title = "Performance: the paper's experiment"
    return f"""..
   Generated by benchmarks/paper/report.py from {(results / 'paper.json').as_posix()};
   do not edit: rerun the experiment or the report.

{title}
{'=' * len(title)}

The seed paper measures latency against offered load over HTTP (its Figures 4 and 5) and
compares cold starts and peak throughput with the systems users would otherwise pick.
``benchmarks/paper/`` repeats that experiment for Dandelion in one command.

The workload is the 128×128 int64 M·Mᵀ.  An open-loop Poisson load generator, a process of
its own, sends each request at its arrival time whether or not earlier ones have finished
and measures latency from that arrival; its own lateness is reported (column ``gen.late``:
when it is more than a few milliseconds, the generator was a bottleneck at that rate), and
so is the share of its one CPU (it runs on one thread) it used at the busiest level
(``gen.cpu``: near 100 % it would be the bottleneck, and the table names every sweep
where a level's average passed 50 %); ``run.py`` prints both for every level.  The table
checks lateness where it matters: it names each peak whose ending level (the first that
failed) failed by a p99 that the generator's lateness (p99) would bring back within the
bound, which the generator, not the system, may have failed.
Each system is offered increasing rates until it saturates, then twice its best throughput:

- **Dandelion** ``process`` (each function in a sandbox) and ``inline`` (no isolation, the
  bound), one worker (``dandelion serve``, one engine per CPU) with caching off (``--cache
  off --result-cache 0``: every request computes, with the same input), no access log, and
  the default admission control (what would wait more than ``--max-wait 0.25`` s for an
  engine gets a fast 503, see :doc:`serve`);
- **Dandelion** ``process C``, ``kvm C`` and ``wasm C``: the same worker running the
  function's C implementation (``examples/matmul.c``, built by the C SDK: an ELF in a
  process sandbox or a virtual machine, or WebAssembly; the paper's functions are compiled
  code), with 39 cold copies of their own (each copy's image differs by a constant nothing
  reads, as the Python copies differ by a comment), at 100% and 95% hot; the issue's
  targets are checked on ``process`` running the Python function, the harder case, and on
  each of these;
- **aiohttp in process**: a plain aiohttp server calling the function on its event loop (no
  isolation: the HTTP stack's upper bound);
- **Ray Serve** with one deployment of the function (one replica, Serve's defaults);
- **fresh interpreter**: a new Python process per request that imports numpy and runs the
  function (what a container or microVM cold start costs at the least; Firecracker itself
  cannot boot usefully on this nested host, its published boot time is 125 ms);
- **Ray tasks**: one Ray task per request, from an aiohttp server.

A *cold* request calls one of 39 copies of the function that the worker evicted from memory
(``--hot-functions 4``), so its code is loaded from the artifact store: a Python copy is
decoded from the copy registration stored; a C copy's image is read from disk and checked
against its digest, and its engine prepares it anew (``process`` cuts its segments, ``kvm``
maps them into a VM, ``wasm`` deserializes the module's compiled code from disk; see
:doc:`serve`, cold invocations); for Ray tasks it defines a new remote function.  The
other baselines have no cold code and run at 100% hot only (every request to the fresh
interpreter is cold).  All systems are up together and each round
offers the next rate to each system in turn, so they share interference alike.

The machine
-----------

{cpus} vCPUs of a nested virtual machine ({m['before']['platform']}), shared with other
work while this ran: the load average was {load[0]:.1f} before and {load[1]:.1f} after, about
{max(load) / cpus:.0f} runnable processes per CPU.  The bare function took
{bare['latency'] * 1e3:.2f} ms here (about 1.4 ms on the same machine when idle).  This run
{mode}.  {caveat}

Results
-------

{figures}
``unloaded``: the median latency of requests sent one at a time, each at rest: ``run.py
--rest`` (30 ms) after the previous answer, the same pause for every system, so that no
request competes with the work the previous one left behind.  A forking worker keeps using
CPU for some 8-23 ms after an answer (its sandbox's teardown, the replacement's fork and
warm-up: ``benchmarks/paper/rest.py`` samples each system's process tree after each answer),
the aiohttp server and the fresh interpreter for 0 ms in the median; on 2 vCPUs a request
sent at once shares the CPUs with that work.  ``b2b``: the same requests back to back, each
sent as soon as the previous answer arrived, for information only (the issue's targets use
``unloaded``); the cold series and the fresh interpreter's are sent at rest too.  Resting
has a cost of its own, the same for every system: a request that finds the CPUs idle waits
for them to wake, on this nested VM about 1 ms (the aiohttp server's p50 was 2.7 ms back to
back and 3.6 ms after 20-50 ms of rest at load 1.5; 2.0 against 3.2 ms in a run at load 5-7,
where the C systems read 0.6-1.3 ms more at rest and process 4.9 against 8.4 ms; with the
CPUs kept busy by other work, at load 5-14, aiohttp read 2.9 ms back to back and 2.6 ms at
rest).  The hot series are sent in rounds (``run.py --unloaded-rounds``, 5 of 40 requests),
the systems taking turns, the order reversed every other round, and ``unloaded`` is the p50
of a system's requests of all rounds together; the target against the aiohttp server gives
the difference round by round beside it.  Before, each system's 40 requests were sent one
system after the other, and the same tree read 0.73, 1.33 and 1.76 ms over the aiohttp
server within an hour: a busy moment of the shared machine fell on one system only.
``peak@10x``: the best throughput with p99 within 10× the system's unloaded latency;
``peak@50ms``: with p99 within 50 ms.  A peak is read the same way for every system: the
levels are taken in increasing offered rate, and the peak is the best achieved throughput
before the first level that fails the bound (or refuses, times out or fails more than 1 % of
its requests); a level that passes above a failed one does not count, so one quiet moment
past the edge cannot raise a peak.  A level that fails is run a second time where that can
change a peak (no lower rate failed the same bound, ``report.rerun``), and a rate fails only
if both its runs fail (``report.fails``; the peak takes its passing run): on a shared 2-CPU
machine one busy moment can fail one level, and by the rule above one failed level ends a
peak, so a single noisy level decided peaks (an earlier run read aiohttp's peak as 241 req/s
because its 268 req/s level failed, while its 482 req/s level passed).  Both halves of the
rule are the same for every system; results from before it (no ``rerun`` in ``paper.json``)
read a failing level once, pooled with its repetition where it had one.  The offered rates
step 1.4× (1.8× with ``--quick``), so a peak read off that grid alone can be most of a step
below the edge (aiohttp's levels were 159, 287 and 516 req/s): once a sweep has saturated,
more levels, each as long as the others at its rate and run in the same rounds, go halfway
(geometrically) between the last rate that passes and the first that fails
(``report.bracket``) of whichever of the system's two peaks, at p99 ≤ 50 ms and at p99 ≤
10× unloaded, has them furthest apart (``report.bisect_rate``), until both are narrowed
to ``run.py --bisect`` (2) halvings of the step, a 1.8× step to 1.16× (1.4× to 1.09×), the
same for every system, Ray Serve and the aiohttp server included, so the ratios between
peaks stay fair; a level narrowing one peak counts for the other where it falls in its
bracket; where a sweep's lowest rate already fails a bound above the system's unloaded
latency, up to as many levels a grid step lower each go first (``report.descent_rate``), so
that the peak is read rather than 0 (in a run on a busy machine Ray Serve failed both
bounds at its first rate, and its peaks of 0 made every ratio to them infinite).  Each
peak is read over all the levels by the same rule, and the ``edge`` column
beside it gives its first failing rate over its last passing one (the resolution reached:
"-" where no rate failed, or none passed).  The table's first lines say how this run's
peaks were read; in results from before 2026-12-07 15:00 only the ``peak@50ms`` was
narrowed (in the run of 13:09, ``process``'s ``peak@10x`` was the grid's 253 req/s, its
next level 342 req/s failing), and before ``--bisect`` neither.  A busy moment
below the edge could lower a peak, so a level sends at least 200 requests where that takes
at most four times its time (the p99 of fewer than 100 requests is their slowest); ratios
still move between runs: of two quiet runs of the same tree one after the other (2026-12-07
15:35 and 15:51, the second below), each met all nine targets of issue 19 for ``process``,
with ``process``'s peak at p99 ≤ 50 ms 0.80 and 0.97 of aiohttp's, and the fresh
interpreter's cold p99 27.5× and 28.2× ``process``'s (at least 23.5× and 25.3× at 95 %
confidence).
``/bare``: against the bare function's peak in one thread; ``/aiohttp``: against the
aiohttp server's ``peak@50ms``; ``satur.``: the best throughput at any latency;
``overload``, ``503/429``, ``rej.p99``, ``t/o``: at twice that rate, the throughput achieved
as a fraction of the best, the share of requests refused, how fast they were refused, and
how many timed out (10 s).  Every p99 is nearest-rank (the ``ceil(0.99·n)``-th smallest of
n, ``benchmarks/quantiles.py``): of fewer than 100 requests it is their slowest, and of
200 their second slowest, with no upper confidence bound.  So ``run.py`` sends 800 requests
(as ``benchmarks/bench_cold.py`` does) in each series whose p99 the cold-start ratio
compares, the cold one and the fresh interpreter's (of 400, the p99's upper bound was the
slowest request; of 800, it is the fourth slowest), and the table gives each p99's 95 %
confidence interval (``quantiles.bounds``) and the ratio's worst case within them (``n``:
how many requests the series had; runs before 2026-12-07 sent 200 and give no interval).
The cold series are sent in 20 rounds, the systems taking turns, as the hot ones are, where
the table's header says so; before, they were sent one system after the other, and the
fresh interpreter's p99 read 148 ms in one quiet run, 189 ms in the one before.

.. code-block:: text

{body}

The request path
----------------

A hot request to the worker crosses no thread boundary: the event loop reads and decodes
it, finds the function's plan (made once per registered function and kept) and its code
(kept in memory), lays the inputs out in a shared-memory context, hands the function to a
sandbox forked ahead and waits for the sandbox's report on its channel itself
(:mod:`dandelion.runtime.handoff`); then it reads the outputs and answers.  Two wake-ups
(loop → sandbox → loop) where an engine thread in between made four; the sandbox is ended
and its context wiped after the answer is sent.  What the request allocated is freed then
by reference counting, none of it left in cycles for the garbage collector, whose
collections would come on the path of whichever request is running (:doc:`serve`, the hot
path).  The pool's bound holds: no more
invocations run at once than ``--workers``, and the others wait on the loop, in order.  A
burst that outruns the sandboxes forked ahead waits on the loop, in order, for the next
fork.  A cold request reads the copy of its code that registration stored from disk,
checks it against its digest and decodes it: on the loop like a hot one when that copy is
small and in the kernel's page cache (read without waiting for a disk), else on a thread of
the frontend's pool, so it never holds up the loop or a hot request, and
then run from the loop like a hot one, with no thread waiting for it (:doc:`serve`, cold
invocations; ``benchmarks/bench_cold.py`` measures one at a time against
the fresh interpreter).  Until 2026-12-07 a Python function pushed out of
``--hot-functions`` left its copy in the store's memory, so that a "cold" request read no
file (only a native image left memory): the measurements of cold requests before then
are of a copy kept in memory, not of the paper's cold start.  What a cold request adds to a
hot one at rest (``benchmarks/bench_tail.py --rest 0.03 --cold --mixed``: hot and cold
requests in turn, each kind's stages side by side; 400 requests, this tree and the one of
the morning of 2026-12-07 taking turns, two pairs, load 7.6 to 4.0): 0.21-0.24 ms more in
the ``plan`` stage (0.44-0.48 against 0.23-0.24 ms), reading the copy from the page cache
(its one file read at the length it was written, checked against the digest kept in
memory, no metadata parsed) and unpickling it, where the copy kept in memory took 0.29-0.44
ms more (0.56-0.73 against 0.27-0.29: its decoding took the function's identity, which a
worker on an isolated engine no longer does, :doc:`serve`, cold invocations); 0.5-0.55 ms
at the p50 in all (0.58-0.72 then), the rest in the ``begin`` and ``sandbox`` stages, where
its sandbox, a generic one, unpickles the code that a hot request's ready sandbox took
ahead; no young collection of the garbage collector during 400 requests, 12 between them
(once during and 20 between with the identities: a decoded function's objects stay until
it is pushed out; the frontend collects them between invocations,
``dandelion/server/idle_gc.py``); no thread hand-off and no wait for a disk.  The slowest 2 % of
either kind spent their extra time in the sandbox and on the wire (at that load, the
machine's other work).  ``benchmarks/bench_http.py`` measures this path side by side with
the aiohttp server (unloaded latencies interleaved, the server's CPU time per request) and,
with ``--before PYTHON``, against another checkout of Dandelion in the same run; its last
results are in ``benchmarks/results/bench_http.txt``.  ``benchmarks/bench_tail.py`` stamps
each request at every stage of this path (one at a time, or at a given rate) and compares
the slowest 2 % with the median, with the garbage collections and sandbox forks that
overlapped them.

A function invoked alone (``POST /v1/functions/NAME/invoke``) runs a plan of one application,
and its run skips the dispatcher (:mod:`dandelion.runtime.one_call`): where its one
instance is all there is to decide — no result cache of the runtime to look up (the worker's
whole-result cache is looked up before, as for any invocation), no progress line, one
instance, a compute function whose time limit the engine enforces itself — the loop hands
that instance to the pool, and the engine's end resolves the loop's own future.  The
dispatcher's run state (its sets, ready list, lock and two ``threading.Event`` s), the
``Future`` its outcome crossed and the ``asyncio`` future wrapping that one are not made;
the implementation is chosen, the outputs checked, what the function printed collected and
an error named (function, instance) the same way, and every answer is the dispatcher's
(``tests/server/test_one_call.py`` sends each kind of request, from a printing, raising or
overrunning function to a malformed body, to a worker on either path and compares the
answers).  Per request of the matrix function at rest, on the worker's event loop: 995
Python calls before, 886 after (``cProfile``, 200 requests 10 ms apart); under ``valgrind
--tool=callgrind`` (instruction counts, which the machine's load does not change; 100
requests after 30 to warm up, twice each), 2.378 M instructions of the worker's process
before and 2.241 M after, of which outside ``memcpy`` and ``memset`` 895 k and 760 k
(-15 %; valgrind counts the copies of the 128 KiB arrays and the wipe of a context byte by
byte, which makes them most of the rest).  ``bench_http.py --unloaded-only 400 --before``
(load 3.0-3.4, two runs): the worker process's CPU per request 1.30 and 1.40 ms against
1.45 and 1.52 ms before.

Where a hot request's time goes, stamped step by step (the 128×128 int64 M·Mᵀ, one request
at a time, medians of 1,180 requests, load 1.3; issue 19): the handler, until the array is
decoded, 0.17 ms; starting the run (dispatcher, pool, hand-off) 0.12 ms; placing the inputs
and handing the function over 0.09 ms; in the sandbox, waking up and mapping the context
0.16 ms, unpickling the function 0.08 ms, reading the inputs 0.07 ms, the function
1.54 ms, writing the result 0.09 ms; the report reaching the loop 0.22 ms; reading the
outputs and resolving the run 0.23 ms; encoding the answer 0.10 ms.  About 0.6 ms of it is
the worker's Python and 0.7 ms the sandbox's own steps, against some 0.1 ms of decoding and
encoding in the aiohttp server.  Each step is short in itself (the same unpickling takes
7 µs in a warm process, decoding the array 7 µs): what costs is running each the first time
in a fresh process, and in a worker whose caches the sandboxes and the client share on two
cores, so what shortens the path is touching less code and data per request.  A sandbox
that warmed up takes about 15 page faults on the path; one forked while every CPU ran an
invocation (no warm-up) about 330, some 0.9 ms here.  Since then the unpickling step has
left the path of a function invoked again: after its previous answer, a sandbox is made
ready for it, which unpickles its code while no request waits (:doc:`serve`, the hot path;
up to 0.4 ms in a sandbox that has not run it).  Against the same tree with ready sandboxes
off (``ready_functions=0``), interleaved one request at a time on a busy machine (load
4.5-5.8, four runs of 200), the median hot request was 0.24-3.2 ms shorter; the CPU per
request of the worker's process tree moved by -0.15 to +0.45 ms (8-10 ms in all).
``python benchmarks/bench_http.py --unloaded-only 200 --before PYTHON`` measures only the
interleaved unloaded latencies, against another checkout, in a few seconds, with each
system's difference to the aiohttp server in each fifth of the series (its spread).

At rest (``bench_tail.py --rest 0.03``, as ``run.py``'s unloaded series; issue 19), a hot
request on ``process`` took about 1.4 ms more than one to the aiohttp server stamped the
same way (a copy of ``baselines.py``'s handler with stamps, load 1.3-1.5), and the extra is
work, not waiting for idle CPUs to wake.  Waking is short here: a process blocked on a pipe
woke 27 µs after the write on the writer's CPU and 81 µs on the other, idle one, when
the writer had rested 30 ms before (5 and 35 µs back to back).  What rest costs is that
everything then runs slower: the aiohttp server's function itself took 1.80 ms at rest
against 1.54 ms back to back, its request 0.69 against 0.27 ms from the client's send to
the handler.  On ``process`` the hand-offs mostly stay on one CPU: the handler runs where
the client sent, the woken sandbox runs there too (it preempts the loop in the middle of
the hand-over, 60-90 % of requests) and the report is read there; the requests whose
sandbox ran on the other CPU were no slower (4.98 against 5.08 ms).  The stages against
the aiohttp server's (ms, medians at rest): from the client's send to the handler 0.78
against 0.69; reading and unpacking the body 0.20 against 0.05; decoding the inputs and
starting the run 0.39 (the array's decoding 0.13 of it, the dispatcher to the hand-off
0.15); the hand-over and the sandbox's own steps 0.65 on top of the function, whose time
in the sandbox (1.66) was no longer than in the aiohttp server (1.80); reading the outputs
0.13; encoding and answering 0.28 against 0.13.  A ready sandbox takes some 50 page faults
from its hand-over to its report (``bench_tail.py --faults``).

The last stage, from the handler's return to the client's last byte, was 0.7-1.1 ms on
``process`` against 0.45 ms on the aiohttp server: ending the sandbox right after the
answer set off work in other processes (its exit, the zygote's fork of a replacement, the
next ready sandbox's unpickling) that took the CPUs from the client reading its answer.
Now the hand-off ends a sandbox 3 ms after its report (:doc:`serve`, the hot path), and
that stage reads 0.45-0.64 ms; the whole request, this tree and the one before taking
turns (``bench_tail.py --rest 0.03 --python``, 200 requests each, load 4): p50 5.0 and
5.4 ms against 10.8 and 7.4 ms before.  ``python benchmarks/paper/run.py --systems process
aiohttp --native --unloaded-only 5`` reads the unloaded target alone, the two systems
taking turns.

The frontend's own steps (issue 19, ``path10``).  The 128×128 int64 matrix (128 KiB) was
copied eight times in the worker's process on its way in and out (besides aiohttp
joining the answer to its headers, as for the aiohttp server), and Python parsed its
``.npy`` header twice: ``request.read()`` copied the body's chunks into a ``bytearray`` and
that into ``bytes``, msgpack copied the array's bin out of the body, the wire decoder copied
the array out of that, the engine into the context; on the way out the context's output
was copied into an array, the array into its ``.npy`` bytes and those by the packer into
the answer.  Now the body is its one chunk, or its chunks joined; the input is a read-only
view of msgpack's bin where the engine copies it into a context anyway (an isolated one:
``Backend.inputs_copied``); the answer is packed at once, the array's data copied from the
array into the body (``wire.pack_outputs``, byte for byte what msgpack writes); and the
last 256 ``.npy`` headers parsed are kept.  That leaves four copies (five where the body
arrived in several chunks): msgpack's bin, the context, the output out of the context and
the answer.  Warm, in one process,
decoding the request and encoding the answer took 14 and 16 µs instead of 17 and 15 µs
before, where the function alone is 1.5 ms: the copies are cheap when the caches are warm.
At rest (``bench_tail.py --rest 0.03 --python``, this tree and the session's start
taking turns, 400 requests each, three rounds, load 5.5-9.4 from other work on the
machine) the stages moved as follows, medians of the middle fifth in ms: reading and
unpacking the body 0.11, 0.39, 0.11 against 0.40, 0.25, 0.21; decoding and starting the
run 0.34, 0.40, 0.37 against 0.39, 0.40, 0.41; encoding the answer 0.29, 0.30, 0.30
against 0.35, 0.30, 0.34.  ``bench_http.py --unloaded-only 400 --before PYTHON`` (load 7-8)
read the server process's CPU per request as 2.15 against 2.23 ms and the whole tree's as
8.47 against 8.68 ms; its unloaded medians (8.1 against 7.8 ms, aiohttp 5.3 ms) are no
reading at that load.  In a ``perf`` profile of the worker process at rest, copying
(``memmove``) was 4.5 % of its CPU and the Python interpreter 70 %: what is left of the
frontend's time is its Python, spread over some 580 Python calls a request, about half
of them aiohttp's and asyncio's.

The slowest requests at rest were the measuring client's.  Of 400 hot requests at rest
(``bench_tail.py --rest 0.03``, load 3.5-6), 4-5 % spent 25-35 ms in that last stage,
against a median of 0.55 ms, and set the p99 (34 ms against a median of 5 ms), though the
worker had written each answer whole (one ``send`` of its 131 KB, nothing left in its
buffer).  The client's socket had the system's default receive buffer (128 KiB: a window of
about 64 KiB, grown as the client reads), smaller than the answer: when the client came
late to read one, the rest of it arrived 25-35 ms later (waiting for the window to open, we
take it: with room for the whole answer it does not happen; not traced in the kernel).
Every system's
answer of that size waits alike, the fresh interpreter's too, so the benchmarks' clients
now have room for a whole answer (``bench_http.RECEIVE_BUFFER``, 4 MiB, in
``bench_cold.py``, ``bench_tail.py`` and ``paper/loadgen.py``; ``--client-buffer 0``
restores the default).  The same worker, one run after the other (load 4.2, 3.5): p99
34.18 ms with the default buffer against 9.52 ms with room, the slowest 2 % spending 29.86
against 0.68 ms in that stage; in four more runs of 400 taking turns, 17 and 20 answers
waited over 10 ms with the default, 0 and 2 with room.  On the quiet machine too (load
about 1, four runs of 400 taking turns): p99 33.28 and 34.05 ms with the default buffer,
the slowest 2 % spending 29.6-29.9 ms in that stage, against 7.33 and 5.74 ms with room
(0.53-0.55 ms in that stage); the median was the same (4.2-4.8 ms).  With room, one
request at a time to ``bench_cold.py``'s two workers taking turns (this tree and the one
at the start of the session, load 0.7-1.1, 400 each): cold (evicted) p99 6.42 ms [6.38,
7.99] against 6.96 ms [6.68, 10.02], 29.3× and 27.0× below the fresh interpreter's 188.0 ms
[186.2, 207.2] (at least 23.3× and 18.6× at 95 % confidence); hot 6.70 against 6.72 ms.
What the previous request leaves
behind (its sandbox's exit, a replacement's fork and warm-up, a sandbox made ready) did
not set the tail: ``bench_tail.py`` also watches the worker's whole process tree in the
last 3 ms before each request at rest, and at load 3-11, 1-7 % of requests found it busy
and they were at most 2 of the slowest 2 % in each run of 300-400 (0 in nine of eleven runs;
the slowest spent their time in the sandbox or on the wire while the machine's other work
ran).  Handing a cold function's code to a sandbox as soon as it was
loaded, to unpickle while the loop decoded the inputs, was tried and not kept: in two pairs
of runs taking turns (``bench_tail.py --rest 0.03 --cold``, 300 requests, load 6) the
loop did 0.15-0.2 ms more before the hand-off, half the woken sandboxes ran on the loop's
own CPU (where nothing overlaps), and the median cold request was no shorter (12.3 and 12.3
ms against 9.9 and 8.0).  The fresh interpreter is what a user gets:
``python -c`` importing numpy took as long from this checkout's virtualenv as from the base
interpreter (medians 207 and 211 ms, 30 each taking turns, load 2.5-4.3).

What bounds the throughput of ``process`` with a Python function is the CPU time each
request costs the machine, sandbox included: ``bench_http.py`` reports it for each server's
whole process tree beside the server process's own, and ``python benchmarks/bench_sandbox.py
--only cpu`` splits one invocation's by process (the caller, the zygote's fork, the sandbox's
user and system time and its page faults; ``benchmarks/results/bench_sandbox_cpu.txt``).
Here a request on ``process`` costs 6-9 ms of CPU against 2-2.3 ms for the aiohttp server:
a fork of the numpy zygote, some 550 page faults in the sandbox and about 1 ms of Python
around the function.  The C implementation's sandboxes cost far less (a small C process,
a reset VM or a wasm instance: ``process C``, ``kvm C``,
``wasm C`` above).  Resetting a used sandbox to a snapshot instead of forking
one (:doc:`isolation`, reusing a sandbox; the prototype: ``python
benchmarks/bench_reset.py``) cost 2.1-2.8 ms of CPU per invocation against 3.8-5.1 ms for a
fork per invocation from a numpy zygote, alternating in the same run (load 1.1-1.7), the
function being about 1.5 ms of both: 180 write-protect faults at 0.7-0.8 µs instead of 445
copy-on-write faults, no fork and no exit, and 0.5-0.9 ms for the parent to find the pages
written, write them back and check the memory map, half of it reading the map.
The engine resets a function's sandboxes (``reuse_sandboxes``, on by default; several per
function, so that overlapping invocations are reset too, and the pages a reset wrote back
left writable, so that the next invocation takes no fault on them).  ``bench_reset.py
--engine`` (invocations started as the event loop starts them, one at a time, load 4.5-6):
4.0 ms of CPU per invocation against 7.0-8.5 ms with a fork each, median wall time 2.5-3.9
against 4.7-8.6 ms.  Over HTTP (``bench_http.py -E reuse_sandboxes=true --before
.venv/bin/python`` with the option off by default then: on against off, side by side, load
4.6-6.0 with other work on the machine) a request cost the worker's processes 3.3 against
7.6 ms of CPU, its unloaded latency was 5.83 against 7.69 ms, and the saturation throughput
157 against 141 req/s at 100 % hot (166 against 129 at 95 %); a second run at load 5-9:
3.6 against 7.3 ms of CPU, unloaded 4.86 against 5.26 ms.

What a cold request costs the C systems (one of their 39 copies pushed out of the worker's
``--hot-functions``; :doc:`serve`, cold invocations): its image is read from disk and
checked against its digest on a thread of the frontend's pool (0.09-0.13 ms for these 4-9 KB
images), and its engine prepares it anew.  ``process`` only cuts its segments again (a
sandbox maps them in either case); ``kvm`` maps the image into the VM that runs it, and the
invocation after mapping another image took 0.70 ms more than one on the image the VM had
(0.89 against 1.59 ms, in process, load 1.5: the VM's pages are protected again and fault
back in); ``wasm`` deserializes the module's compiled code from disk (0.31 ms, and 0.04 ms
to make it instantiable), which the worker compiled when the function was registered (13.5
ms; before, the first invocation of each copy compiled it).  Over HTTP, in two runs of
``run.py --quick --no-python --no-ray`` (load 1.3-2.9, other work on the machine), a cold
request's p50 was 0.75-0.83 ms above a hot one's on ``process C``, 1.9-2.1 ms on ``kvm C``
and 1.2 ms on ``wasm C`` (3.2 ms while its copies compiled on first use); the cold p99 was
5.6, 7.7 and 10.2 ms, 38×, 27× and 21× below the fresh interpreter's 209 ms.

Past saturation, the worker refuses what it has no room for (:doc:`serve`, admission
control): an invocation expected to wait longer than ``--max-wait`` (0.25 s) for an engine
gets a 503 with ``Retry-After`` from the request's head, before its body is read, so the
engines stay busy with the admitted ones and the excess is answered at once.
``benchmarks/bench_overload.py`` offers a worker 1×, 1.5×, 2× and 3× its measured peak and
reports the throughput kept, the share refused and how fast, the worker's and the
generator's CPU time per request, and the CPU time per answered request of each of the
worker's processes (the worker, its zygotes, their sandboxes) and of the generator, the
refusals' included (``--before PYTHON`` runs another checkout alongside).

What past saturation costs on 2 vCPUs (issue 19, process running the Python function, whose
requests cost some 7-9 ms of CPU each, its whole process tree): ``bench_overload.py
--refusals`` (2026-12-07, three rounds taking turns, load 5.8-8.1) measured the worker's CPU
time per refused request at 0.40-0.45 ms with the experiment's 131 KB body and 0.37-0.43 ms
with a 100-byte one, against 0.34-0.37 and 0.30-0.31 ms for a bare aiohttp application that
answers a JSON 503 from the head.  The refusal is decided from the head (nothing of the body
is parsed or decoded); what it costs is mostly aiohttp's own work per request and receiving
the body, which a kept connection must; the worker adds 0.05-0.08 ms (tenant, admission, the
JSON error, metrics), about 1 % of a served request's CPU.  The load generator's CPU comes
from the same two CPUs: 0.4-0.55 ms per request, refused or not (its own HTTP/1.1 client,
``loadgen.py``; aiohttp's client took twice that), 0.29 ms of it the kernel sending the 131
KB body over loopback TCP (profiled).  So at twice a saturation of S requests/s, the S
refusals and the generator's S more requests each second take about S × 0.85 ms of CPU a
second: for process's S ≈ 210 about 0.18 CPU, 9 % of the machine, and it keeps at most about
91 % of its best there even if nothing else changes.  The 90 % target is at the edge of what
two shared CPUs allow a system that uses both, and one level decides it: a run's one
overload level of 2 s is read against the best of all its levels (in the run of 2026-12-07
03:59 process kept 85 % of its best at 100 % hot and all of it at 95 % and 90 %; the run
before, 97 %; the C systems 81-100 %; in the run of 10:16, 84 %, 93 % and 100 %, the best at
100 % hot a level that kept up, 357 req/s, against 300 at 714 offered: the refusals' 0.42 ms
of the worker's CPU each and the generator's extra requests took some 0.18 CPU, 9 % of the
machine).  An answer also costs more once requests queue: a function's reusable sandbox is
reset by its zygote after each invocation, one reset after the other, and past saturation
a reset waits for a CPU behind the others (p50 0.95 ms at rest, 9-37 ms past saturation,
with a function's invocations some 3-5 ms apart on two engines), so that an invocation
more often finds none of the function's sandboxes ready and runs on a fresh one (forked,
its code unpickled): 90-100 % ran on a reset sandbox at 30-80 req/s, 50-62 % at 250-300
req/s offered (a worker with counters, 2026-12-07, load 6-12 with other work on the
machine), and ``bench_overload.py`` read the CPU of the worker's processes per answer 4.5
ms at 1×, 5.0 at 2× and 5.3 at 3× (load 11), the sandboxes' 2.5, 2.8 and 3.0.  The levels
just past the edge show it with few refusals: 338-347 req/s with 4-5 % refused against the
357 of the level below in the run of 10:16.  Since then no snapshot is asked of a sandbox
forked while warm-ups are off (it tracks nothing, and each refusal held up the zygote's
resets: 38-64 in a row when a function's reusable sandboxes ended together after their 256th
reset).  Twice as many reusable sandboxes per function took fresh sandboxes past saturation
from 38-45 % of the invocations to 6-25 %, and ``bench_overload.py --before`` (2026-12-07
11:44, load 6-7, against the tree of 11:00) read the CPU of the worker's processes per answer
4.15 ms at 1× and 4.10-4.24 ms at 1.5-3× (99-102 %), against 4.13 and 4.82-4.95 ms
(116-120 %); that change was taken back after the run of 12:13 (with it, overlapping
invocations sometimes made a single reusable sandbox, as two tests caught); and
``--refusals`` (11:46, load 5-7) a refusal's 0.21-0.25 ms of the worker's CPU with the 131 KB
body, against 0.28-0.32 ms for that tree and 0.22-0.26 for the bare aiohttp application.
Three changes since (2026-12-07, after 14:00) keep resets from falling behind: a sandbox
runs 5 nicer than its zygote (it cannot change that back: its filter refuses
``setpriority``), so a reset no longer waits behind the sandboxes for a CPU; a reusable
sandbox is made of a pool sandbox that can be snapshotted, and where the pool holds none
the zygote forks one that warms up; and reusable sandboxes no longer fill the zygote's cap
of single-use ones.  ``bench_overload.py --before`` (load 9.6, with other work on the
machine) read the CPU of the worker's processes per answer at 1.5×, 2× and 3× 104, 105 and
112 % of that at 1×, against 114, 116 and 123 % for the tree before (a reading at load
12.3, of a tree with the first of the three alone, had it the other way round: loaded, it is
noise).  Closing a refused request's connection instead of reading its
body would save at most 0.02-0.04 ms of a refusal's 0.21-0.25 ms, so refusals still read the
body, and the client keeps its connection.
A server in one process, like the aiohttp baseline, never uses the second CPU, so what the
generator takes costs it nothing.  Refusals are
decided on the event loop, which waits for a CPU like the sandboxes do: on a busy machine a
503 takes as long as the loop takes to get one (the ``rej.p99`` column).
``bench_overload.py`` runs its overload levels twice (``--rounds``) and compares each with
the same worker's 1× level, since a share of a peak read at one level swings with that
level.

Reproduce
---------

.. code-block:: console

   $ pip install -e '.[bench]'     # matplotlib and ray[serve]
   $ python benchmarks/paper/run.py --quick   # a few minutes; without --quick, longer levels
   $ #  (--native process kvm wasm: the engines that also run the C implementation; --no-ray;
   $ #   --no-python --no-ray: only the C systems, aiohttp and the fresh interpreter)
   $ python benchmarks/paper/report.py benchmarks/results/paper.json --rst docs/performance.rst

``run.py`` writes ``benchmarks/results/paper.json``, ``paper.txt`` and the figures;
``report.py`` regenerates the table, the figures and this page from the JSON file.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results/paper.json")
    parser.add_argument("--rst", help="also write the documentation page here")
    args = parser.parse_args()
    path = Path(args.results)
    data = json.loads(path.read_text())
    write(data, path.parent)
    if args.rst:
        page = Path(args.rst)
        page.write_text(rst(data, path.parent, page))


if __name__ == "__main__":
    main()
