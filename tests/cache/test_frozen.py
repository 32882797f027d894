"""Arrays that can never change (:mod:`dandelion.cache.frozen`): their digests are kept by
identity, and a rerun on one hashes nothing; every way such an array can still change (its
dtype, shape or strides reassigned in place) changes the key."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import numpy as np
import pytest

import dandelion as dd
from dandelion.cache import MemoryStore, frozen, hashing, watch
from tests.cache.test_run_memo import ENGINES, GRAM, Recording

M = np.random.default_rng(3).integers(-9, 10, size=(64, 64), dtype=np.int64)


def from_bytes(m: np.ndarray) -> np.ndarray:
    """``m`` as users get an array from a file or a socket: read-only, over ``bytes``."""
    return np.frombuffer(m.tobytes(), dtype=m.dtype).reshape(m.shape)


def test_only_an_array_over_bytes_that_nothing_can_write_is_frozen():
    data = M.tobytes()
    owned = M.copy()
    owned.flags.writeable = False  # its owner can set it back
    view = M.view()
    view.flags.writeable = False  # M can still be written
    assert frozen.frozen(np.frombuffer(data, dtype=np.int64))
    assert frozen.frozen(np.frombuffer(data, dtype=np.int64).reshape(64, 64)[2:, ::2])
    assert frozen.frozen(np.frombuffer(memoryview(data), dtype=np.int64))
    assert not frozen.frozen(M) and not frozen.frozen(owned) and not frozen.frozen(view)
    assert not frozen.frozen(np.frombuffer(bytearray(data), dtype=np.int64))
    read_only = memoryview(bytearray(data)).toreadonly()  # its bytearray can be written
    assert not frozen.frozen(np.frombuffer(read_only, dtype=np.int64))
    assert not frozen.frozen(data) and not frozen.frozen([1, 2])
    with pytest.raises(ValueError):
        np.frombuffer(data, dtype=np.int64).flags.writeable = True  # why it is sound


def test_a_frozen_arrays_digest_is_made_once_while_it_lives():
    calls: list[int] = []

    def digest(data: Any) -> bytes:
        calls.append(1)
        return hashing.digest(data)

    f = from_bytes(M)
    bulk = memoryview(f).cast("B")
    first = watch.bulk_digest(f, bulk, digest)
    assert first == hashing.digest(M.tobytes()) and len(calls) == 1
    assert watch.bulk_digest(f, bulk, digest) == first and len(calls) == 1
    w = M.copy()  # writeable, too small to be watched: hashed every time
    for _ in range(2):
        assert watch.bulk_digest(w, memoryview(w).cast("B"), digest) == first
    assert len(calls) == 3
    held = len(watch._SIGHTINGS)
    del f, bulk
    gc.collect()
    assert len(watch._SIGHTINGS) == held - 1  # dropped with its array


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rerun_on_a_frozen_array_hashes_nothing_and_serves_the_same(load, engine,
                                                                       hashed):
    mod = load(GRAM)
    store = Recording(MemoryStore())
    f = from_bytes(M)
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        assert (rt.run(mod.product, M.copy()) == M @ M.T).all()  # computed
        store.clear_log()
        for _ in range(3):  # the same content, frozen: a hit, by content
            assert (rt.run(mod.product, f) == M @ M.T).all()
        assert store.writes == []
        hashed.clear()
        for _ in range(3):
            again = rt.run(mod.product, f)
        assert hashed == [] and (again == M @ M.T).all()
        assert (rt.run(mod.product, from_bytes(M)) == M @ M.T).all()  # another object
        assert hashed and store.writes == []  # hashed, and a hit
        mod.SCALE = 2  # the function's identity is checked on every run, frozen or not
        store.clear_log()
        assert (rt.run(mod.product, f) == 2 * M @ M.T).all() and len(store.writes) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_frozen_array_reshaped_retyped_or_restrided_in_place_misses(load, engine):
    mod = load(GRAM)
    f = from_bytes(M)
    with dd.Runtime(engine=engine, workers=1, cache=MemoryStore()) as rt:
        for change in ("shape", "dtype", "strides"):
            for _ in range(2):  # the second: a rerun of the object as it is now
                got = rt.run(mod.product, f)
                expected = f.astype(f.dtype) @ f.T
                assert got.dtype == expected.dtype and np.array_equal(got, expected, equal_nan=True)
            if change == "shape":
                f.shape = (32, 128)
            elif change == "dtype":
                f.dtype = np.float64
            else:  # a transposed view of the same bytes (numpy 2.4 deprecates it; it works)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    f.strides = (8, 8 * 32)
