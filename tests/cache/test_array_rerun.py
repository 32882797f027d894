"""The rerun of one array in and one out in C (:mod:`dandelion.runtime.array_rerun`): the
same keys, hits and outputs as the Python path, or the Python path itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dandelion as dd
from dandelion.cache import MemoryStore, hashing, open_cache
from dandelion.cache.entry import CorruptEntry, pack, unpack
from dandelion.runtime.array_rerun import ArrayRerun, _array_key, _array_value
from dandelion.runtime.run_memo import SEEN, RunMemo
from tests.cache.test_run_memo import ENGINES, GRAM, Recording

pytestmark = pytest.mark.skipif(_array_key is None, reason="the C extension lacks the path")

DTYPES = ["<i8", "<i4", "<u2", "|i1", "|u1", "|b1", "<f2", "<f4", "<f8", "<c8", "<c16",
          ">i8", ">f4", "<U3", "|S4", "<M8[s]", "<m8[ms]"]

#: arrays of many dtypes, shapes and orders: the C path takes the plain ones, the Python
#: path the others (Fortran order, a stride, a subclass, empty, byte-swapped)
VALUES = [
    np.arange(12, dtype=np.int64).reshape(3, 4), np.arange(12, dtype=np.int64).reshape(4, 3),
    np.arange(12, dtype=np.int64).reshape(3, 4).T, np.arange(12, dtype=np.int64)[::2],
    np.arange(12, dtype=np.int64).reshape(2, 3, 2), np.array(7), np.zeros((0, 3)),
    np.arange(12, dtype=np.int64).view(np.ma.MaskedArray), np.array(["ab", "c"]),
    np.arange(16, dtype=np.uint8).reshape(4, 4)[:, :2], np.ones(5, dtype=np.bool_),
    *(np.arange(6).astype(np.dtype(d)).reshape(2, 3) for d in DTYPES),
]


def _rerun(rt: dd.Runtime, fn: Any) -> tuple[ArrayRerun, RunMemo]:
    program = fn.program
    memo = rt._memo(program, rt.plan(program))
    rerun = ArrayRerun.of(program, memo)
    assert rerun is not None and memo is not None
    return rerun, memo


def _python_key(memo: RunMemo, cache: Any, value: Any) -> tuple[str | None, bytes | None]:
    """The storage key and input id the Python path makes for a run on ``value``."""
    sets = {memo.inputs[0]: (dd.Item(value),)}
    ids: dict[int, tuple[Any, bytes]] = {}
    key = memo.storage_key(cache, sets, ids)
    return key, next(iter(ids.values()))[1] if ids else None


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_the_c_key_is_the_python_key_for_every_array(load, order):
    # each array after another of another layout: the layout seen last never decides a key
    mod = load(GRAM)
    cache = open_cache(MemoryStore(), namespace="tenant-x")
    with dd.Runtime(engine="inline", workers=1, cache=cache) as rt:
        rerun, memo = _rerun(rt, mod.product)
        values = VALUES if order == "forward" else VALUES[::-1]
        keys, plain = set(), set()
        for value in [*values, *values]:
            made = rerun.key(cache, value, {})
            python = _python_key(memo, cache, value)
            if made is None:  # not a plain array: the Python path keys it
                assert type(value) is not np.ndarray or not value.flags.c_contiguous or \
                    not value.size or not value.dtype.isbuiltin
                continue
            assert made == python and made[0].startswith("tenant-x/")
            keys.add(made[0])
            plain.add((value.dtype.str, value.shape, value.tobytes()))
        assert len(keys) == len(plain) > 10  # every plain array its own key


def test_the_c_key_takes_only_the_layout_it_was_given(load):
    mod = load(GRAM)
    cache = open_cache(MemoryStore())
    with dd.Runtime(engine="inline", workers=1, cache=cache) as rt:
        rerun, memo = _rerun(rt, mod.product)
        a = np.arange(12, dtype=np.int64).reshape(3, 4)
        assert rerun.key(cache, a, {}) is not None
        layout = rerun._input
        prefix = memo.prefix()
        same = np.arange(12, dtype=np.int64).reshape(3, 4) + 1
        assert _array_key(same, layout, prefix, "ns", hashing.new, hashing.ALGORITHM)
        for other in (a.T.copy(), a.astype(np.uint64), a.astype(">i8"), np.asfortranarray(a),
                      a.view(np.ma.MaskedArray), np.arange(24, dtype=np.int64)[::2].reshape(3, 4),
                      a.reshape(2, 6), a.ravel()):
            assert _array_key(other, layout, prefix, "ns", hashing.new,
                              hashing.ALGORITHM) is None, other


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), dtype=st.sampled_from(["<i8", "<i4", "|u1", "<f8", "|b1", "<c8"]),
       shape=st.lists(st.integers(1, 5), min_size=1, max_size=3))
def test_any_change_of_bytes_dtype_or_shape_changes_the_c_key(load_gram, data, dtype, shape):
    cache, rerun, memo = load_gram
    value = data.draw(st.binary(min_size=int(np.prod(shape)) * np.dtype(dtype).itemsize,
                                max_size=int(np.prod(shape)) * np.dtype(dtype).itemsize))
    a = np.frombuffer(value, dtype=dtype).reshape(shape).copy()
    key = rerun.key(cache, a, {})
    assert key is not None and key == _python_key(memo, cache, a)
    assert rerun.key(cache, a.copy(), {}) == key  # equal content: equal key
    at = data.draw(st.integers(0, a.nbytes - 1))
    changed = bytearray(a.tobytes())
    changed[at] ^= 1 << data.draw(st.integers(0, 7))
    others = [np.frombuffer(bytes(changed), dtype=dtype).reshape(shape).copy(),
              a.reshape(-1) if a.ndim > 1 else a.reshape(1, -1),
              a.view(np.uint8) if a.dtype != np.uint8 else a.view(np.int8)]
    for other in others:
        made = rerun.key(cache, other, {})
        assert made is not None and made[0] != key[0] and made == _python_key(memo, cache, other)


@pytest.fixture
def load_gram(load):
    mod = load(GRAM)
    cache = open_cache(MemoryStore())
    with dd.Runtime(engine="inline", workers=1, cache=cache) as rt:
        rerun, memo = _rerun(rt, mod.product)
        yield cache, rerun, memo


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rerun_in_c_serves_what_the_python_path_serves(load, engine, monkeypatch):
    from dandelion.runtime import array_rerun

    served: list[Any] = []

    def counting(data: bytes, layout: Any) -> Any:
        served.append(_array_value(data, layout))
        return served[-1]

    monkeypatch.setattr(array_rerun, "_array_value", counting)
    mod = load(GRAM)
    store = Recording(MemoryStore())
    m = np.random.default_rng(0).integers(-9, 10, size=(16, 16), dtype=np.int64)
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        for _ in range(2):  # computed (its entry is the run's, one instance); served in
            first = rt.run(mod.product, m)  # Python, which learns the output's layout
        rerun = rt._reruns[mod.product.program]
        assert rerun._output is not None and served == []
        store.clear_log()
        again = rt.run(mod.product, m)
        assert store.reads == [store.reads[0]] and store.writes == []  # one lookup
        assert len(served) == 1 and served[0] is again  # in C
        assert (again == m @ m.T).all() and again.dtype == first.dtype
        assert again.flags.writeable and again.flags.owndata and again is not first
        again[0, 0] += 1  # the caller's own copy
        assert (rt.run(mod.product, m) == m @ m.T).all()
        store.clear_log()
        assert (rt.run(mod.product, m=m) == m @ m.T).all()  # by keyword too
        assert store.reads == [store.reads[0]] and store.writes == [] and len(served) == 3
        m[3, 4] += 1  # changed in place: misses, and is computed
        store.clear_log()
        assert (rt.run(mod.product, m) == m @ m.T).all() and len(store.writes) == 1
        mod.SCALE = 2  # a constant a helper reads: misses
        store.clear_log()
        assert (rt.run(mod.product, m) == 2 * m @ m.T).all() and len(store.writes) == 1
        mod.scaled = lambda x: 3 * x  # the helper itself
        assert (rt.run(mod.product, m) == 3 * m @ m.T).all()
        for value in VALUES:  # every other array: what the function gives, by either path
            if value.dtype.kind in "iu" and value.ndim == 2 and type(value) is np.ndarray:
                for _ in range(4):
                    got = rt.run(mod.product, value)
                    assert got.dtype == (3 * value).dtype
                    assert (got == (3 * value) @ value.T).all()


def test_another_tenant_never_hits_through_the_c_path(load):
    mod = load(GRAM)
    store = Recording(MemoryStore())
    m = np.arange(64, dtype=np.int64).reshape(8, 8)
    with dd.Runtime(engine="inline", workers=1, cache=open_cache(store, namespace="a")) as a, \
            dd.Runtime(engine="inline", workers=1, cache=open_cache(store, namespace="b")) as b:
        for _ in range(4):
            a.run(mod.product, m)
        store.clear_log()
        assert (b.run(mod.product, m) == m @ m.T).all()
        assert len(store.writes) == 1 and all(k.startswith("b/") for k in store.reads)


def test_an_entry_reads_in_c_as_unpack_reads_it_even_broken():
    # every truncation and single-bit change of an entry: the C reader gives what unpack
    # gives, or None (the Python path then reads it, or finds it corrupt)
    value = np.arange(12, dtype=np.int64).reshape(3, 4)
    item = dd.Item(value)
    for data in (pack([(item,)])[0], pack([(item,)], {id(item): (item, b"\x01" + b"7" * 32)})[0]):
        outputs, _ids = unpack(data)
        rerun = ArrayRerun.__new__(ArrayRerun)
        rerun.memo = type("Memo", (), {"outputs": ["p"]})()  # type: ignore[assignment]
        rerun._output = None
        rerun.learn({"p": outputs[0]})
        layout = rerun._output
        assert layout is not None
        served = _array_value(data, layout)
        assert served is not None and (served == value).all() and served.flags.owndata
        assert _array_value(SEEN, layout) is None
        for cut in range(len(data)):
            assert _array_value(data[:cut], layout) is None
        for at in range(len(data)):
            for flip in (0x01, 0x80):
                changed = bytearray(data)
                changed[at] ^= flip
                got = _array_value(bytes(changed), layout)
                if got is None:
                    continue
                try:
                    expected = unpack(bytes(changed))[0][0][0].value
                except CorruptEntry:  # pragma: no cover - the C reader must not serve it
                    raise AssertionError(f"C served a corrupt entry (byte {at}) ") from None
                assert got.dtype == expected.dtype and got.shape == expected.shape
                assert got.tobytes() == expected.tobytes()


def test_a_program_of_other_values_has_no_c_rerun(load):
    mod = load(GRAM)
    with dd.Runtime(engine="inline", workers=1, cache=MemoryStore()) as rt:
        program = mod.summed.program
        assert ArrayRerun.of(program, rt._memo(program, rt.plan(program))) is None
