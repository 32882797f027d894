"""Arrays known not to have changed since they were hashed, so that a rerun need not hash
them again.

A cache key hashes its inputs' content on every run, because an array may change in place
between two runs: a rerun after ``a[0, 0] += 1`` must miss.  For a large array that hash is
most of what a warm rerun costs (about 34 µs for 128 KiB with BLAKE3 on the machine of
``docs/performance.rst``, against 1 µs to ask the kernel whether its memory was written).
An array is known unchanged since a hash when either

- it is :func:`~dandelion.cache.frozen.frozen`: nothing can ever write its memory; or
- its memory is **watched** (Linux 6.11+; :mod:`dandelion.cache._watchc`): before the hash,
  the pages it lies in were write-protected with userfaultfd's asynchronous mode, and
  ``PAGEMAP_SCAN`` reports none of them written, dropped or remapped since.  A write by any
  thread of this process, or by the kernel on its behalf (``read`` into the array), or by
  another process (``process_vm_writev``) clears the protection and marks the page
  written; the next run sees it and hashes again.  Only private anonymous memory is watched
  (where numpy allocates): a shared mapping can be written through another process's page
  tables, and a private file mapping shows changes to the file in the pages it has not
  copied.

Each live array hashed has one :class:`Sighting` (:func:`sighting_of`), kept by a weak
reference and dropped with the array.  An array is watched the *second* time it is hashed
(once, it may be used once: a watch costs its later writes a minor fault per page), and
only while watching pays: an array found written before any run found it unwritten is not
watched again.  Protecting pages clears the record of writes to them, so every protection
also ends what is known of every other sighting whose pages overlap (two views of one
array, two arrays sharing a page); they hash again.

What the watch cannot see: memory the kernel or a device writes through a long-term pin
made before the protection (an ``io_uring`` fixed buffer, RDMA, ``O_DIRECT`` in flight),
since such writes do not go through this process's page tables.  Set
``DANDELION_CACHE_WATCH=0`` to hash every writeable array on every run.

>>> import numpy as np
>>> from dandelion.cache import hashing
>>> a = np.arange(32768)                    # 256 KiB
>>> bulk = memoryview(a).cast("B")
>>> first = bulk_digest(a, bulk, hashing.digest)
>>> bulk_digest(a, bulk, hashing.digest) == first   # hashed again, now watched
True
>>> a[7] = -1
>>> bulk_digest(a, bulk, hashing.digest) == first   # the write is seen
False
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from typing import Any, Callable

from dandelion.cache.frozen import frozen
from dandelion.codec import ndarray_class

_watchc: Any
try:
    import dandelion.cache._watchc as _watchc
except ImportError:  # not Linux, or built without a C compiler
    _watchc = None

#: Arrays smaller than this are hashed each time (a lookup costs about as much).
MIN_BYTES = 4096

#: Writeable arrays smaller than this are not watched: hashing them costs a few µs, while a
#: watch costs their later writes a fault per page and the process a memory mapping.
WATCH_MIN_BYTES = 65536

#: At most this many arrays are watched at once (each may split a memory mapping in up to
#: three); the one watched longest ago is let go first.
MAX_WATCHED = 256


def _enabled() -> bool:
    """Whether arrays may be watched: the kernel lets this process, and
    ``DANDELION_CACHE_WATCH`` is not ``0``, ``false``, ``off`` or ``no``."""
    switched = os.environ.get("DANDELION_CACHE_WATCH", "1").strip().lower()
    return _watchc is not None and switched not in ("0", "false", "off", "no") and \
        _watchc.available()


class Sighting:
    """What is known of one live array that was hashed: whether its bytes can have changed
    since.  Use :func:`sighting_of`; a hash made after :meth:`arm` returned ``generation``
    holds while :meth:`unchanged` with that generation is true."""

    __slots__ = ("ref", "frozen", "generation", "pages", "seen", "paid", "restless",
                 "digest", "__weakref__")

    def __init__(self, value: Any) -> None:
        #: a weak reference to the array (its death drops the sighting)
        self.ref = weakref.ref(value, functools.partial(_ended, id(value)))
        #: whether the array can never change (then every hash holds)
        self.frozen = frozen(value)
        #: counts the protections of its pages, and what ended them (0: none yet)
        self.generation = 0
        #: while watched, what :func:`_watchc.protect` gave: the whole pages ``lo, hi`` in
        #: it, and a copy of its bytes before and after them
        self.pages: tuple[int, int, bytes, bytes] | None = None
        #: whether it was hashed once (it is watched from its second hash on)
        self.seen = False
        #: whether a run found it unwritten since its last protection
        self.paid = False
        #: watched, then written before any run found it unwritten: not watched again
        self.restless = False
        #: the generation, size and digest of its bulk (for :func:`bulk_digest`)
        self.digest: tuple[int, int, bytes] | None = None

    def unchanged(self, value: Any, generation: int) -> bool:
        """Whether ``value`` is this sighting's array and its bytes are those it had when
        hashed after :meth:`arm` returned ``generation``."""
        if self.ref() is not value:
            return False
        if self.frozen:
            return True
        if generation != self.generation or self.pages is None or \
                not _watchc.unwritten(value, self.pages):
            return False
        self.paid = True
        return True

    def arm(self, value: Any) -> int:
        """Call right before hashing ``value``, this sighting's array: the generation the
        hash will hold in (-1: this run only).  From the second hash on, the array's pages
        are protected first (see the module), so that a write during or after the hash is
        seen."""
        if self.frozen:
            return 0
        with _LOCK:  # (generations only grow: an increment lost to a race is unsound)
            if self.pages is not None:
                if _watchc.unwritten(value, self.pages):  # nothing written since: hash
                    self.paid = True  # under it
                    return self.generation
                if not self.paid:  # written before any rerun found it unwritten: let go
                    self._release()
                    self.restless = True
                    return -1
            elif not self.seen or self.restless or value.nbytes < WATCH_MIN_BYTES or \
                    not _enabled():
                self.seen = True
                return -1
            pages = _watchc.protect(value)
            if not pages:  # not private anonymous memory, or not a buffer
                self.restless = True
                return -1
            self.pages, self.paid = pages, False
            self.generation += 1  # after the protection: a hash under it sees every write
            _watching(self)  # made after it
            return self.generation

    def forget(self) -> None:
        """End what is known under the current protection (another's protection of pages
        it shares cleared their record of writes): the next run hashes again."""
        with _LOCK:
            self.generation += 1

    def _release(self) -> None:
        with _LOCK:
            pages, self.pages = self.pages, None
            self.generation += 1
            if pages is not None:
                _WATCHED.pop(id(self), None)
                _watchc.release(pages[0], pages[1])


def _ended(key: int, ref: weakref.ref[Any]) -> None:
    """The array of ``_SIGHTINGS[key]`` (whose weak reference is ``ref``) is gone."""
    sighting = _SIGHTINGS.get(key)
    if sighting is not None and sighting.ref is ref:
        del _SIGHTINGS[key]
        if sighting.pages is not None:
            sighting._release()


#: held while a generation changes (re-entrant: a sighting's array may die, and be let go,
#: in a collection during another's change)
_LOCK = threading.RLock()
#: the sighting of each live array hashed, by the array's id
_SIGHTINGS: dict[int, Sighting] = {}
#: the watched sightings, by their own id, in the order they were last protected
_WATCHED: dict[int, Sighting] = {}


def sighting_of(value: Any) -> Sighting:
    """The :class:`Sighting` of the live array ``value`` (made the first time)."""
    known = _SIGHTINGS.get(id(value))
    if known is not None and known.ref() is value:
        return known
    with _LOCK:  # (two threads keying the same new array make one sighting of it)
        known = _SIGHTINGS.get(id(value))
        if known is not None and known.ref() is value:
            return known
        made = _SIGHTINGS[id(value)] = Sighting(value)
        return made


def sighting_for(value: Any) -> Sighting | None:
    """The :class:`Sighting` of ``value`` where keeping one pays: an ``ndarray`` of at
    least :data:`MIN_BYTES` (a smaller one is hashed about as fast as it is looked up);
    else ``None``."""
    ndarray = ndarray_class()
    if ndarray is None or not isinstance(value, ndarray) or value.nbytes < MIN_BYTES:
        return None
    return sighting_of(value)


def _watching(sighting: Sighting) -> None:
    """``sighting`` was just protected: what was known of others sharing its pages ends,
    and the one watched longest ago is let go past :data:`MAX_WATCHED`."""
    assert sighting.pages is not None
    lo, hi = sighting.pages[:2]
    _WATCHED.pop(id(sighting), None)
    for other in list(_WATCHED.values()):
        if other.pages is not None and other.pages[0] < hi and lo < other.pages[1]:
            other.forget()
    _WATCHED[id(sighting)] = sighting
    while len(_WATCHED) > MAX_WATCHED:
        next(iter(_WATCHED.values()))._release()


def bulk_digest(value: Any, bulk: memoryview, digest: Callable[[Any], bytes]) -> bytes:
    """``digest(bulk)``, ``bulk`` being the C-contiguous bytes of the array ``value``;
    remembered while ``value`` is known unchanged (see the module), when at least
    :data:`MIN_BYTES`."""
    size = bulk.nbytes
    sighting = sighting_for(value)
    if sighting is None:
        return digest(bulk)
    known = sighting.digest
    if known is not None and known[1] == size and sighting.unchanged(value, known[0]):
        return known[2]
    generation = sighting.arm(value)
    made = digest(bulk)
    sighting.digest = (generation, size, made)
    return made
