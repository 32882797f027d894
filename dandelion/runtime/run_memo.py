"""The whole-run memo: a rerun of a composition on the same inputs, served in one lookup.

A warm rerun that goes through the dispatcher pays for the run's fixed path (its state, a
lookup per application, publishing every set) although nothing runs.  Before that path,
:meth:`~dandelion.runtime.api.Runtime.run` asks the cache once for the whole run: under the
*run key*

``H(run salt, the composition's structure, the key prefix of each application, the
content ids of the direct inputs)``

it keeps the run's direct outputs (a :func:`~dandelion.cache.entry.pack`-ed entry, in the
same store and namespace as the instances' entries) from the second time the run is seen:
the first time it keeps only a mark (:data:`SEEN`), so that a run on new inputs, which may
never come again, keeps its outputs once (in its instances' entries), not twice.  The run
hands the content ids it made for the key to the run's lookups (:attr:`Cache.ids
<dandelion.cache.Cache.ids>`), which do not hash the inputs again and give back the
outputs' ids, so that keeping the run whole hashes nothing again either; and the key
prefixes it made (:attr:`Cache.prefixes <dandelion.cache.Cache.prefixes>`), which the
lookups then need not make again.  Each
application's key prefix
(:func:`~dandelion.cache.key.prefix`) is the one its instances' keys start with: the
function's identity (for Python re-checked on every run, so a changed helper or constant
misses), its signature, sharding and join, the interpreter and the engine ABI.  The
structure (:func:`~dandelion.ir.serialize.content_hash` of the planned composition) says
which application reads and writes which set, and the inputs are hashed from their
canonical content, as an instance's inputs are.  So a run key is equal only when every
instance of the run would have the key it had, and the outputs it serves are those the
per-instance entries would give.

A plan of one application that runs as one instance whose inputs are the direct inputs as
they are (:func:`_one_instance`), like the paper's matrix composition, keeps no run entry
of its own: its run key is its instance's key, and its instance's entry, which the run keeps
anyway, serves the run.  Such a run looks the store up once, and tells its lookup that the
instance missed (:meth:`knowing`), which then neither hashes its key nor looks again.

What depends only on the plan (the structure, which implementation each function runs,
its views, the prefixes) is computed once per plan and runtime; a run pays for the
identities' check, the hash of its inputs and one lookup.  A run without a memo is one that
the per-instance path must see: an application that is not cacheable, an I/O function, a
composition applied per shard, a function with no implementation this backend runs.

>>> import dandelion as dd
>>> from dandelion.cache import MemoryStore
>>> @dd.compute
... def double(x: int) -> int:
...     return 2 * x
>>> @dd.composition
... def twice(x: int) -> int:
...     return double(x)
>>> with dd.Runtime(engine="inline", workers=1, cache=MemoryStore()) as rt:
...     memo = RunMemo.of(rt.plan(twice), twice.program.artifacts, rt.backend.engine_kinds)
...     inputs = twice.program.bind((21,), {})
...     memo.key(inputs) == memo.key(twice.program.bind((21,), {}))
True
>>> memo.key(inputs) == memo.key(twice.program.bind((22,), {}))
False
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Callable, Mapping

from dandelion.cache import hashing
from dandelion.cache.cache import Cache, KnownPrefix
from dandelion.cache.content import Uncacheable
from dandelion.cache.entry import CorruptEntry, pack, unpack
from dandelion.cache.identity import Identity, identity_of
from dandelion.cache.key import implementation_identity, items_tail, prefix
from dandelion.ir.nodes import (
    Application,
    FunctionKind,
    FunctionSpec,
    Implementation,
    ShardingMode,
)
from dandelion.ir.serialize import content_hash
from dandelion.items import Item
from dandelion.planner.cacheable import not_cached_because
from dandelion.planner.plan import Plan
from dandelion.runtime.sharding import Items

log = logging.getLogger("dandelion.cache")

#: Bumped whenever what enters a run key changes meaning (the prefixes carry the
#: instance keys' own version).
RUN_KEY_VERSION = 1

_SALT = f"dandelion-run/{RUN_KEY_VERSION}\0".encode()

#: What a run's first run keeps under its key: it was seen (its outputs are kept whole
#: when it comes again, so that a run on new inputs, which may never come again, does not
#: keep its outputs twice, once per instance and once whole).  Not an entry
#: (:mod:`dandelion.cache.entry`), whose magic differs.
SEEN = b"DDRS1\0"
_COUNT = struct.Struct("<I").pack


class _Application:
    """One application's part of the run key: its key prefix, remade when the identity of
    its Python function changed since (a helper redefined, a constant changed)."""

    __slots__ = ("app", "spec", "implementation", "artifact", "sharding", "join", "fn",
                 "known", "entry")

    def __init__(self, app: Application, spec: FunctionSpec, implementation: Implementation,
                 artifact: Any) -> None:
        self.app = app
        self.spec = spec
        self.implementation = implementation
        self.artifact = artifact
        args = {a.param: a for a in app.arguments}
        self.sharding = [(str(args[p.name].mode), args[p.name].optional) if p.name in args
                         else ("absent", True) for p in spec.params]
        self.join = app.join
        #: the Python function whose identity is checked on every run (``None``: the
        #: implementation's identity is its digest, fixed)
        self.fn: Callable[..., Any] | None = \
            artifact.fn if implementation.kind == "python" else None
        #: (the function's :class:`~dandelion.cache.identity.Identity` when the prefix was
        #: made, the prefix): one tuple, replaced whole, so that concurrent runs never see
        #: one without the other; while that identity holds, the prefix is the function's
        #: (checked here, without the identities' memo and its lock)
        self.known: tuple[Identity | None, bytes] = (None, self._prefix())
        #: the prefix last made, as Cache.prefixes keeps it (current)
        self.entry: KnownPrefix = (app, spec, implementation, artifact, self.known[1])

    def _prefix(self) -> bytes:
        identity = implementation_identity(self.implementation, self.artifact)
        return prefix(self.spec, self.implementation, identity, self.sharding, self.join)

    def current(self) -> KnownPrefix:
        """What :attr:`Cache.prefixes <dandelion.cache.Cache.prefixes>` keeps of this
        application as its function is now: its last item is the prefix (one tuple per
        prefix made).

        Raises:
            Uncacheable: the function now reaches something that cannot be hashed.
        """
        known = self.known
        if self.fn is None or (known[0] is not None and known[0].holds()):
            head = known[1]
        else:
            seen = identity_of(self.fn)
            identity = implementation_identity(self.implementation, self.artifact)
            head = prefix(self.spec, self.implementation, identity, self.sharding, self.join)
            if seen.digest in identity:  # (else the function changed meanwhile: used, not
                self.known = (seen, head)  # kept)
        entry = self.entry
        if entry[4] is not head:
            entry = self.entry = (self.app, self.spec, self.implementation, self.artifact,
                                  head)
        return entry


class RunMemo:
    """What the run key of one plan needs, computed once (see the module's documentation).

    Use :meth:`of`, which answers ``None`` for a plan whose runs are not memoized whole.
    """

    def __init__(self, plan: Plan, structure: bytes, parts: list[_Application]) -> None:
        self.plan = plan
        self.inputs = [d.name for d in plan.composition.inputs]
        self.outputs = [d.name for d in plan.composition.outputs]
        #: what every key starts with: the salt and the structure
        self._head = _SALT + _COUNT(len(structure)) + structure
        self._parts = parts
        one = _one_instance(plan, parts[0].spec) if len(parts) == 1 else None
        #: for a plan run as one instance (see :func:`_one_instance`), the direct input
        #: each parameter of its function reads, in the parameters' order (``None``: not
        #: bound), and its required parameters' inputs; ``None`` for a run keyed whole
        self.sources: list[str | None] | None = one[0] if one is not None else None
        self._required = one[1] if one is not None else []
        #: for a plan run as one instance, per direct output the position of the result
        #: it is
        self._results = one[2] if one is not None else []
        #: whether a run is kept by :meth:`keep` after it ends (its mark, or its outputs
        #: whole); not that of a plan run as one instance: its instance's entry is the run's
        self.keeps = self.sources is None

    @classmethod
    def of(cls, plan: Plan, artifacts: Mapping[str, Any], engine_kinds: frozenset[str]
           ) -> RunMemo | None:
        """The memo of ``plan`` when run with ``artifacts`` on engines running
        ``engine_kinds``; ``None`` when its runs must go through the per-instance path: an
        application not cached, an I/O function or a composition applied per shard, or a
        function with no implementation those engines run (the run reports why)."""
        module = plan.module
        parts = []
        for index, app in enumerate(plan.composition.applications):
            spec = module.function(app.function)
            if spec is None or spec.kind is FunctionKind.IO or \
                    not_cached_because(plan, index, spec) is not None:
                return None
            chosen = _implementation(spec, artifacts, engine_kinds)
            if chosen is None or (chosen[0].kind == "python" and
                                  getattr(chosen[1], "fn", None) is None):
                return None
            try:
                parts.append(_Application(app, spec, *chosen))
            except Uncacheable:
                return None
        structure = content_hash(plan.composition).encode()
        return cls(plan, structure, parts)

    def key(self, inputs: Mapping[str, Items],
            ids: dict[int, tuple[Any, bytes]] | None = None,
            prefixes: dict[int, KnownPrefix] | None = None) -> bytes:
        """The run key of a run on the direct ``inputs`` (those :meth:`Program.bind
        <dandelion.program.Program.bind>` made); the content ids of the inputs are added to
        ``ids`` (by item identity, as :attr:`Cache.ids <dandelion.cache.Cache.ids>`
        keeps them) and the applications' key prefixes to ``prefixes`` (as
        :attr:`Cache.prefixes <dandelion.cache.Cache.prefixes>` keeps them), where given.

        Raises:
            Uncacheable: an input has no canonical encoding, or a function reaches
                something that cannot be hashed.
        """
        if self.sources is None:
            return hashing.digest(self.prefix(prefixes) + items_tail(
                [inputs.get(name, ()) for name in self.inputs], ids))
        if any(not inputs.get(name) for name in self._required):
            raise Uncacheable("a required input is empty: the run has no instance")
        return hashing.digest(self.prefix(prefixes) + items_tail(
            [inputs.get(name, ()) if name is not None else () for name in self.sources], ids))

    def prefix(self, prefixes: dict[int, KnownPrefix] | None = None) -> bytes:
        """What a run key hashes before the content ids of the inputs (the salt, the
        structure, each application's key prefix as its function is now); the prefixes
        are added to ``prefixes`` as by :meth:`key`.

        Raises:
            Uncacheable: a function reaches something that cannot be hashed.
        """
        parts = self._parts
        if len(parts) == 1:  # (the common case, without the lists)
            entry = parts[0].current()
            if prefixes is not None:
                prefixes[id(entry[0])] = entry
            return entry[4] if self.sources is not None else self._head + entry[4]
        entries = [p.current() for p in parts]
        if prefixes is not None:
            for entry in entries:
                prefixes[id(entry[0])] = entry
        return b"".join([self._head, *(entry[4] for entry in entries)])

    def storage_key(self, cache: Cache, inputs: Mapping[str, Items],
                    ids: dict[int, tuple[Any, bytes]] | None = None,
                    prefixes: dict[int, KnownPrefix] | None = None) -> str | None:
        """Where ``cache`` keeps the outputs of a run on ``inputs`` (``None``: the run
        cannot be keyed, its inputs or a function cannot be hashed; the per-instance path
        says why); the inputs' content ids and the prefixes are added to ``ids`` and
        ``prefixes`` as by :meth:`key`."""
        try:
            return cache.storage_key(self.key(inputs, ids, prefixes))
        except Uncacheable:
            return None

    def serve(self, cache: Cache, key: str
              ) -> tuple[dict[str, tuple[Item[Any], ...]] | None, bool]:
        """The direct outputs ``cache`` keeps under ``key`` (``None``: a miss), and whether
        the run was seen before (its mark, or a broken entry, which is removed)."""
        return self.read(cache, key, self.get(cache, key))

    def get(self, cache: Cache, key: str) -> bytes | None:
        """What ``cache`` keeps under ``key`` (``None``: nothing, or a store that failed
        and warned)."""
        try:
            return cache.store.get(key)
        except Exception as e:  # the cache never fails a run
            log.warning("could not look up a whole run of '%s': %s", self.plan.entry, e)
            return None

    def read(self, cache: Cache, key: str, data: bytes | None
             ) -> tuple[dict[str, tuple[Item[Any], ...]] | None, bool]:
        """:meth:`serve` of what :meth:`get` gave for ``key``."""
        if data is None:
            return None, False
        if data == SEEN:
            return None, True
        try:
            outputs, _ids = unpack(data)
        except CorruptEntry:
            _remove(cache, key)
            return None, True
        if self.sources is not None:  # the instance's entry, as the dispatcher reads it:
            # one of another number of results is left alone, a miss
            if len(outputs) != len(self._parts[0].spec.results):
                return None, True
            return {name: tuple(outputs[at])
                    for name, at in zip(self.outputs, self._results)}, True
        if len(outputs) != len(self.outputs):
            _remove(cache, key)
            return None, True
        return dict(zip(self.outputs, outputs)), True

    def knowing(self, cache: Cache, key: str, ids: dict[int, tuple[Any, bytes]],
                prefixes: dict[int, KnownPrefix], seen: bool) -> Cache:
        """``cache`` for the lookups of a run under ``key`` that missed (:meth:`Cache.knowing
        <dandelion.cache.Cache.knowing>`): they take the content ids and prefixes that the
        run key was made with; a plan run as one instance is told that its instance was
        looked up in vain (:attr:`Cache.missed <dandelion.cache.Cache.missed>`: the storage
        key of its one instance, unless the run refreshes); and the first time the run is
        seen (not ``seen``), a plan of one application keeps the mark that it was in the
        same call to the store as its first instance's entries (:attr:`Cache.marks
        <dandelion.cache.Cache.marks>`): its instances are all the run computes, so a run
        that fails fails one of them (or after them, as a run of several does after its mark
        too, :meth:`keep`).  A plan of several applications, whose first instances may be
        kept by a run that fails in a later one, is marked by :meth:`keep` after the run."""
        if self.sources is not None:
            return cache.knowing(ids, prefixes, None,
                                 None if cache.refresh else {id(self._parts[0].app): key})
        return cache.knowing(ids, prefixes, None if seen or len(self._parts) != 1 else
                             [(key, SEEN)])

    def keep(self, cache: Cache, key: str, outputs: Mapping[str, Items], whole: bool) -> None:
        """Keep a run's direct ``outputs`` under ``key`` when ``whole`` (not when one has no
        canonical encoding), else only the mark that it was seen, unless the run's first
        entries kept it (:meth:`knowing`); a store that fails has warned and stays a miss.
        Only where :attr:`keeps` (a plan run as one instance keeps its instance's entry,
        which is the run's)."""
        if not whole and cache.marks == []:  # taken: kept with the run's first entries
            return
        data = SEEN
        if whole:
            try:
                data, _ids = pack([tuple(outputs.get(name, ())) for name in self.outputs],
                                  cache.ids)
            except Uncacheable:
                return
        try:
            cache.store.put(key, data)
        except Exception as e:  # the cache never fails a run
            log.warning("could not keep a whole run of '%s': %s", self.plan.entry, e)


def _remove(cache: Cache, key: str) -> None:
    """Remove the broken entry under ``key`` (a store that fails warns)."""
    try:
        cache.store.delete(key)
    except Exception as e:
        log.warning("could not remove a broken cache entry: %s", e)


def _one_instance(plan: Plan, spec: FunctionSpec
                  ) -> tuple[list[str | None], list[str], list[int]] | None:
    """For a plan of one application that runs as one instance whose inputs are the direct
    inputs as they are (each argument reads a direct input whole: ``all``, no join), and
    whose direct outputs are all results of it: per parameter of its function the direct
    input it reads (``None``: not bound), the inputs of its required parameters (an empty
    one skips the instance), and per direct output the position of the result it is;
    else ``None``.

    The run's key is then its instance's own key (:func:`~dandelion.cache.key.prefix` and
    :func:`~dandelion.cache.key.tail` of the same items, in the same namespace), and its
    instance's entry holds the run's outputs: a run looks up once, and keeps one entry.
    """
    comp = plan.composition
    app = comp.applications[0]
    direct = {d.name for d in comp.inputs}
    if app.join is not None or any(a.mode is not ShardingMode.ALL or a.source not in direct
                                   for a in app.arguments):
        return None
    args = {a.param: a for a in app.arguments}
    sources = [args[p.name].source if p.name in args else None for p in spec.params]
    required = [args[p.name].source for p in spec.params
                if p.name in args and not args[p.name].optional and not p.defaulted]
    results = {r.name: at for at, r in enumerate(spec.results)}
    made = {o.target: results.get(o.result) for o in app.outputs}
    positions = [made.get(d.name) for d in comp.outputs]
    if any(at is None for at in positions):  # an output the application does not make
        return None
    return sources, required, positions  # type: ignore[return-value]


def _implementation(spec: FunctionSpec, artifacts: Mapping[str, Any],
                    kinds: frozenset[str]) -> tuple[Implementation, Any] | None:
    """The implementation of ``spec`` that engines running ``kinds`` run, with its artifact
    (the dispatcher's choice: :func:`~dandelion.runtime.dispatcher.choose_call`)."""
    for impl in spec.implementations:
        if impl.kind in kinds:
            artifact = artifacts.get(impl.digest) if impl.digest else None
            if impl.digest and artifact is None:
                continue
            return impl, artifact
    return None

