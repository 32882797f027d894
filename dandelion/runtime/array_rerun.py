"""A warm rerun of one array in and one array out, in two C calls.

The paper's matrix workload reruns a composition of one ``ndarray`` input and one ``ndarray``
output.  Its whole-run memo (:mod:`dandelion.runtime.run_memo`) serves such a rerun in one
lookup, but through some fifteen Python functions, which cost about as much as half the hash
of the input.  For a program whose one input and one output are plain arrays (not sets, not
items, annotated ``np.ndarray``, ``Any`` or nothing), an :class:`ArrayRerun` serves it in
two calls of the cache's C extension (``dandelion/cache/c/keysc.c``):

- ``array_key`` makes the run key from the input array's own buffer: the input's content id
  (:func:`~dandelion.cache.content.array_id`: the bulk hashed by :mod:`~dandelion.cache.hashing`,
  straight from the buffer, then its record's head), then the run key over
  :meth:`RunMemo.prefix <dandelion.runtime.run_memo.RunMemo.prefix>` (each function's
  identity re-checked, as on every run) and that id, as the storage key
  :meth:`RunMemo.storage_key <dandelion.runtime.run_memo.RunMemo.storage_key>` gives;
- ``array_value`` makes the output array from the entry under that key, in one copy.

Each checks the array or the entry against a *layout* made by the Python path the first time
(the input's type, dtype object and shape with its record's head; the entry's record head and
size), and answers ``None`` for anything else: another dtype or shape, an array that is not
C-contiguous or is empty, a subclass, an entry that is not one array of that layout (the run's
mark, a corrupt entry).  Then the Python path runs, as it does without the C extension, so
the keys, the hits and what a hit returns are the same either way (``tests/cache`` compares
them over many dtypes, shapes and orders).
"""

from __future__ import annotations

import sys
from typing import Any

from dandelion.cache import hashing
from dandelion.cache.cache import Cache, KnownPrefix
from dandelion.cache.content import Uncacheable, array_record
from dandelion.cache.watch import sighting_for
from dandelion.codec import ndarray_class
from dandelion.ir.types import ElementType
from dandelion.items import Item
from dandelion.program import Program
from dandelion.runtime.run_memo import RunMemo
from dandelion.runtime.views import View

try:  # the C extension (an older build has neither)
    from dandelion.cache._keysc import array_key as _array_key
    from dandelion.cache._keysc import array_value as _array_value
except ImportError:  # pragma: no cover - built without a C compiler, or an older build
    _array_key = _array_value = None  # type: ignore[assignment]


class ArrayRerun:
    """The C path of a warm rerun of a program of one plain array in and one out; use
    :meth:`of`."""

    __slots__ = ("memo", "name", "_input", "_output", "_last")

    def __init__(self, memo: RunMemo, name: str) -> None:
        self.memo = memo
        #: the input's name (as a keyword of :meth:`Runtime.run
        #: <dandelion.runtime.api.Runtime.run>`)
        self.name = name
        #: the array type, dtype, shape and record head of the input seen last
        self._input: tuple[Any, ...] | None = None
        #: the record head and size of the output entry seen last, numpy.empty, its
        #: shape and dtype
        self._output: tuple[Any, ...] | None = None
        #: the key made last, and for what: the input's
        #: :class:`~dandelion.cache.watch.Sighting`, its dtype, shape and strides, the
        #: prefix, the namespace, the sighting's generation, the key
        self._last: tuple[Any, ...] | None = None

    @classmethod
    def of(cls, program: Program, memo: RunMemo | None) -> ArrayRerun | None:
        """The rerun of ``program`` (whose whole-run memo is ``memo``), or ``None`` when it
        has not one plain array input and one output, or the C extension lacks the path."""
        ndarray = ndarray_class()
        if memo is None or _array_key is None or ndarray is None or \
                len(program.inputs) != 1 or len(program.outputs) != 1 or \
                len(memo.inputs) != 1 or len(memo.outputs) != 1 or \
                memo.sources not in (None, memo.inputs):
            return None
        views = [program.inputs[0][1], program.outputs[0][1]]
        if not all(_plain_array(view, ndarray) for view in views):
            return None
        return cls(memo, program.inputs[0][0])

    def key(self, cache: Cache, value: Any, prefixes: dict[int, KnownPrefix]
            ) -> tuple[str, bytes] | None:
        """Where ``cache`` keeps the run of ``value`` and the input item's content id,
        when ``value`` is a plain array (else ``None``: the Python path keys the run); the
        applications' key prefixes are added to ``prefixes`` as by :meth:`RunMemo.key
        <dandelion.runtime.run_memo.RunMemo.key>`."""
        try:
            prefix = self.memo.prefix(prefixes)
        except Uncacheable:
            return None
        last = self._last
        if last is not None and last[0].ref() is value:
            sighting = last[0]
            if last[4] == prefix and last[5] == cache.namespace and \
                    value.dtype is last[1] and value.shape == last[2] and \
                    value.strides == last[3] and sighting.unchanged(value, last[6]):
                known: tuple[str, bytes] = last[7]  # the same array, laid out the same,
                return known  # its bytes unchanged
        else:
            sighting = sighting_for(value)
        generation = -1 if sighting is None else sighting.arm(value)
        layout = self._input
        made = None if layout is None else _array_key(
            value, layout, prefix, cache.namespace, hashing.new, hashing.ALGORITHM)
        if made is None:
            record = array_record(Item(value))  # (key 0: it fits)
            if record is None:
                return None
            self._input = layout = (type(value), value.dtype, value.shape, record[0])
            made = _array_key(value, layout, prefix, cache.namespace,
                              hashing.new, hashing.ALGORITHM)
        if made is not None and sighting is not None:
            self._last = (sighting, value.dtype, value.shape, value.strides, prefix,
                          cache.namespace, generation, made)
        return made

    def serve(self, cache: Cache, key: str) -> tuple[Any, bytes | None]:
        """The output array of the run under ``key`` (``None``: not one of the layout seen
        last) and the entry itself (``None``: none, or the store failed and warned)."""
        data = self.memo.get(cache, key)
        layout = self._output
        if data is None or layout is None:
            return None, data
        return _array_value(data, layout), data

    def learn(self, served: dict[str, tuple[Item[Any], ...]]) -> None:
        """Remember the layout of the output the Python path ``served`` (when one plain
        array), for :meth:`serve` to read the next entries of it in C."""
        items = served.get(self.memo.outputs[0], ())
        if len(items) != 1:
            return
        try:
            record = array_record(items[0])
        except Uncacheable:  # pragma: no cover - a key read from an entry fits
            return
        if record is not None:
            head, bulk = record
            value = items[0].value
            self._output = (head, len(head) + bulk.nbytes, sys.modules["numpy"].empty,
                            value.shape, value.dtype)


def _plain_array(view: View, ndarray: type) -> bool:
    """Whether ``view`` takes and gives an ``ndarray`` as itself: one item's bare value,
    checked by ``isinstance`` at most."""
    return view.type.element is ElementType.NDARRAY and not view.type.is_set and \
        not view.items and view.value_class is None and \
        view.element_annotation in (Any, object, ndarray)
