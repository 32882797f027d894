"""Caching as users see it: runs on each local engine hit what they computed before, and
miss whenever anything a function could observe changed."""

from __future__ import annotations

import threading
import time

import pytest

import dandelion as dd
from dandelion.cache import MemoryStore, open_cache
from dandelion.runtime.events import Event, EventKind

PIPELINE = """
    import dandelion as dd

    @dd.compute
    def inc(x: int) -> int:
        return x + 1

    @dd.compute
    def parity(x: int) -> int:
        return x % 2

    @dd.compute
    def label(x: int) -> str:
        return "odd" if x else "even"

    @dd.composition
    def incs(xs: list[int]) -> list[int]:
        return inc(dd.each(xs))

    @dd.composition
    def pipeline(x: int) -> str:
        return label(inc(parity(x)))
"""


def test_a_rerun_hits_every_instance(load, recorder):
    mod = load(PIPELINE)
    with recorder.runtime() as rt:
        assert recorder.run(rt, mod.incs, [1, 2, 3]) == ([2, 3, 4], 0)
        assert recorder.run(rt, mod.incs, [1, 2, 3]) == ([2, 3, 4], 3)
        assert recorder.run(rt, mod.incs, [3, 4]) == ([4, 5], 1)


def test_a_fresh_load_of_the_same_code_hits(load, recorder):
    with recorder.runtime() as rt:
        recorder.run(rt, load(PIPELINE).incs, [1, 2])
        assert recorder.run(rt, load(PIPELINE).incs, [1, 2]) == ([2, 3], 2)
        edited = PIPELINE.replace("x + 1", "x + 2")
        assert recorder.run(rt, load(edited).incs, [1, 2]) == ([3, 4], 0)


@pytest.mark.parametrize("change", ["value", "key", "name"])
def test_changing_an_input_items_bytes_key_or_name_misses(load, recorder, change):
    mod = load(PIPELINE)
    base = [dd.Item(1, key=1, name="a")]
    other = {"value": dd.Item(2, key=1, name="a"), "key": dd.Item(1, key=2, name="a"),
             "name": dd.Item(1, key=1, name="b")}[change]
    with recorder.runtime() as rt:
        recorder.run(rt, mod.incs, base)
        assert recorder.run(rt, mod.incs, base)[1] == 1
        assert recorder.run(rt, mod.incs, [other])[1] == 0


def test_changing_the_sharding_mode_misses(load, recorder):
    mod = load("""
        import dandelion as dd

        @dd.compute
        def count(xs: list[int]) -> list[int]:
            return [len(xs)]

        @dd.composition
        def each(xs: list[int]) -> list[int]:
            return count(dd.each(xs))

        @dd.composition
        def whole(xs: list[int]) -> list[int]:
            return count(xs)
    """)
    with recorder.runtime() as rt:
        assert recorder.run(rt, mod.each, [5]) == ([1], 0)
        assert recorder.run(rt, mod.whole, [5]) == ([1], 0)  # the same item, whole
        assert recorder.run(rt, mod.whole, [5]) == ([1], 1)


def test_early_cutoff_recomputes_only_the_stage_whose_input_changed(load, recorder):
    mod = load(PIPELINE)
    # unfused: a fused chain is cached as one (docs/fusion.rst), its stages' outputs
    # never leave its sandbox to be compared
    with recorder.runtime(fuse=False) as rt:
        assert recorder.run(rt, mod.pipeline, 1) == ("odd", 0)
        # 3 is odd like 1: stage 1 runs again, and as its output is the same, the stages
        # after it hit
        assert recorder.run(rt, mod.pipeline, 3) == ("odd", 2)
        assert [r.hits for r in recorder.reports] == [0, 1, 1]
    if recorder.ray:
        return  # the Ray backend runs a chain's applications as units of their own
    with recorder.runtime() as rt:  # fused: one key for the chain, of its inputs
        assert recorder.run(rt, mod.pipeline, 1) == ("odd", 0)
        assert recorder.run(rt, mod.pipeline, 3) == ("odd", 0)
        assert recorder.run(rt, mod.pipeline, 3) == ("odd", 1)
        assert [r.function for r in recorder.reports] == ["parity+inc+label"]


def test_a_function_declared_not_cacheable_always_runs(load, recorder):
    mod = load(PIPELINE.replace("@dd.compute\n    def inc", "@dd.compute(cacheable=False)\n"
                                "    def inc"))
    with recorder.runtime() as rt:
        recorder.run(rt, mod.incs, [1, 2])
        assert recorder.run(rt, mod.incs, [1, 2]) == ([2, 3], 0)
        assert recorder.reports[0].reason == "declared cacheable=False"


def test_a_raising_instance_is_not_cached_and_runs_again(load, recorder):
    mod = load("""
        import dandelion as dd

        @dd.compute
        def check(x: int) -> int:
            if x < 0:
                raise ValueError("negative")
            return x

        @dd.composition
        def checks(xs: list[int]) -> list[int]:
            return check(dd.each(xs))
    """)
    with recorder.runtime() as rt:
        recorder.run(rt, mod.checks, [1])
        for _ in range(2):  # it raises each time: it ran each time
            with pytest.raises(dd.FunctionError, match="negative"):
                recorder.run(rt, mod.checks, [-1])
            assert sum(r.hits for r in recorder.reports) == 0
        assert recorder.run(rt, mod.checks, [1, 2]) == ([1, 2], 1)


def test_two_namespaces_never_share_an_entry(load, recorder):
    mod = load(PIPELINE)
    store = recorder.store()
    tenant_a = open_cache(store, namespace="tenant-a")
    tenant_b = open_cache(store, namespace="tenant-b")
    with recorder.runtime(tenant_a) as rt_a, recorder.runtime(tenant_b) as rt_b:
        recorder.run(rt_a, mod.incs, [1, 2])
        assert recorder.run(rt_b, mod.incs, [1, 2])[1] == 0
        assert recorder.run(rt_a, mod.incs, [1, 2])[1] == 2


def test_cache_false_and_refresh_per_run(load, recorder):
    mod = load(PIPELINE)
    with recorder.runtime() as rt:
        recorder.run(rt, mod.incs, [1])
        recorder.reports.clear()
        assert rt._run(mod.incs, ([1],), {}, False) == [2] and recorder.reports == []
        assert rt._run(mod.incs, ([1],), {}, "refresh") == [2]
        assert [r.hits for r in recorder.reports] == [0]
        assert recorder.run(rt, mod.incs, [1])[1] == 1
        with pytest.raises(dd.DandelionError, match="cache=True, False or 'refresh'"):
            rt._run(mod.incs, ([1],), {}, "sometimes")


def test_concurrent_identical_runs_compute_once(load, recorder):
    # on Ray, across units and nodes: through leases in the shared store (Redis)
    mod = load("""
        import time
        import dandelion as dd

        @dd.compute
        def slow(x: int) -> int:
            time.sleep(1.0)
            return x * 10

        @dd.composition
        def slows(xs: list[int]) -> list[int]:
            return slow(dd.each(xs))
    """)
    with recorder.runtime() as rt:
        rt.run(mod.slows, [0])  # started: the four runs below are in flight together
        recorder.computed.clear()
        t0 = time.monotonic()
        results = []
        threads = [threading.Thread(target=lambda: results.append(rt.run(mod.slows, [4])))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        assert results == [[40]] * 4
        assert len(recorder.computed) == 1  # one computed it, the others waited for it
        if not recorder.ray:  # in flight at once (no hit), on 2 workers: 4 times takes 2 s
            assert sum(r.hits for r in recorder.reports) == 0
            assert took < 1.8, took
        # (Ray may queue units for a CPU, one after the other: the later ones then hit;
        # test_ray.py has runs on two nodes at once)
    with recorder.runtime() as rt:  # identical instances inside one run, too
        recorder.computed.clear()
        result, hits = recorder.run(rt, mod.slows, [1, 1, 1, 1])
        assert result == [10] * 4 and len(recorder.computed) == 1
        assert hits == 0 or recorder.ray


def test_the_event_stream_says_each_application_s_hits_misses_and_bytes_served(load,
                                                                               recorder):
    mod = load(PIPELINE)

    def run(xs: list[int]) -> tuple[int, int, int]:
        recorder.run(rt, mod.incs, xs)  # (on Ray, one event per unit of the application)
        assert {(r.function, r.application, r.instance) for r in recorder.reports} == \
            {("inc", 0, -1)}
        return (sum(r.hits or 0 for r in recorder.reports),
                sum(r.misses or 0 for r in recorder.reports),
                sum(r.bytes_served or 0 for r in recorder.reports))

    with recorder.runtime() as rt:
        assert run([1, 2]) == (0, 2, 0)
        hits, misses, served = run([1, 2, 3])
        assert (hits, misses) == (2, 1) and served > 0
        assert run([1, 2, 1, 2]) == (4, 0, 2 * served)


def test_cli_stats_shows_the_cache_s_hits_per_application(load, capsys, tmp_path):
    from dandelion.cli import main

    load(PIPELINE, "stats_mod")
    target = f"{tmp_path}/stats_mod.py:incs"
    cache = str(tmp_path / "cache")
    for _ in range(2):
        assert main(["run", target, "-i", "xs=1", "-i", "xs=2", "--engine", "inline",
                     "--cache", cache, "--stats"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].split()[-3:] == ["hits", "misses", "served"]
    first, second = lines[1].split(), lines[3].split()
    assert first[:3] == ["incs[0]", "inc", "2"] and first[-3:-1] == ["0", "2"]
    assert second[:4] == ["incs[0]", "inc", "0", "-"] and second[-3:-1] == ["2", "0"]


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_run_waiting_on_a_failed_run_s_instance_computes_it_itself(load, engine):
    # run A leads the flight of step(7) and fails before computing it (one worker: its
    # failing instance runs first, step(7) is skipped); run B, started meanwhile, waits on
    # that flight, and must compute step(7) itself
    mod = load("""
        import time
        import dandelion as dd

        @dd.compute
        def step(x: int) -> int:
            time.sleep(0.6)
            if x < 0:
                raise ValueError("negative")
            return x * 10

        @dd.composition
        def steps(xs: list[int]) -> list[int]:
            return step(dd.each(xs))
    """)
    events: list[Event] = []
    with dd.Runtime(engine=engine, workers=1, cache=MemoryStore(), fuse=False,
                    observers=[events.append]) as rt:
        first: list[BaseException] = []

        def run_a() -> None:
            try:
                rt.run(mod.steps, [-1, 7])
            except dd.DandelionError as e:
                first.append(e)

        second: list[list[int]] = []
        a = threading.Thread(target=run_a, daemon=True)
        a.start()
        time.sleep(0.3)  # A has looked up and leads both flights; -1 runs
        b = threading.Thread(target=lambda: second.append(rt.run(mod.steps, [7])),
                             daemon=True)
        b.start()
        a.join(30)
        b.join(30)
        assert not b.is_alive(), "run B still waits for the flight of a failed run"
    assert second == [[70]]
    assert first and "negative" in str(first[0])
    cached = [e for e in events if e.kind is EventKind.CACHED]
    assert [(e.hits, e.misses) for e in cached] == [(0, 2), (0, 1)]
    ran = [e.outcome for e in events if e.kind is EventKind.FINISHED]
    assert ran == ["failed", "ok"]  # step(-1) by A, step(7) by B: A was cancelled before
