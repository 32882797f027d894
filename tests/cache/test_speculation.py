"""Speculation (:mod:`dandelion.runtime.speculation`): a run of one array whose program's
last runs missed computes while its input is hashed and looked up, invisibly except in time."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import dandelion as dd
from dandelion.cache import MemoryStore
from dandelion.runtime import pool, speculation
from dandelion.runtime.events import EventKind
from tests.cache.test_run_memo import Recording

SOURCE = """
    import time
    import numpy as np
    import dandelion as dd

    PAUSE = 0.0

    def checked(m):
        if m[0, 0] < -100:
            raise ValueError("a corner below -100")
        return m

    @dd.compute
    def gram(m: np.ndarray) -> np.ndarray:
        time.sleep(PAUSE)
        return checked(m) @ m.T

    @dd.composition
    def product(m: np.ndarray) -> np.ndarray:
        return gram(m)
"""


def _matrix(seed: int) -> np.ndarray:
    # 32 KiB: large enough to speculate on (speculation.LEAST_BYTES)
    return np.random.default_rng(seed).integers(-9, 10, size=(64, 64), dtype=np.int64)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per speculative run asked for, whether it started (the real method, counted)."""
    runs: list[bool] = []
    real = speculation.Speculation.run

    def counted(self: speculation.Speculation, *args: Any) -> Any:
        out = speculation.NOT_STARTED
        try:
            out = real(self, *args)
        except BaseException:
            out = None  # (it started, and raised)
            raise
        finally:
            runs.append(out is not speculation.NOT_STARTED)
        return out

    monkeypatch.setattr(speculation.Speculation, "run", counted)
    return runs


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per instance a worker ran (the real pool.invoke, counted)."""
    ran: list[int] = []
    real = pool.invoke

    def counted(*args: Any) -> Any:
        ran.append(1)
        return real(*args)

    monkeypatch.setattr(pool, "invoke", counted)
    return ran


def _miss_twice(rt: dd.Runtime, mod: Any) -> None:
    for seed in (101, 102, 103):  # the first makes the memo, the next two miss in a row
        m = _matrix(seed)
        assert (rt.run(mod.product, m) == m @ m.T).all()


def test_all_miss_runs_speculate_and_keep_each_result_once(load, started):
    mod = load(SOURCE)
    store = Recording(MemoryStore())
    with dd.Runtime(engine="process", workers=2, cache=store) as rt:
        _miss_twice(rt, mod)
        assert started == []  # not before the program's runs missed twice in a row
        store.clear_log()
        ms = [_matrix(seed) for seed in range(4)]
        for m in ms:
            got = rt.run(mod.product, m)
            assert (got == m @ m.T).all()
            got[:] = 0  # the caller's own array: the entry is a copy
        assert started == [True] * 4
        assert len(store.writes) == 4 and len(set(store.writes)) == 4  # each kept once
        store.clear_log()
        for m in ms:  # hits, served the results as computed
            assert (rt.run(mod.product, m) == m @ m.T).all()
        assert store.writes == [] and started == [True] * 5  # the first hit was guessed a miss


def test_a_hit_during_speculation_is_served_and_the_speculative_result_dropped(
        load, started, computed):
    mod = load(SOURCE)
    store = Recording(MemoryStore())
    with dd.Runtime(engine="process", workers=2, cache=store) as rt:
        kept = _matrix(1)
        rt.run(mod.product, kept)  # kept (the memo is made)
        for seed in (2, 3):
            rt.run(mod.product, _matrix(seed))  # two misses in a row: the next speculates
        store.clear_log()
        computed.clear()
        got = rt.run(mod.product, kept)
        assert started == [True] and (got == kept @ kept.T).all()
        got[0, 0] += 1  # a hit is the caller's own array
        assert store.writes == []  # the speculative result is never kept
        assert len(computed) <= 1  # (computed unless cancelled before it started)
        assert (rt.run(mod.product, kept) == kept @ kept.T).all()
        assert started == [True]  # a hit sets the guess back: no speculation
        assert store.writes == []


def test_a_speculative_run_that_raises_is_not_kept_and_raises_again(load, started):
    mod = load(SOURCE)
    store = Recording(MemoryStore())
    bad = _matrix(7)
    bad[0, 0] = -101
    with dd.Runtime(engine="process", workers=2, cache=store) as rt:
        _miss_twice(rt, mod)
        store.clear_log()
        for _attempt in range(2):  # recomputed the second time, and raising again (a new
            # copy: the array keyed last is watched for writes, its key known unhashed)
            with pytest.raises(dd.FunctionError, match="a corner below -100") as info:
                rt.run(mod.product, bad.copy())
            assert "gram" in str(info.value)
            assert store.writes == []
        assert started == [True, True]
        good = _matrix(8)
        assert (rt.run(mod.product, good) == good @ good.T).all() and len(store.writes) == 1


def test_identical_runs_at_once_compute_once_with_speculation(load, started, computed):
    mod = load(SOURCE.replace("PAUSE = 0.0", "PAUSE = 0.5"))
    store = Recording(MemoryStore())
    m = _matrix(9)
    with dd.Runtime(engine="process", workers=2, cache=store) as rt:
        _miss_twice(rt, mod)
        store.clear_log()
        computed.clear()
        results: list[Any] = []
        barrier = threading.Barrier(4)

        def run() -> None:
            barrier.wait()
            results.append(rt.run(mod.product, m))

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 4 and all((r == m @ m.T).all() for r in results)
    assert started.count(True) <= 1  # one may speculate, the others follow its flight
    assert len(computed) == 1 and len(store.writes) == 1


def test_no_speculation_where_functions_read_the_callers_array_or_runs_are_watched(
        load, started):
    # inline passes the caller's own array: a function that wrote into it would be keyed by
    # what it wrote; and a watched run reports each application's hits and misses
    mod = load(SOURCE)
    events: list[Any] = []
    for options in ({"engine": "inline"},
                    {"engine": "process", "observers": [events.append]}):
        with dd.Runtime(workers=2, cache=MemoryStore(), **options) as rt:
            _miss_twice(rt, mod)
            for seed in range(3):
                m = _matrix(seed)
                assert (rt.run(mod.product, m) == m @ m.T).all()
            m = _matrix(0)
            assert (rt.run(mod.product, m) == m @ m.T).all()
    assert started == []
    cached = [e for e in events if e.kind is EventKind.CACHED]
    assert [(e.hits, e.misses) for e in cached] == [(0, 1)] * 6 + [(1, 0)]


def test_a_frozen_input_whose_key_is_known_does_not_speculate(load, started):
    mod = load(SOURCE)
    m = _matrix(11)
    frozen = np.frombuffer(m.tobytes(), dtype=m.dtype).reshape(m.shape)
    with dd.Runtime(engine="process", workers=2, cache=MemoryStore()) as rt:
        _miss_twice(rt, mod)
        assert (rt.run(mod.product, frozen) == m @ m.T).all()  # a miss: speculates
        assert started == [True]
        assert (rt.run(mod.product, frozen) == m @ m.T).all()  # its key known: a hit
        assert started == [True]
