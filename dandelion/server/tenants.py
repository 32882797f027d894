"""Tenants and what they own: functions, compositions, cached results, jobs.

Every tenant has its own namespace; nothing is looked up across tenants.  Registered code
is kept in a content-addressed artifact store on disk, and loaded artifacts in a
least-recently-used cache: an invocation that finds its code in the cache is *hot*, one
that loads it from disk is *cold* (docs/serve.rst).  A composition is pinned, at
registration, to the function versions it was checked against.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
import time
from typing import Any

import attrs

from dandelion.authoring.compute import ComputeFunction
from dandelion.errors import BackendError
from dandelion.ir.nodes import Composition, FunctionKind, FunctionSpec, Module
from dandelion.ir.serialize import content_hash, module_from_data, module_to_data
from dandelion.ir.types import DataType
from dandelion.planner import PassContext, make_plan
from dandelion.planner.plan import Plan
from dandelion.runtime.native import BuiltFunction, NativeFunction
from dandelion.runtime.store import ArtifactStore
from dandelion.runtime.wasm import WasmFunction
from dandelion.server.jobs import Jobs
from dandelion.server.loader import (
    RegistrationError,
    ShippedFunction,
    exec_source,
    function_named,
    load_pickle,
)


@attrs.define
class FunctionRecord:
    """A registered function: its declaration and where its code is."""

    spec: FunctionSpec
    source: str  # sha256 of the source text in the artifact store; a native one's ELF digest
    registered: float = attrs.field(factory=time.time)

    @property
    def digest(self) -> str:
        return self.spec.implementations[0].digest


@attrs.define
class CompositionRecord:
    """A registered composition, resolved against the tenant's functions and planned."""

    name: str
    module: Module
    plan: Plan
    cacheable: bool
    digest: str
    registered: float = attrs.field(factory=time.time)

    @property
    def composition(self) -> Composition:
        return self.plan.composition

    @property
    def inputs(self) -> dict[str, DataType]:
        return {d.name: d.type for d in self.composition.inputs}

    @property
    def outputs(self) -> dict[str, DataType]:
        return {d.name: d.type for d in self.composition.outputs}


class RegisteredCode:
    """Registered code: its text or image in the worker's artifact store, its loaded
    functions in an LRU cache.

    What was registered is stored as it came, under its content digest: source text as
    ``source:<sha256>``, a function shipped by value (a pickle) as ``shipped:<sha256>``, a
    native ELF or wasm module as ``sha256:`` of its bytes.  Python and native functions
    share the cache's ``capacity`` (``--hot-functions``).  A function pushed out of it
    leaves memory altogether: its code is dropped from the store's memory too (a native
    function's image, a Python function's stored copy), so that its next invocation (cold)
    reads it from disk and checks its digest, decodes a Python copy anew, and each engine
    prepares an image anew (cuts its segments, maps it into a VM, deserializes its compiled
    module), as it would after a worker restart.

    Args:
        store: the worker's artifact store (which also holds its native code, and the code
            its engines run).
        capacity: loaded artifacts kept in memory.
        sealed: the worker's engines run Python functions only in sandboxes of their own
            (an isolated engine), never in its process: a function decoded from its stored
            copy is sealed (:meth:`~dandelion.runtime.store.ArtifactStore.stored_artifact`).
    """

    KINDS = ("source", "shipped")

    def __init__(self, store: ArtifactStore, capacity: int = 256, sealed: bool = False
                 ) -> None:
        self.store = store
        self.capacity = capacity
        self.sealed = sealed
        self._loaded: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()
        #: (source, name) -> the digests of the copies the engines run of a loaded Python
        #: function, and how many loaded functions have each copy (dropped from the
        #: store's memory when the last of them is pushed out)
        self._copies: dict[tuple[str, str], tuple[str, ...]] = {}
        self._copy_users = collections.Counter[str]()
        self._lock = threading.Lock()

    @classmethod
    def keys(cls, source: str) -> list[str]:
        """The artifact store digests registered code of digest ``source`` may have."""
        return [f"{kind}:{source}" for kind in cls.KINDS]

    def save(self, text: str | bytes, names: list[str] | None = None,
             file: str | None = None) -> tuple[str, dict[str, ComputeFunction | ShippedFunction]]:
        """Store and load a source text (the client's file ``file``), or a function pickled
        by value; its digest and compute functions."""
        from dandelion.server.loader import source_digest

        shipped = isinstance(text, bytes)
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(data).hexdigest() if shipped else source_digest(str(text),
                                                                                file)
        # refuse what does not load
        functions = self._load(data, shipped, digest, names, None if shipped else file)
        self.store.put(f"{'shipped' if shipped else 'source'}:{digest}",
                       "shipped" if shipped else "source", data,
                       "" if shipped else file or "")
        self._store_runnable(functions)
        with self._lock:
            for fn in functions.values():
                copies = tuple(impl.digest for impl in fn.spec.implementations
                               if impl.kind == "python")
                self._remember((digest, fn.name), fn.artifact, copies)
        return digest, functions

    def _store_runnable(self, functions: dict[str, Any]) -> None:
        """Store the code the engines run for each Python function now, so that a cold load
        decodes it rather than running the registered module again."""
        for fn in functions.values():
            for impl in fn.spec.implementations:
                if impl.kind == "python":
                    self._store_copy(impl.digest, fn.artifact)

    def _store_copy(self, digest: str, artifact: Any) -> None:
        try:
            self.store.get(digest, artifact)
        except Exception:  # it captures what cannot be pickled (a lock …): an engine that
            pass  # needs a copy says so when it runs; in-process ones need none

    def _load(self, data: bytes, shipped: bool, digest: str, names: list[str] | None = None,
              file: str | None = None) -> dict[str, Any]:
        if shipped:
            return dict(load_pickle(data, names))
        return dict(exec_source(data.decode("utf-8", "surrogatepass"), file))

    def _hot(self, key: tuple[str, str]) -> Any:
        """What is loaded under ``key`` (made the most recently used), or ``None``."""
        with self._lock:
            artifact = self._loaded.get(key)
            if artifact is not None:
                self._loaded.move_to_end(key)
            return artifact

    def _remember(self, key: tuple[str, str], artifact: Any, copies: tuple[str, ...] = ()
                  ) -> None:
        """Keep ``artifact`` loaded under ``key`` (``copies``: the digests of the code the
        engines run of it, a Python function's); push the least recently used out of
        memory past the capacity (call with the lock held)."""
        self._loaded[key] = artifact
        self._loaded.move_to_end(key)
        if copies and key not in self._copies:
            self._copies[key] = copies
            self._copy_users.update(copies)
        while len(self._loaded) > self.capacity:
            gone_key, gone = self._loaded.popitem(last=False)
            if isinstance(gone, BuiltFunction):  # an image: out of memory altogether
                self.store.evict(gone_key[0])
            for copy in self._copies.pop(gone_key, ()):  # and a Python function's copy
                self._copy_users[copy] -= 1
                if self._copy_users[copy] <= 0:
                    del self._copy_users[copy]
                    self.store.evict(copy)

    def add_native(self, artifact: NativeFunction | WasmFunction) -> None:
        """Keep a native function just registered (and stored) as loaded."""
        with self._lock:
            self._remember((artifact.digest, artifact.name), artifact)

    def load_native(self, digest: str, name: str, kind: str, cold: bool = True
                    ) -> tuple[NativeFunction | WasmFunction | None, bool]:
        """The native function ``name`` (an ELF, or a wasm module for ``kind="wasm"``) of
        image ``digest``, and whether it was hot (loaded already).

        Otherwise its image is read from the store (from disk, where it was pushed out, and
        checked against its digest); unless ``cold``, only where that takes no wait for a
        disk (:meth:`~dandelion.runtime.store.ArtifactStore.get_at_once`: a small image in
        the kernel's caches), else ``(None, False)``, for a caller that must not wait for a
        disk (the event loop).

        Raises:
            RegistrationError: the image is missing or corrupt.
        """
        key = (digest, name)
        artifact = self._hot(key)
        if artifact is not None:
            return artifact, True
        try:
            code = self.store.get(digest) if cold else self.store.get_at_once(digest)
        except BackendError as e:  # gone, or corrupt: never run what was not registered
            raise RegistrationError(f"the code of '{name}' cannot be loaded: {e.message}",
                                    hint="register the function again") from None
        if code is None:  # not without waiting for a disk
            return None, False
        loaded = (WasmFunction if kind == "wasm" else NativeFunction)(name, code.data)
        with self._lock:
            self._remember(key, loaded)
        return loaded, False

    def load(self, source: str, name: str, digest: str, cold: bool = True
             ) -> tuple[Any, bool]:
        """The artifact of function ``name`` (code digest ``digest``) of registered code
        ``source``, and whether it was hot (loaded already).

        Otherwise it is loaded: its code stored at registration is decoded
        (:meth:`~dandelion.runtime.store.ArtifactStore.stored_artifact`); where there is
        none that this worker wrote (it restarted since), the registered code is loaded
        again (running the module) and the function's copy stored anew.  Unless ``cold``,
        only what decodes at once is loaded (``(None, False)`` otherwise): a caller that
        must not wait for a disk, an import or a module (the event loop) says so.

        Raises:
            RegistrationError: the code is missing or corrupt.
        """
        key = (source, name)
        artifact = self._hot(key)
        if artifact is not None:
            return artifact, True
        try:
            artifact = self.store.stored_artifact(digest, quick=not cold, sealed=self.sealed)
            if artifact is None:
                if not cold:
                    return None, False
                artifact = self._load_again(source, name)
                self._store_copy(digest, artifact)
        except BackendError as e:
            raise RegistrationError(f"the code of '{name}' cannot be loaded: {e.message}",
                                    hint="register it again") from None
        with self._lock:
            self._remember(key, artifact, (digest,))
        return artifact, False

    def _load_again(self, source: str, name: str) -> Any:
        """Function ``name`` of the registered code ``source``, loaded from its text or
        pickle in the store."""
        for digest in self.keys(source):
            try:
                code = self.store.get(digest)
            except BackendError as e:
                if "no code for" in e.message:
                    continue
                raise
            return function_named(self._load(code.data, code.kind == "shipped", source,
                                             file=code.name or None), name)
        raise RegistrationError(f"the code of '{name}' is missing from the artifact "
                                "store", hint="register the function again")


def _cacheable(module: Module) -> bool:
    return all(f.cacheable for f in module.functions)


def planned(module: Module, only: str | None = None, context: PassContext | None = None
            ) -> list[CompositionRecord]:
    """A record, with its plan, for every composition of a resolved, checked module (or
    only for the one called ``only``), made with the passes' ``context`` (the worker's
    topology)."""
    digest = content_hash(module)
    records = []
    for comp in module.compositions:
        if only is not None and comp.name != only:
            continue
        plan = make_plan(module, comp.name, context=context)
        records.append(CompositionRecord(comp.name, module, plan, _cacheable(plan.module),
                                         digest))
    return records


class Tenant:
    """One tenant's namespace.

    Args:
        name: the tenant's name.
        result_cache: results kept for cacheable compositions (0: none).
        max_jobs: jobs kept (:class:`~dandelion.server.jobs.Jobs`).
        job_ttl: seconds a finished job is kept.
        context: what the planner's passes are given (the worker's topology).
    """

    def __init__(self, name: str, result_cache: int = 1024, max_jobs: int = 1000,
                 job_ttl: float = 3600.0, context: PassContext | None = None) -> None:
        self.name = name
        self.context = context
        self.functions: dict[str, FunctionRecord] = {}
        self.versions: dict[str, tuple[str, str]] = {}  # code digest -> (source, name)
        self.compositions: dict[str, CompositionRecord] = {}
        self.result_cache = result_cache
        self.results: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.jobs = Jobs(max_jobs, job_ttl)
        self.lock = threading.RLock()

    # -- functions --------------------------------------------------------------------------

    def add_functions(self, source: str, functions: dict[str, ComputeFunction | ShippedFunction],
                      only: list[str] | None = None) -> list[FunctionRecord]:
        """Register (some of) the functions of a stored source."""
        if only:
            absent = [n for n in only if n not in functions]
            if absent:
                raise RegistrationError(f"the source defines no compute function "
                                        f"{', '.join(map(repr, absent))}",
                                        hint=f"it defines: {', '.join(sorted(functions))}")
            functions = {n: functions[n] for n in only}
        records = []
        with self.lock:
            for name, fn in functions.items():
                record = FunctionRecord(fn.spec, source)
                self.functions[name] = record
                self.versions[record.digest] = (source, name)
                records.append(record)
        return records

    def add_native(self, spec: FunctionSpec) -> FunctionRecord:
        """Register a native function whose ELF is in the artifact store under the digest
        of its (only) implementation."""
        record = FunctionRecord(spec, spec.implementations[0].digest)
        with self.lock:
            self.functions[spec.name] = record
            self.versions[record.digest] = (record.source, spec.name)
        return record

    def remove_function(self, name: str) -> bool:
        with self.lock:
            return self.functions.pop(name, None) is not None

    # -- compositions -----------------------------------------------------------------------

    def resolve(self, module: Module, platform: dict[str, Any]) -> Module:
        """``module`` with each function bound to this tenant's registered function or to
        the platform's I/O function of the same name.

        Raises:
            RegistrationError: an unknown function, or a signature that differs.
        """
        used = {a.function for c in module.compositions for a in c.applications}
        resolved = []
        problems = []
        for spec in module.functions:
            if spec.name not in used:
                continue
            if spec.kind is FunctionKind.IO:
                entry = next((i.entry for i in spec.implementations if i.kind == "builtin"),
                             spec.name)
                io = platform.get(entry)
                if io is None:
                    problems.append(f"'{spec.name}' is not an I/O function of this platform")
                    continue
                bound = attrs.evolve(io.spec, name=spec.name, cacheable=spec.cacheable,
                                     span=spec.span)
            else:
                record = self.functions.get(spec.name)
                if record is None and spec.name in platform and not spec.implementations:
                    bound = attrs.evolve(platform[spec.name].spec, span=spec.span)
                    resolved.append(bound)
                    continue
                if record is None:
                    problems.append(f"function '{spec.name}' is not registered")
                    continue
                bound = record.spec
            if _conflicts(spec, bound):
                problems.append(f"'{spec.name}' is declared {_show(spec)} but registered as "
                                f"{_show(bound)}")
                continue
            resolved.append(bound)
        for name in sorted(used):
            if module.function(name) is None and module.composition(name) is None:
                io = platform.get(name)
                record = self.functions.get(name)
                if record is not None:
                    resolved.append(record.spec)
                elif io is not None:
                    resolved.append(io.spec)
                else:
                    problems.append(f"function '{name}' is not registered")
        if problems:
            raise RegistrationError("; ".join(problems),
                                    hint="register the functions first (POST /v1/functions)")
        return Module(resolved, module.compositions)

    def add_compositions(self, module: Module) -> list[CompositionRecord]:
        """Register every composition of a resolved, checked module."""
        records = planned(module, context=self.context)
        with self.lock:
            for r in records:
                self.compositions[r.name] = r
        return records

    def remove_composition(self, name: str) -> bool:
        with self.lock:
            removed = self.compositions.pop(name, None) is not None
            if removed:
                self.results.clear()
            return removed

    def live_code(self) -> tuple[set[str], set[str]]:
        """The code this tenant still uses, as (source digests, implementation digests): its
        functions' and the versions its compositions are pinned to.  Versions nothing uses
        any more are forgotten."""
        with self.lock:
            digests = {r.digest for r in self.functions.values()}
            digests |= {impl.digest for r in self.compositions.values()
                        for spec in r.module.functions for impl in spec.implementations
                        if impl.digest}
            for old in set(self.versions) - digests:
                del self.versions[old]
            sources = {self.versions[d][0] for d in digests if d in self.versions}
            sources |= {r.source for r in self.functions.values()}
            return sources, digests

    # -- cached results ---------------------------------------------------------------------

    def cached(self, key: str) -> Any:
        with self.lock:
            value = self.results.get(key)
            if value is not None:
                self.results.move_to_end(key)
            return value

    def cache(self, key: str, value: Any) -> None:
        if self.result_cache <= 0:
            return
        with self.lock:
            self.results[key] = value
            while len(self.results) > self.result_cache:
                self.results.popitem(last=False)

    # -- persistence ------------------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        with self.lock:
            return {
                "functions": {n: {"source": r.source,
                                  "spec": module_to_data(Module([r.spec]), spans=False)}
                              for n, r in self.functions.items()},
                "versions": {d: list(v) for d, v in self.versions.items()},
                "compositions": {n: module_to_data(r.module, spans=False)
                                 for n, r in self.compositions.items()},
            }

    def load_data(self, data: dict[str, Any]) -> None:
        for name, f in data.get("functions", {}).items():
            spec = module_from_data(f["spec"]).functions[0]
            self.functions[name] = FunctionRecord(spec, f["source"])
        self.versions.update({d: (v[0], v[1]) for d, v in data.get("versions", {}).items()})
        for name, m in data.get("compositions", {}).items():
            # each entry saves its record's whole module: restore just that composition,
            # so a module registered with several keeps all of them
            for r in planned(module_from_data(m), only=name, context=self.context):
                self.compositions[r.name] = r


def _conflicts(declared: FunctionSpec, bound: FunctionSpec) -> bool:
    """Whether a declaration (from IR or DSL) does not fit the registered function."""
    if not declared.params and not declared.results:
        return False
    for mine, theirs in ((declared.params, bound.params), (declared.results, bound.results)):
        types = {p.name: p.type for p in theirs}
        if set(types) != {p.name for p in mine}:
            return True
        if any(not p.type.compatible(types[p.name]) for p in mine):
            return True
    return False


def _show(spec: FunctionSpec) -> str:
    params = ", ".join(f"{p.name}: {p.type}" for p in spec.params)
    results = ", ".join(f"{r.name}: {r.type}" for r in spec.results)
    return f"({params}) -> ({results})"


def save_tenants(path: str, tenants: dict[str, Tenant]) -> None:
    """Write every tenant's registrations to ``path`` (atomically)."""
    data = {name: t.to_data() for name, t in tenants.items()}
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
