"""What one run of a plan needs of the cache: keys of instances, lookups, stores.

A :class:`RunCache` remembers the content id of every item it has seen in the run (by
identity; items are immutable and the run keeps them alive), so a set read by several
applications is encoded once, and the outputs of a hit or of a stored instance come with
their ids: the keys of what consumes them are built from those ids (early cutoff).
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING, Any, Sequence

import attrs

from dandelion.cache.cache import Cache
from dandelion.cache.content import Uncacheable, content_id
from dandelion.cache.entry import CorruptEntry, pack, pack_ints, unpack
from dandelion.cache.key import implementation_identity, prefix, storage_keys, tail
from dandelion.ir.nodes import Application, FunctionSpec
from dandelion.items import Item

log = logging.getLogger("dandelion.cache")

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.runtime.engine import FunctionCall
    from dandelion.runtime.sharding import Instance

Outputs = list[tuple[Item[Any], ...]]

try:  # the C extension: the tails of instances of int items, many in one call
    from dandelion.cache._keysc import int_tail as _int_tail
    from dandelion.cache._keysc import int_tails as _int_tails
except ImportError:  # pragma: no cover - built without a C compiler, or an older build
    _int_tail = _int_tails = None  # type: ignore[assignment]

#: the tail of a key whose instance has one parameter of one int item without a name:
#: ``tail([[content_id(item)]])`` in one step (1 parameter, 1 item, the id's length, then
#: the id: 0x00 and the item's record)
_ONE_INT_TAIL = struct.Struct("<IIBBqIq").pack
_INT_ID_SIZE = struct.calcsize("<BBqIq")


@attrs.define
class Lookup:
    """The cache's answer for the instances of one application.

    Attributes:
        keys: per instance, where its entry is kept in the store, which is also the key of
            its flight (:meth:`~dandelion.cache.cache.Cache.storage_key`; ``None``:
            uncacheable).
        hits: per instance, its outputs when the cache had them.
        reason: why the application or an instance is uncacheable (the first reason).
        bytes_served: the size of the entries that hit.
        hit_count: how many instances hit.
    """

    keys: list[str | None]
    hits: list[Outputs | None]
    reason: str | None = None
    bytes_served: int = 0
    hit_count: int = 0


class RunCache:
    """The cache as seen by one run."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._ids: dict[int, tuple[Item[Any], bytes]] = cache.ids if cache.ids is not None \
            else {}

    def content_ids(self, items: Sequence[Item[Any]]) -> list[bytes]:
        """The content id of each item (remembered for the run).

        Raises:
            Uncacheable: an item has no canonical encoding.
        """
        ids = self._ids
        out = []
        for item in items:
            known = ids.get(id(item))
            if known is None or known[0] is not item:
                cid = content_id(item)
                ids[id(item)] = (item, cid)
                out.append(cid)
            else:
                out.append(known[1])
        return out

    def remember(self, outputs: Sequence[Sequence[Item[Any]]],
                 ids: Sequence[bytes | None]) -> None:
        """The content ids of ``outputs`` (as :func:`~dandelion.cache.entry.pack` or
        :func:`~dandelion.cache.entry.unpack` gave them; ``None``: not known, made by
        :meth:`content_ids` if a consumer's key needs it)."""
        flat = (item for items in outputs for item in items)
        self._ids.update((id(item), (item, cid)) for item, cid in zip(flat, ids)
                         if cid is not None)

    def tails(self, instances: Sequence[Instance]) -> tuple[list[bytes | None], str | None]:
        """Per instance the :func:`~dandelion.cache.key.tail` of its key (``None``:
        uncacheable), and the first reason one is not."""
        if _int_tails is not None:  # those of one int item in C, in one call
            tails = _int_tails(instances)
            if None not in tails:
                return tails, None
            reason = None
            for at, inst in enumerate(instances):
                if tails[at] is None:
                    try:
                        tails[at] = _int_tail(inst.inputs) or \
                            tail([self.content_ids(items) for items in inst.inputs])
                    except Uncacheable as e:
                        reason = reason or f"instance {inst.index}: {e}"
            return tails, reason
        tails = []
        reason = None
        one_int = _ONE_INT_TAIL
        for inst in instances:
            inputs = inst.inputs
            if len(inputs) == 1 and len(inputs[0]) == 1:
                item = inputs[0][0]
                value = item.value
                if type(value) is int and not item.name:  # the common case, in one step
                    try:
                        tails.append(one_int(1, _INT_ID_SIZE, 0, 3, item.key, 0, value))
                        continue
                    except struct.error:
                        pass  # the general path says why
            try:
                tails.append(tail([self.content_ids(items) for items in inputs]))
            except Uncacheable as e:
                tails.append(None)
                reason = reason or f"instance {inst.index}: {e}"
        return tails, reason

    def missed_key(self, app: Application, spec: FunctionSpec, call: FunctionCall
                   ) -> str | None:
        """The storage key of the one instance of ``app`` that the whole-run memo looked up
        in vain in this run (:attr:`Cache.missed <dandelion.cache.cache.Cache.missed>`),
        where it made the key's prefix for this same application, signature,
        implementation and artifact; else ``None`` (:meth:`lookup` then keys and looks
        up the instances)."""
        missed = self.cache.missed
        key = missed.get(id(app)) if missed is not None else None
        return key if key is not None and self._made_prefix(app, spec, call) is not None \
            else None

    def _made_prefix(self, app: Application, spec: FunctionSpec, call: FunctionCall
                     ) -> bytes | None:
        """The key prefix of ``app`` that the whole-run memo made for this run
        (:attr:`Cache.prefixes <dandelion.cache.cache.Cache.prefixes>`), where it made it
        for the same application, signature, implementation and artifact (``None``: not)."""
        prefixes = self.cache.prefixes
        known = prefixes.get(id(app)) if prefixes is not None else None
        if known is not None and known[0] is app and known[1] is spec and \
                known[2] is call.implementation and known[3] is call.artifact:
            return known[4]
        return None

    def lookup(self, app: Application, spec: FunctionSpec, call: FunctionCall,
               instances: Sequence[Instance]) -> Lookup:
        """Keys and hits for the instances of ``app`` (its key prefix: the one the whole-run
        memo made for this run where :attr:`Cache.prefixes
        <dandelion.cache.cache.Cache.prefixes>` has it for the same application, signature,
        implementation and artifact, else made here; with that prefix, the one instance
        the memo looked up in vain, :attr:`Cache.missed
        <dandelion.cache.cache.Cache.missed>`, is not looked up again)."""
        n = len(instances)
        head = self._made_prefix(app, spec, call)
        if head is not None:  # the whole-run memo made it for this run's key
            missed = self.cache.missed
            if n == 1 and missed is not None and id(app) in missed:
                # the memo keyed this one instance (the same prefix and inputs) and
                # looked it up in this run, in vain: not again
                return Lookup([missed[id(app)]], [None])
        else:
            try:
                identity = implementation_identity(call.implementation, call.artifact)
            except Uncacheable as e:
                return Lookup([None] * n, [None] * n, str(e))
            args = {a.param: a for a in app.arguments}
            sharding = [(str(args[p.name].mode), args[p.name].optional) if p.name in args
                        else ("absent", True) for p in spec.params]
            head = prefix(spec, call.implementation, identity, sharding, app.join)
        tails, reason = self.tails(instances)
        keys = storage_keys(head, self.cache.namespace, tails)
        wanted = [k for k in keys if k is not None] if reason is not None else keys
        values = self.cache.get_stored(wanted) if wanted else []  # type: ignore[arg-type]
        if values.count(None) == len(values):  # all missed
            return Lookup(keys, [None] * n, reason)
        found = iter(values)
        hits: list[Outputs | None] = []
        served = 0
        for key in keys:
            data = next(found) if key is not None else None
            if data is None:
                hits.append(None)
                continue
            try:
                outputs, ids = unpack(data)
            except CorruptEntry:
                self.cache.store.delete(key)  # type: ignore[arg-type]
                hits.append(None)
                continue
            if len(outputs) != len(spec.results):
                hits.append(None)
                continue
            self.remember(outputs, ids)
            hits.append(outputs)
            served += len(data)
        return Lookup(keys, hits, reason, served, sum(h is not None for h in hits))

    def keep(self, keys: Sequence[str | None], outputs: Sequence[Sequence[Sequence[Item[Any]]]],
             name: str) -> None:
        """:meth:`store` the ``outputs`` of the first instances of the flights ``keys`` that
        a run leads, and land those flights: the others (failed, cancelled) land ``None``,
        and so does every one when the store fails (one warning naming function ``name``:
        the cache never fails a run), so that their followers compute themselves."""
        n = len(outputs)
        entries: list[bytes | None] = []
        if n:
            try:
                entries = self.store(keys[:n], outputs)
            except Exception as e:  # the cache never fails a run
                log.warning("could not cache instances of '%s': %s", name, e)
        entries += [None] * (len(keys) - len(entries))
        self.cache.flights.land_all(keys, entries)

    def store(self, keys: Sequence[str | None], outputs: Sequence[Sequence[Sequence[Item[Any]]]]
              ) -> list[bytes | None]:
        """Keep the ``outputs`` of computed instances under their ``keys`` (those of a
        :class:`Lookup`; ``None``: not kept), and in the same call to the store the first
        of :attr:`Cache.marks <dandelion.cache.cache.Cache.marks>` where one is kept; per
        instance its entry, or ``None`` when an output has no canonical encoding."""
        entries: list[bytes | None] | None = None
        if len(outputs) > 1:  # many instances of one int each: in one step
            entries = pack_ints(outputs)  # type: ignore[assignment]
        if entries is None:  # one by one, remembering the ids they know
            entries = []
            for out in outputs:
                try:
                    data, ids = pack(out, self._ids)
                except Uncacheable:
                    entries.append(None)
                    continue
                if any(ids):  # (a long output's id is not made here: see pack)
                    self.remember(out, ids)
                entries.append(data)
        if None not in keys and None not in entries:  # all kept: keys and entries apart
            if keys:
                mark = self._mark() if self.cache.marks else None  # (a call less: none)
                if mark is not None:
                    keys, entries = [*keys, mark[0]], [*entries, mark[1]]
                self.cache.store.put_all(keys, entries)  # type: ignore[arg-type]
        else:
            kept = [(key, data) for key, data in zip(keys, entries)
                    if key is not None and data is not None]
            if kept:
                mark = self._mark() if self.cache.marks else None  # (a call less: none)
                if mark is not None:
                    kept.append(mark)
                self.cache.store.put_many(kept)
        return entries

    def _mark(self) -> tuple[str, bytes] | None:
        """The first of :attr:`Cache.marks <dandelion.cache.cache.Cache.marks>`, taken (kept
        by the first store that keeps an entry: a run whose instances all failed keeps
        none)."""
        marks = self.cache.marks
        if marks:
            try:
                return marks.pop()
            except IndexError:  # another batch of the run took it meanwhile
                pass
        return None

    def adopt(self, data: bytes) -> Outputs | None:
        """The outputs in an entry another instance landed (single-flight)."""
        try:
            outputs, ids = unpack(data)
        except CorruptEntry:  # pragma: no cover - entries landed in-process are whole
            return None
        self.remember(outputs, ids)
        return outputs
