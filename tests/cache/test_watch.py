"""The write watch (:mod:`dandelion.cache.watch`): a writeable array rerun unchanged is not
hashed again, and every way its memory can be written since is seen — by this thread,
another thread, the kernel, another process, a dropped page, another view of the same
memory — so that the run misses and computes the right result."""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import tempfile
import threading
from typing import Any, Callable

import numpy as np
import pytest

import dandelion as dd
from dandelion.cache import MemoryStore, hashing, watch
from tests.cache.test_run_memo import ENGINES, GRAM, Recording

watchc: Any = getattr(watch, "_watchc", None)
pytestmark = pytest.mark.skipif(watchc is None or not watchc.available(),
                                reason="this kernel cannot watch memory (Linux 6.11+)")

LIBC = ctypes.CDLL(None, use_errno=True)
PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4

#: 128x128 int64: 128 KiB, watched from its second hash on
M = np.random.default_rng(5).integers(-9, 10, size=(128, 128), dtype=np.int64)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def write_from_another_process(a: np.ndarray, offset: int) -> None:
    """Write 8 bytes into ``a`` at ``offset`` from a forked child, with process_vm_writev."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        data = ctypes.create_string_buffer(b"\x7f" * 8)
        local = _Iovec(ctypes.addressof(data), 8)
        remote = _Iovec(a.ctypes.data + offset, 8)
        written = LIBC.process_vm_writev(os.getppid(), ctypes.byref(local), 1,
                                         ctypes.byref(remote), 1, 0)
        os._exit(0 if written == 8 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def write_by_the_kernel(a: np.ndarray, offset: int) -> None:
    """Have the kernel write 100 bytes into ``a`` (``readv`` from a pipe)."""
    r, w = os.pipe()
    try:
        os.write(w, b"k" * 100)
        assert os.readv(r, [memoryview(a).cast("B")[offset:offset + 100]]) == 100
    finally:
        os.close(r)
        os.close(w)


def drop(a: np.ndarray, offset: int) -> None:
    """Drop the page at ``offset`` (``madvise(MADV_DONTNEED)``): it reads as zeros."""
    page = (a.ctypes.data + offset) & ~(PAGE - 1)
    assert LIBC.madvise(ctypes.c_void_p(page), PAGE, MADV_DONTNEED) == 0


def another_thread(a: np.ndarray, offset: int) -> None:
    t = threading.Thread(target=lambda: a.reshape(-1).__setitem__(offset // 8, 12345))
    t.start()
    t.join()


WRITERS: dict[str, Callable[[np.ndarray, int], None]] = {
    "this thread": lambda a, offset: a.reshape(-1).__setitem__(offset // 8, -7),
    "another thread": another_thread,
    "the kernel (readv)": write_by_the_kernel,
    "another process (process_vm_writev)": write_from_another_process,
    "a dropped page": drop,
    "a dropped page, read back": lambda a, offset: (drop(a, offset), a.sum()),
}


@pytest.mark.parametrize("how", list(WRITERS))
def test_every_way_of_writing_protected_memory_is_seen(how):
    a = M.copy()
    pages = watchc.protect(a)
    a.sum()  # (what a hash does: read every page)
    assert pages and watchc.unwritten(a, pages)
    other = M.copy()
    other[5, 5] = 0  # elsewhere: not this array's pages
    assert watchc.unwritten(a, pages)
    WRITERS[how](a, 9 * PAGE + 16)
    assert not watchc.unwritten(a, pages)
    assert watchc.protect(a) == pages and a.sum() is not None and watchc.unwritten(a, pages)


@pytest.mark.parametrize("where", [0, -1])
def test_a_write_in_a_page_shared_with_other_memory_is_seen(where):
    # the pages at the buffer's ends (shared with the C library's bookkeeping and with
    # neighbours) are compared rather than watched
    a = np.empty(16384 + 3, dtype=np.int64)[1:-2]  # starts and ends inside a page
    a[:] = 1
    assert a.ctypes.data % PAGE and (a.ctypes.data + a.nbytes) % PAGE
    watched = watchc.protect(a)
    assert watched and watchc.unwritten(a, watched)
    neighbours = [np.ones(100) for _ in range(50)]  # allocations that may write near it
    assert watchc.unwritten(a, watched) and neighbours
    a[where] = 2
    assert not watchc.unwritten(a, watched)


def test_memory_another_process_or_a_file_can_change_is_not_watched():
    shared = mmap.mmap(-1, 1 << 17)  # MAP_SHARED: a forked child writes it through its own
    assert watchc.protect(np.frombuffer(shared, dtype=np.uint8)) is False
    with tempfile.TemporaryFile() as f:
        f.write(bytes(1 << 17))
        f.flush()
        private_file = mmap.mmap(f.fileno(), 1 << 17, flags=mmap.MAP_PRIVATE)
        assert watchc.protect(np.frombuffer(private_file, dtype=np.uint8)) is False
        private_file.close()
    private = mmap.mmap(-1, 1 << 17, flags=mmap.MAP_PRIVATE)
    assert watchc.protect(np.frombuffer(private, dtype=np.uint8))
    assert watchc.protect(M[:, ::2]) is False  # not one contiguous buffer


def test_memory_that_is_not_where_it_was_protected_is_not_unwritten():
    a, b = M.copy(), M.copy()
    pages = watchc.protect(a)
    assert watchc.protect(b) and watchc.unwritten(a, pages)
    assert not watchc.unwritten(b, pages)  # other memory, unwritten as it is
    watchc.release(pages[0], pages[1])
    assert not watchc.unwritten(a, pages)  # no longer registered


def test_a_forked_child_does_not_inherit_the_watch():
    a = M.copy()
    pages = watchc.protect(a)
    a.sum()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = not watchc.unwritten(a, pages)  # its copy of the mapping is not registered
        again = watchc.protect(a)  # with a descriptor of its own
        a.sum()
        ok = ok and again == pages and watchc.unwritten(a, pages)
        a[0, 0] += 1
        os._exit(0 if ok and not watchc.unwritten(a, pages) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert watchc.unwritten(a, pages)  # the child's writes were to its own copy


class Counting:
    """A digest function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: Any) -> bytes:
        self.calls += 1
        return hashing.digest(data)


def digest_of(a: np.ndarray, digest: Callable[[Any], bytes]) -> bytes:
    return watch.bulk_digest(a, memoryview(a).cast("B"), digest)


def test_an_array_is_watched_from_its_second_hash_and_a_write_is_seen():
    count = Counting()
    a = M.copy()
    first = digest_of(a, count)
    assert count.calls == 1 and watch.sighting_of(a).pages is None  # once: not watched
    assert digest_of(a, count) == first and count.calls == 2  # twice: watched, then hashed
    assert watch.sighting_of(a).pages is not None
    for _ in range(3):
        assert digest_of(a, count) == first
    assert count.calls == 2  # unchanged: not hashed
    a[100, 3] += 1
    changed = digest_of(a, count)
    assert changed == hashing.digest(a.tobytes()) != first and count.calls == 3
    assert digest_of(a, count) == changed and count.calls == 3  # watched again: it paid


def test_an_array_written_before_the_watch_ever_paid_is_not_watched_again():
    count = Counting()
    a = M.copy()
    for _ in range(2):
        digest_of(a, count)  # the second watches it
    for i in range(4):  # written before every run: a watch only costs its writes faults
        a[0, 0] = i
        assert digest_of(a, count) == hashing.digest(a.tobytes())
    assert count.calls == 6
    sighting = watch.sighting_of(a)
    assert sighting.restless and sighting.pages is None


def test_protecting_one_view_ends_what_was_known_of_another_over_the_same_memory():
    count = Counting()
    a = M.copy()
    view = a[:]  # another object, the same pages
    for _ in range(3):
        digest_of(a, count)  # watched, served once (it paid)
    a[7, 7] = 99  # a's pages written ...
    for _ in range(2):
        digest_of(view, count)  # ... and protected again, for the view (clearing that mark)
    assert digest_of(a, count) == hashing.digest(a.tobytes())  # not a's old digest
    assert digest_of(view, count) == hashing.digest(a.tobytes())


def test_the_watch_is_let_go_with_its_array_and_past_the_limit(monkeypatch):
    monkeypatch.setattr(watch, "MAX_WATCHED", 2)
    for left in list(watch._WATCHED.values()):  # by tests before (a failed one's arrays
        left._release()  # live on in its traceback)
    count = Counting()
    arrays = [M.copy() for _ in range(3)]
    for a in arrays:
        for _ in range(2):
            digest_of(a, count)
    assert len(watch._WATCHED) == 2
    assert watch.sighting_of(arrays[0]).pages is None  # watched longest ago: let go
    arrays[0][1, 1] = 5
    assert digest_of(arrays[0], count) == hashing.digest(arrays[0].tobytes())
    watched = len(watch._WATCHED)
    sightings = len(watch._SIGHTINGS)
    del arrays[-1], a
    gc.collect()
    assert len(watch._WATCHED) == watched - 1 and len(watch._SIGHTINGS) == sightings - 1


@pytest.mark.parametrize("off", ["0", "off", "False"])
def test_no_watch_when_switched_off(monkeypatch, off):
    monkeypatch.setenv("DANDELION_CACHE_WATCH", off)
    count = Counting()
    a = M.copy()
    for _ in range(4):
        digest_of(a, count)
    assert count.calls == 4 and watch.sighting_of(a).pages is None


#: how users change an array in place between two runs
CHANGES: dict[str, Callable[[np.ndarray], Any]] = {
    "a[i, j] += 1": lambda a: a.__setitem__((64, 64), a[64, 64] + 1),
    "np.copyto": lambda a: np.copyto(a, np.flipud(a.copy())),
    "a.fill": lambda a: a.fill(3),
    "readinto from a file": lambda a: _read_into(a),
    "out=": lambda a: np.add(a, 1, out=a),
}


def _read_into(a: np.ndarray) -> None:
    with tempfile.TemporaryFile() as f:
        f.write((np.arange(a.size, dtype=a.dtype) % 7).tobytes())
        f.seek(0)
        assert f.readinto(memoryview(a).cast("B")) == a.nbytes


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rerun_of_a_writeable_array_hashes_nothing_until_it_is_written(load, engine,
                                                                        hashed):
    mod = load(GRAM)
    store = Recording(MemoryStore())
    a = M.copy()
    with dd.Runtime(engine=engine, workers=1, cache=store) as rt:
        for _ in range(2):  # computed, then watched and hit
            assert np.array_equal(rt.run(mod.product, a), a @ a.T)
        hashed.clear()
        store.clear_log()
        for _ in range(3):
            assert np.array_equal(rt.run(mod.product, a), a @ a.T)
        assert hashed == [] and store.writes == []  # served without hashing
        for name, change in CHANGES.items():
            change(a)
            store.clear_log()
            got = rt.run(mod.product, a)
            assert np.array_equal(got, a @ a.T), name
            assert len(store.writes) == 1, name  # a miss, computed and kept
            assert np.array_equal(rt.run(mod.product, a), a @ a.T), name
        mod.SCALE = 2  # the functions' identity is still checked on every run
        assert np.array_equal(rt.run(mod.product, a), 2 * a @ a.T)


def test_an_array_changed_in_place_misses_on_every_runtime(recorder, load):
    mod = load(GRAM, f"gram_{recorder.options.get('backend', 'local')}")
    a = M.copy()
    with recorder.runtime() as rt:
        for _ in range(3):
            assert np.array_equal(recorder.run(rt, mod.product, a)[0], a @ a.T)
        assert recorder.run(rt, mod.product, a)[1] == 1  # a hit
        a[0, :] = 1
        got, hits = recorder.run(rt, mod.product, a)
        assert np.array_equal(got, a @ a.T) and hits == 0
