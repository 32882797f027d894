"""Pushing files out of the kernel's page cache, for tests of what waits for a disk."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path
from typing import Callable

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


def cached_pages(path: str | os.PathLike[str]) -> int:
    """How many of ``path``'s pages are in the page cache now (``mincore`` on a mapping)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if address == _MAP_FAILED:
        raise OSError(ctypes.get_errno(), f"mmap {path}")
    try:
        vector = ctypes.create_string_buffer(-(-size // mmap.PAGESIZE))
        if _libc.mincore(address, size, vector) != 0:
            raise OSError(ctypes.get_errno(), f"mincore {path}")
        return sum(byte & 1 for byte in vector.raw)
    finally:
        _libc.munmap(address, size)


def evict(path: str | os.PathLike[str]) -> None:
    """Push ``path`` out of the kernel's page cache: reading it now waits for the disk.

    ``POSIX_FADV_DONTNEED`` can leave a page behind (one still queued on another CPU's list
    after the write, or under writeback): it is repeated until ``mincore`` says none is left,
    then the kernel is asked to drop its clean caches. A file system that cannot drop a file's
    pages at all (``tmpfs``) fails the calling test with the reason, never passes it silently.
    """
    for attempt in range(50):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        if cached_pages(path) == 0:
            return
        if attempt == 10:
            _drop_caches()
        time.sleep(0.01)
    raise AssertionError(f"{path}: its pages stay in the page cache ({cached_pages(path)} "
                         "left); is it on a file system that keeps files in memory, tmpfs?")


def evict_until(path: str | os.PathLike[str], read: Callable[[], object], *,
                tries: int = 20) -> None:
    """:func:`evict` ``path``, then ``read()``, until it answers ``None`` (it found the file
    out of the page cache).

    Something can bring a page back between :func:`evict`'s check and the read (a machine's
    own activity on the disk, seen on the CI machine once in a few hundred runs), so one
    eviction is not a test of what a read does without the page: a read that never answers
    ``None`` in ``tries`` evictions fails the calling test.
    """
    for _ in range(tries):
        evict(path)
        if read() is None:
            return
    raise AssertionError(f"{path}: still read from the page cache after {tries} evictions")


def _drop_caches() -> None:
    """Ask the kernel to drop clean page-cache pages (root only; a no-op elsewhere)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as knob:
            knob.write("1\n")
    except OSError:
        pass


def evict_tree(root: Path) -> None:
    """:func:`evict` every file under ``root``."""
    for path in root.rglob("*"):
        if path.is_file():
            evict(path)
