"""The whole-run memo (:mod:`dandelion.runtime.run_memo`): a rerun on the same inputs is
served in one lookup, and misses whenever a per-instance key would."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Sequence

import numpy as np
import pytest

import dandelion as dd
from dandelion.cache import DiskStore, MemoryStore, Store, open_cache
from dandelion.runtime.run_memo import RunMemo

#: the runtimes a plain ``Runtime.run`` memoizes whole on (it is above the backend)
ENGINES = ["inline", "process"]

GRAM = """
    import numpy as np
    import dandelion as dd

    SCALE = 1

    def scaled(m):
        return m * SCALE

    @dd.compute
    def gram(m: np.ndarray) -> np.ndarray:
        return scaled(m) @ m.T

    @dd.compute
    def total(p: np.ndarray) -> int:
        if p[0, 0] < 0:
            raise ValueError("a negative corner")
        return int(p.sum())

    @dd.composition
    def product(m: np.ndarray) -> np.ndarray:
        return gram(m)

    @dd.composition
    def summed(m: np.ndarray) -> int:
        return total(gram(m))

    @dd.composition
    def checked(p: np.ndarray) -> int:
        return total(p)
"""


class Recording(Store):
    """A store that records the keys read and written through it."""

    kind = "recording"

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reads: list[str] = []
        self.writes: list[str] = []
        self.calls = 0  # to write

    def clear_log(self) -> None:
        self.reads.clear()
        self.writes.clear()
        self.calls = 0

    def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        return self.inner.get(key)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.reads.extend(keys)
        return self.inner.get_many(keys)

    def put(self, key: str, value: bytes) -> None:
        self.writes.append(key)
        self.calls += 1
        self.inner.put(key, value)

    def put_many(self, entries: Sequence[tuple[str, bytes]]) -> None:
        self.writes.extend(k for k, _ in entries)
        self.calls += 1
        self.inner.put_many(entries)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def clear(self, namespace: str | None = None) -> int:
        return self.inner.clear(namespace)

    def info(self) -> dict[str, Any]:
        return self.inner.info()


def _matrix(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-9, 10, size=(16, 16), dtype=np.int64)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_rerun_is_served_whole_with_equal_outputs(load, engine):
    # a plan of one application run as one instance: the run key is its instance's key,
    # looked up once; its entry, kept once, is the run's
    mod = load(GRAM)
    store = Recording(MemoryStore())
    m = _matrix()
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        first = rt.run(mod.product, m)
        run_key = store.reads[0]
        assert store.reads == [run_key] and store.writes == [run_key] and store.calls == 1
        store.clear_log()
        again = rt.run(mod.product, m)
        assert (again == m @ m.T).all() and (again == first).all()
        assert store.reads == [run_key] and store.writes == []  # one lookup, nothing ran
        again[0, 0] += 1  # a served result is the caller's own, writable copy
        assert (rt.run(mod.product, m) == first).all()


def test_entries_kept_in_reserved_memory_hold_the_results_the_caller_then_changed(
        load, engine, monkeypatch):
    # an all-miss run reserves the next large entry's memory while it computes
    # (dandelion.cache.entry.reserve), and its entry is written into it: each entry must hold
    # its own run's result, untouched by the caller changing that result in place, and the
    # reruns hit exactly the runs seen
    # (a run driven from the calling thread reserves from one_call, dandelion.runtime.here)
    from dandelion.runtime import dispatcher, one_call

    reserved: list[bool] = []
    real = dispatcher.reserve_entry
    for module in (dispatcher, one_call):
        monkeypatch.setattr(module, "reserve_entry", lambda: reserved.append(real()) or True)
        monkeypatch.setattr(module, "RESERVE_AFTER", 0.0)  # (however fast the machine)
    mod = load(GRAM)
    store = Recording(MemoryStore())
    ms = [np.random.default_rng(seed).integers(-9, 10, size=(128, 128)) for seed in range(6)]
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        for m in ms:
            got = rt.run(mod.product, m)
            assert (got == m @ m.T).all()
            got[:] = -1  # the caller's own array
        # (made while each computed; on process, by each run whose sandbox was begun: the
        # first ones may find none forked yet and run it to its end in one call)
        assert any(reserved) and len(reserved) <= len(ms)
        store.clear_log()
        for m in reversed(ms):
            assert (rt.run(mod.product, m) == m @ m.T).all()
        assert store.writes == [] and len(store.reads) == len(ms)  # every one a hit
        store.clear_log()
        new = ms[0] + 1
        assert (rt.run(mod.product, new) == new @ new.T).all() and len(store.writes) == 1



def test_a_run_reserves_only_once_its_worker_had_the_cpu(load, engine, monkeypatch):
    # reserving at once kept the calling thread on its CPU when the worker (or the sandbox)
    # it had just woken was to run there (the instance reached the engine ~50 µs later): a
    # run waits RESERVE_AFTER first, and one that ends sooner reserves nothing, nor waits
    # for it
    from dandelion.runtime import dispatcher, one_call

    reserved: list[bool] = []
    real = dispatcher.reserve_entry
    for module in (dispatcher, one_call):
        monkeypatch.setattr(module, "reserve_entry", lambda: reserved.append(real()) or True)
        monkeypatch.setattr(module, "RESERVE_AFTER", 60.0)
    mod = load(GRAM)
    ms = [np.random.default_rng(seed).integers(-9, 10, size=(128, 128)) for seed in range(3)]
    with dd.Runtime(engine=engine, workers=1, cache=MemoryStore()) as rt:
        started = time.monotonic()
        for m in ms:
            assert (rt.run(mod.product, m) == m @ m.T).all()
        assert reserved == [] and time.monotonic() - started < 30


def test_a_run_started_on_a_loop_reserves_the_next_entry_and_keeps_its_own_result(
        load, engine, monkeypatch):
    # the server's path (Runtime.start_here from a coroutine; a function called alone takes
    # the one-call path, dandelion.runtime.one_call): an all-miss run reserves the next large
    # entry's memory on the loop's next turn, while it computes; each entry holds its own
    # run's result, untouched by the caller changing that result in place
    from dandelion.runtime import dispatcher, one_call

    reserved: list[bool] = []
    real = dispatcher.reserve_entry
    for module in (dispatcher, one_call):
        monkeypatch.setattr(module, "reserve_entry", lambda: reserved.append(real()) or True)
    mod = load(GRAM)
    store = Recording(MemoryStore())
    ms = [np.random.default_rng(seed).integers(-9, 10, size=(128, 128)) for seed in range(4)]

    async def runs(rt: dd.Runtime) -> list[np.ndarray]:
        plan, program = rt.plan(mod.product), mod.product.program
        loop = asyncio.get_running_loop()
        out = []
        for m in [*ms, *ms]:  # all miss, then all hit
            started = rt.start_here(plan, program.bind((m,), {}), program.artifacts,
                                    rt.cache, None, loop)
            assert started is not None
            got = program.unbind(await started)
            out.append(got.copy())
            got[:] = -1  # the caller's own array
        return out

    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        got = asyncio.run(runs(rt))
    assert all((g == m @ m.T).all() for g, m in zip(got, [*ms, *ms]))
    assert len(reserved) == len(ms) and any(reserved)  # once per run that kept an entry
    assert len(store.writes) == len(ms)  # the second round hit

def test_a_run_on_new_inputs_keeps_its_outputs_once(load):
    mod = load(GRAM)
    store = MemoryStore()
    m = _matrix()
    with dd.Runtime(engine="inline", workers=1, cache=store, fuse=False) as rt:
        rt.run(mod.product, m)
        once = store.info()["bytes"]
        assert once < 1.1 * m.nbytes + 1000  # the instance's entry, which is the run's
        rt.run(mod.product, m)
        assert store.info()["bytes"] == once  # served from it: nothing kept again
        rt.run(mod.summed, m)  # two applications: gram's entry hits, total's is kept
        twice = store.info()["bytes"]
        assert twice < once + 1000
        rt.run(mod.summed, m)  # seen again: kept whole too
        assert store.info()["bytes"] > twice


def test_a_run_hashes_its_input_once(load, engine, monkeypatch):
    # the run key and the instance's key share the input's digest: the run's lookups take
    # the content ids the memo made (Cache.ids), so an all-miss run reads the 128 KiB
    # input once to hash it, and so do its rerun and a run on another input
    from dandelion.cache import hashing

    mod = load(GRAM)
    m = np.arange(128 * 128, dtype=np.int64).reshape(128, 128)
    bulk: list[int] = []
    digest, new = hashing.digest, hashing.new

    def counting(data: Any) -> bytes:
        if memoryview(data).nbytes >= m.nbytes:
            bulk.append(memoryview(data).nbytes)
        return digest(data)

    def counting_new(data: Any = b"") -> Any:  # (the C path of a rerun hashes through it)
        if memoryview(data).nbytes >= m.nbytes:
            bulk.append(memoryview(data).nbytes)
        return new(data)

    monkeypatch.setattr(hashing, "digest", counting)
    monkeypatch.setattr(hashing, "new", counting_new)
    with dd.Runtime(engine=engine, workers=1, cache=MemoryStore()) as rt:
        for inputs in (m, m, m + 1):
            bulk.clear()
            assert (rt.run(mod.product, inputs) == inputs @ inputs.T).all()
            assert bulk == [m.nbytes]


def test_a_changed_input_byte_misses(load, engine):
    mod = load(GRAM)
    store = Recording(MemoryStore())
    m = _matrix()
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        rt.run(mod.product, m)
        rt.run(mod.product, m)
        changed = m.copy()
        changed[7, 3] += 1
        store.clear_log()
        assert (rt.run(mod.product, changed) == changed @ changed.T).all()
        assert len(store.reads) == 1 and store.writes == store.reads  # missed, kept
        changed_key = store.reads[0]
        m[7, 3] += 1  # the same array object, changed in place, misses too
        store.clear_log()
        assert (rt.run(mod.product, m) == m @ m.T).all()
        assert store.reads[0] == changed_key  # the run of the changed content, seen


@pytest.mark.parametrize("engine", ENGINES)
def test_a_changed_helper_or_constant_misses(load, engine):
    mod = load(GRAM)
    store = Recording(MemoryStore())
    m = _matrix()
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        rt.run(mod.product, m)
        mod.SCALE = 2  # a module constant the helper reads
        store.clear_log()
        assert (rt.run(mod.product, m) == 2 * m @ m.T).all()
        assert len(store.writes) == 1
        mod.scaled = lambda x: x * 3  # the helper itself
        store.clear_log()
        assert (rt.run(mod.product, m) == 3 * m @ m.T).all()
        assert len(store.writes) == 1
        mod.SCALE = 1
        mod.scaled = lambda x: x * mod.SCALE
        store.clear_log()
        assert (rt.run(mod.product, m) == m @ m.T).all()


def test_another_tenant_misses(load):
    mod = load(GRAM)
    store = Recording(MemoryStore())
    m = _matrix()
    tenant_a = open_cache(store, namespace="tenant-a")
    tenant_b = open_cache(store, namespace="tenant-b")
    with dd.Runtime(engine="inline", workers=1, cache=tenant_a) as rt_a, \
            dd.Runtime(engine="inline", workers=1, cache=tenant_b) as rt_b:
        rt_a.run(mod.product, m)
        rt_a.run(mod.product, m)
        store.clear_log()
        assert (rt_b.run(mod.product, m) == m @ m.T).all()
        assert len(store.writes) == 1 and all(k.startswith("tenant-b/") for k in store.reads)
        store.clear_log()
        rt_a.run(mod.product, m)
        assert len(store.reads) == 1 and store.reads[0].startswith("tenant-a/")


def test_refresh_bypasses_the_memo_and_keeps_the_new_run(load, engine):
    mod = load(GRAM)
    store = Recording(MemoryStore())
    m = _matrix()
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        rt.run(mod.product, m)
        store.clear_log()
        assert (rt._run(mod.product, (m,), {}, "refresh") == m @ m.T).all()
        assert store.reads == [] and len(store.writes) == 1  # computed, kept again
        store.clear_log()
        assert (rt._run(mod.product, (m,), {}, False) == m @ m.T).all()
        assert store.reads == store.writes == []
        assert (rt.run(mod.product, m) == m @ m.T).all()  # the refreshed run's entry
        assert len(store.reads) == 1 and store.writes == []


def test_a_raising_run_keeps_no_run_entry_and_raises_again(load):
    mod = load(GRAM)
    store = Recording(MemoryStore())
    m = _matrix()
    with dd.Runtime(engine="inline", workers=1, cache=store, fuse=False) as rt:
        assert rt.run(mod.summed, m) == int((m @ m.T).sum())
        mod.SCALE = -1  # gram now gives a negative corner: total raises
        for attempt in range(2):
            store.clear_log()
            with pytest.raises(dd.FunctionError, match="a negative corner"):
                rt.run(mod.summed, m)
            # gram's new instance is kept the first time; the run never is: the second
            # time it is looked up, misses, and total runs (and raises) again
            assert len(store.writes) == (1 if attempt == 0 else 0)
            assert len(store.reads) == 3
        mod.SCALE = 1
        store.clear_log()
        assert rt.run(mod.summed, m) == int((m @ m.T).sum())  # seen: hits, kept whole
        assert len(store.reads) == 3 and len(store.writes) == 1
        store.clear_log()
        assert rt.run(mod.summed, m) == int((m @ m.T).sum())
        assert len(store.reads) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_raising_run_of_one_application_keeps_no_mark_and_raises_again(load, engine):
    # one application run as one instance: its entry is the run's, so a run whose
    # instance raises keeps nothing, and the next run on those inputs runs it again
    mod = load(GRAM)
    store = Recording(MemoryStore())
    bad, good = -_matrix(1) ** 2 - 1, _matrix(2)
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        for _ in range(2):
            store.clear_log()
            with pytest.raises(dd.FunctionError, match="a negative corner"):
                rt.run(mod.checked, bad)
            assert store.writes == [] and len(store.reads) == 1  # the run's: the instance's
        store.clear_log()
        assert rt.run(mod.checked, good) == int(good.sum())
        run_key = store.reads[0]
        assert store.writes == [run_key] and store.calls == 1
        store.clear_log()
        assert rt.run(mod.checked, good) == int(good.sum())
        assert store.reads == [run_key] and store.writes == []  # served whole


def test_a_broken_run_entry_is_a_miss_and_is_replaced(load):
    mod = load(GRAM)
    store = MemoryStore()
    cache = open_cache(store)
    assert cache is not None
    m = _matrix()
    with dd.Runtime(engine="inline", workers=1, cache=cache) as rt:
        rt.run(mod.product, m)
        memo = RunMemo.of(rt.plan(mod.product), mod.product.program.artifacts,
                          rt.backend.engine_kinds)
        assert memo is not None
        key = memo.storage_key(cache, mod.product.program.bind((m,), {}))
        assert key is not None and store.get(key) is not None
        store.put(key, b"not an entry")
        assert (rt.run(mod.product, m) == m @ m.T).all()
        served, seen = memo.serve(cache, key)
        assert served is not None and seen  # kept again, whole


def test_a_run_with_observers_is_reported_per_application(load):
    mod = load(GRAM)
    events: list[Any] = []
    m = _matrix()
    with dd.Runtime(engine="inline", workers=1, cache=MemoryStore(),
                    observers=[events.append]) as rt:
        rt.run(mod.product, m)
        events.clear()
        rt.run(mod.product, m)
    assert [(e.function, e.hits) for e in events if e.kind == "cached"] == [("gram", 1)]


def test_a_run_kept_by_another_process_is_served_whole(load, tmp_path):
    mod = load(GRAM)
    cache_dir = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        import dandelion as dd
        from dandelion.cache import DiskStore
        import user_mod
        m = np.random.default_rng(0).integers(-9, 10, size=(16, 16), dtype=np.int64)
        with dd.Runtime(engine="inline", workers=1, cache=DiskStore({str(cache_dir)!r})) as rt:
            rt.run(user_mod.product, m)
            rt.run(user_mod.product, m)  # kept whole
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    store = Recording(DiskStore(cache_dir))
    m = _matrix()
    with dd.Runtime(engine="inline", workers=1, cache=store) as rt:
        assert (rt.run(mod.product, m) == m @ m.T).all()
    assert len(store.reads) == 1 and store.writes == []


def test_a_run_through_the_memo_keeps_the_entries_a_watched_run_hits(load):
    # the memo hands the inputs' content ids and the applications' key prefixes to the
    # run's lookups, and keeps the run with the outputs' ids its lookups made: each
    # instance's key and entry is as a run without the memo makes it (two applications of
    # two functions: a prefix handed to the wrong one misses here)
    mod = load(GRAM)
    store = MemoryStore()
    events: list[Any] = []
    m = _matrix()
    with dd.Runtime(engine="inline", workers=1, cache=store, fuse=False) as rt, \
            dd.Runtime(engine="inline", workers=1, cache=store, fuse=False,
                       observers=[events.append]) as watched:
        assert rt.run(mod.summed, m) == int((m @ m.T).sum())
        assert watched.run(mod.summed, m) == int((m @ m.T).sum())
        assert [(e.hits, e.misses) for e in events if e.kind == "cached"] == [(1, 0), (1, 0)]
        other = _matrix(1)
        events.clear()
        assert watched.run(mod.summed, other) == int((other @ other.T).sum())
        assert [(e.hits, e.misses) for e in events if e.kind == "cached"] == [(0, 1), (0, 1)]
        assert rt.run(mod.summed, other) == int((other @ other.T).sum())
        assert rt.run(mod.summed, other) == int((other @ other.T).sum())


def test_a_fused_chain_run_through_the_memo_keeps_the_entry_a_watched_run_hits(load):
    # fused, the two applications run as one unit with its own key prefix: the prefixes the
    # memo made for its key (one per application) are not the unit's, and must not be used
    mod = load(GRAM)
    store = MemoryStore()
    events: list[Any] = []
    m = _matrix(2)
    with dd.Runtime(engine="inline", workers=1, cache=store) as rt, \
            dd.Runtime(engine="inline", workers=1, cache=store,
                       observers=[events.append]) as watched:
        assert rt.run(mod.summed, m) == int((m @ m.T).sum())
        assert watched.run(mod.summed, m) == int((m @ m.T).sum())
        assert [(e.hits, e.misses) for e in events if e.kind == "cached"] == [(1, 0)]


BOUNDS = """
    from typing import NamedTuple

    import dandelion as dd

    class Bounds(NamedTuple):
        lo: int
        hi: int

    @dd.compute
    def bounds(xs: list[int], ys: list[int]) -> Bounds:
        return Bounds(min(xs + ys), max(xs + ys))

    @dd.compute
    def double(x: int) -> int:
        return 2 * x

    @dd.compute
    def doubled(xs: list[int]) -> list[int]:
        return [2 * x for x in xs]

    @dd.composition
    def upper(ys: list[int], xs: list[int]) -> int:
        lo, hi = bounds(xs, ys)
        return hi

    @dd.composition
    def lower(ys: list[int], xs: list[int]) -> int:
        lo, hi = bounds(xs, ys)
        return lo

    @dd.composition
    def each_doubled(xs: list[int]) -> list[int]:
        return double(dd.each(xs))

    @dd.composition
    def all_doubled(xs: list[int]) -> list[int]:
        return doubled(xs)
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_of_one_instance_is_keyed_as_its_instance(load, engine):
    # a plan of one application run as one instance: its run key is the key the dispatcher
    # gives the instance (the parameters' order, not the direct inputs'), so a run through
    # the memo and a watched run, which goes through the dispatcher, hit each other's
    # entries, and another plan of the same instance (its other result) hits it too
    mod = load(BOUNDS)
    store = Recording(MemoryStore())
    events: list[Any] = []
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt, \
            dd.Runtime(engine=engine, workers=1, cache=store,
                       observers=[events.append]) as watched:
        memo = RunMemo.of(rt.plan(mod.upper), mod.upper.program.artifacts,
                          rt.backend.engine_kinds)
        assert memo is not None and memo.sources == ["xs", "ys"]
        assert memo.inputs == ["ys", "xs"]
        assert rt.run(mod.upper, [7, 3], [5, 1]) == 7  # through the memo first
        kept = list(store.writes)
        assert store.reads == kept and len(kept) == 1
        assert watched.run(mod.upper, [7, 3], [5, 1]) == 7
        assert [(e.hits, e.misses) for e in events if e.kind == "cached"] == [(1, 0)]
        store.clear_log()
        assert rt.run(mod.lower, [7, 3], [5, 1]) == 1  # the same instance, its other result
        assert store.reads == kept and store.writes == []
        events.clear()
        store.clear_log()
        assert watched.run(mod.upper, [9], [2]) == 9  # watched first
        assert [(e.hits, e.misses) for e in events if e.kind == "cached"] == [(0, 1)]
        key = list(store.writes)
        store.clear_log()
        assert rt.run(mod.upper, [9], [2]) == 9
        assert store.reads == key and store.writes == []
        store.clear_log()
        assert rt.run(mod.upper, [5, 1], [7, 3]) == 7  # bounds(ys, xs): another instance
        assert store.reads == store.writes and store.reads[0] not in kept


def test_a_plan_that_is_not_one_instance_of_its_inputs_is_keyed_whole(load):
    mod = load(BOUNDS)
    store = Recording(MemoryStore())
    with dd.Runtime(engine="inline", workers=1, cache=store) as rt:
        for target, sources in ((mod.each_doubled, None), (mod.all_doubled, ["xs"])):
            memo = RunMemo.of(rt.plan(target), target.program.artifacts,
                              rt.backend.engine_kinds)
            assert memo is not None and memo.sources == sources
        store.clear_log()
        assert rt.run(mod.each_doubled, [1, 2]) == [2, 4]  # the run's key, then 2 instances'
        assert len(store.reads) == 3 and len(store.writes) == 3  # their entries and a mark
        store.clear_log()
        assert rt.run(mod.all_doubled, []) == []  # no instance: nothing to key or keep
        assert store.writes == []
        assert rt.run(mod.all_doubled, [3]) == [6]
        assert rt.run(mod.all_doubled, []) == []


def test_identical_runs_of_one_instance_in_flight_at_once_compute_once(load, engine):
    # unwatched, through the memo: the first to miss leads the instance's flight in one
    # step (SingleFlight.lead), the others, missing too while it computes, follow it and
    # are handed its entry; so one computes, and one entry is kept (each would keep its own)
    mod = load("""
        import time
        import numpy as np
        import dandelion as dd

        @dd.compute
        def slow_gram(m: np.ndarray) -> np.ndarray:
            time.sleep(1.0)
            return m @ m.T

        @dd.composition
        def product(m: np.ndarray) -> np.ndarray:
            return slow_gram(m)
    """)
    store = Recording(MemoryStore())
    m = _matrix(7)
    with dd.Runtime(engine=engine, workers=2, cache=store) as rt:
        rt.run(mod.product, _matrix(8))  # the plan, its memo and a sandbox: made
        store.clear_log()
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(rt.run(mod.product, m)))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 4 and all((r == m @ m.T).all() for r in results)
    assert len(store.writes) == 1
