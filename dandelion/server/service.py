"""What a worker does for its HTTP frontend, without the HTTP: register, describe, invoke.

Every method is blocking and thread-safe; the frontend calls them on a thread pool.  Errors
are :class:`~dandelion.errors.DandelionError` s; :func:`status_of` says which HTTP status
each one is answered with.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Mapping

import attrs

from dandelion.authoring.compute import ComputeFunction
from dandelion.cache.cache import Cache, namespace_of
from dandelion.errors import (
    BackendError,
    CompositionError,
    DandelionError,
    EncodingError,
    FunctionError,
    InputError,
    SandboxViolation,
)
from dandelion.ir.nodes import FunctionKind, FunctionSpec, Module
from dandelion.ir.serialize import module_from_data, module_to_data
from dandelion.ir.verify import check, did_you_mean
from dandelion.items import Item
from dandelion.program import (
    call_input,
    call_module,
    call_output,
    function_defaults,
    input_defaults,
)
from dandelion.runtime import logs
from dandelion.runtime.api import Runtime
from dandelion.runtime.registry import load_engine
from dandelion.runtime.store import ArtifactStore
from dandelion.server.admission import Overloaded
from dandelion.server.config import ServerConfig
from dandelion.server.jobs import TooManyJobs
from dandelion.server.loader import RegistrationError, module_source
from dandelion.server.metrics import CacheTally, Metrics
from dandelion.server.native import check_name, native_spec, parse_signature
from dandelion.server.tenants import (
    CompositionRecord,
    FunctionRecord,
    RegisteredCode,
    Tenant,
    planned,
    save_tenants,
)
from dandelion.server.wire import decode_sets, dumps, encode_sets

Sets = Mapping[str, tuple[Item[Any], ...]]
#: Seconds between two sweeps of what a worker no longer needs (:meth:`Service.sweep`).
SWEEP_EVERY = 60.0


#: engine_type of a native registration -> the implementation kind it registers
_ENGINE_TYPES = {"process": "native", "kvm": "native", "wasm": "wasm"}

class NotFound(DandelionError, LookupError):
    """No function, composition or job of that name in the tenant's namespace (404)."""


class Conflict(DandelionError):
    """The request conflicts with the tenant's state, e.g. too many open jobs (429)."""


class Unauthorized(DandelionError, PermissionError):
    """No API token, or one the server does not know (401)."""


class RequestProblem(DandelionError):
    """A request the frontend refuses before reading it: too large (413), too slow (408).

    Attributes:
        status: the HTTP status.
    """

    def __init__(self, message: str, *, status: int, **kw: Any) -> None:
        self.status = status
        super().__init__(message, **kw)


def status_of(error: BaseException) -> int:
    """The HTTP status a failed request is answered with."""
    if isinstance(error, RequestProblem):
        return error.status
    if isinstance(error, Unauthorized):
        return 401
    if isinstance(error, Overloaded):
        return 503
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, (Conflict, TooManyJobs)):
        return 429
    if isinstance(error, (FunctionError, EncodingError, BackendError)):
        return 422  # the request was fine; running it failed
    if isinstance(error, (InputError, CompositionError, DandelionError, ValueError, TypeError)):
        return 400
    return 500


def error_body(error: BaseException) -> dict[str, Any]:
    """The JSON error document for ``error``."""
    if isinstance(error, DandelionError):
        body: dict[str, Any] = {"type": type(error).__name__, "message": error.message}
        if error.hint:
            body["hint"] = error.hint
        if isinstance(error, FunctionError):
            body.update(function=error.function, instance=error.instance,
                        keys=list(error.keys))
            if error.traceback:
                body["traceback"] = error.traceback
            if error.logs:
                body["logs"] = error.logs
        diagnostics = getattr(error, "diagnostics", ())
        if diagnostics:
            body["diagnostics"] = [str(d) for d in diagnostics]
        return {"error": body}
    return {"error": {"type": type(error).__name__, "message": str(error) or
                      type(error).__name__}}


def runtime_of(config: ServerConfig, store: ArtifactStore | None = None) -> Runtime:
    """The runtime a worker runs its invocations on: the ``local`` backend, or the
    ``ray`` backend connected to ``config.address``.  A local engine that keeps code in
    an artifact store (a ``store`` option, like the ``process`` engine's) keeps it in
    ``store``, the worker's.

    Raises:
        InputError: an address for a backend that takes none.
        BackendError: an unknown backend or engine, or a Ray cluster it cannot reach.
    """
    options: dict[str, Any] = {"workers": config.workers, "timeout": config.timeout,
                               "io": dict(config.io)}
    if config.address is not None:
        if config.backend != "ray":
            raise InputError(f"an address is for the ray backend, not '{config.backend}'",
                             hint="serve with --backend ray --address ADDR")
        options["address"] = config.address
    elif config.backend == "local" and store is not None:
        from dandelion.backends.local import DEFAULT_ENGINE

        engine = load_engine(config.engine or DEFAULT_ENGINE)
        if "store" in inspect.signature(engine).parameters:
            options["engine_options"] = {**config.engine_options, "store": store}
    if config.engine_options and "engine_options" not in options:
        options["engine_options"] = dict(config.engine_options)
    # results are kept per function instance in config.cache; every invocation sees it
    # through its tenant's namespace (Service.invoke), never the runtime's default one
    return Runtime(config.backend, engine=config.engine,
                   cache=False if config.cache is None else config.cache,
                   topology=config.topology, **options)


def _tally(cache: Cache | None) -> CacheTally | None:
    """The observer of an invocation's events that tells what the result ``cache`` served;
    ``None`` without a cache, which serves nothing: the run is then observed by nobody, and
    its engines build no events for it (two per function instance, with the sizes of its
    inputs and outputs)."""
    return None if cache is None else CacheTally()


def _io_platform() -> dict[str, Any]:
    from dandelion.io import platform_functions

    return {f.entry: f for f in platform_functions().values()}


@attrs.frozen
class Target:
    """What an invocation runs, planned: a registered composition, or a function alone
    (kept per function, so that its invocations plan nothing).

    Attributes:
        record: the planned composition.
        inputs: the declared types of the inputs, by the names the request uses.
        outputs: the declared types of the outputs, by the names the answer uses.
        rename: for a function, its parameters' and results' names (the composition's
            sets are ``in.<param>`` and ``out.<result>``).
        defaults: the inputs a request may leave out, and what they then hold
            (:attr:`Program.defaults <dandelion.program.Program.defaults>`).
    """

    record: CompositionRecord
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    rename: tuple[list[str], list[str]] | None = None
    defaults: dict[str, str] = attrs.field(factory=dict)


class _SpecOnly:
    """A registered function as the DSL binds it: declaration only, code on the server."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.artifacts: dict[str, Any] = {}


class Service:
    """A worker's registrations and invocations, for every tenant.

    Args:
        config: the server configuration.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._tmp = None
        state = config.state_dir
        if state is None:
            state = self._tmp = tempfile.mkdtemp(prefix="dandelion-serve-")
        os.makedirs(state, exist_ok=True)
        self.state_dir = state
        #: all the worker's code by digest: what was registered (source text, pickles,
        #: native ELFs) and what its engines run
        self.store = ArtifactStore(os.path.join(state, "artifacts"))
        #: registered Python code, loaded (``--hot-functions`` of it kept in memory)
        self.code = RegisteredCode(self.store, config.hot_functions)
        self.metrics = Metrics()
        self.tenants: dict[str, Tenant] = {}
        self._lock = threading.RLock()
        #: calls of directly invoked functions (planned), least recently used first
        self._function_plans: collections.OrderedDict[int, tuple[FunctionRecord, Target]] = \
            collections.OrderedDict()
        self.runtime = runtime_of(config, self.store)
        # an isolated engine runs every compute function in a sandbox, never in this process
        self.code.sealed = self.runtime.backend.inputs_copied
        self.metrics.retained.labels("plans").set_function(lambda: len(self._function_plans))
        self.metrics.retained.labels("jobs").set_function(
            lambda: sum(len(t.jobs) for t in list(self.tenants.values())))
        self.platform = _io_platform()
        self._load_state()

    # -- tenants ----------------------------------------------------------------------------

    def tenant(self, name: str) -> Tenant:
        """The namespace of tenant ``name`` (created on first use)."""
        with self._lock:
            t = self.tenants.get(name)
            if t is None:
                t = self.tenants[name] = Tenant(name, self.config.result_cache,
                                                self.config.max_jobs, self.config.job_ttl,
                                                self.runtime.pass_context)
            return t

    def _state_file(self) -> str:
        return os.path.join(self.state_dir, "tenants.json")

    def _save(self) -> None:
        with self._lock:
            save_tenants(self._state_file(), self.tenants)

    def _load_state(self) -> None:
        path = self._state_file()
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        for name, tdata in data.items():
            self.tenant(name).load_data(tdata)

    # -- registration -----------------------------------------------------------------------

    def register_functions(self, tenant: Tenant, *, source: str | None = None,
                           module: str | None = None, pickle: bytes | None = None,
                           names: list[str] | None = None, kind: str = "python",
                           filename: str | None = None) -> list[dict[str, Any]]:
        """Register the ``@dd.compute`` functions of a source text (the client's file
        ``filename``, the name its tracebacks show) or installed module, or one function
        shipped by value (``pickle``, from :meth:`dandelion.Client.register`).

        Raises:
            RegistrationError: no usable source, or it fails to load.
        """
        if kind != "python":
            raise RegistrationError(f"functions of kind '{kind}' cannot be registered on "
                                    "this worker", hint="'kind' is 'python' (source or "
                                    "module), 'native' (an ELF image) or 'wasm' (a module)")
        if sum(x is not None for x in (source, module, pickle)) != 1:
            raise RegistrationError("give either 'source' (Python text) or 'module' "
                                    "(an importable module name)")
        if module is not None:
            source = module_source(module)
            filename = filename or module.replace(".", "/") + ".py"
        code = pickle if pickle is not None else source
        assert code is not None
        digest, functions = self.code.save(code, names, filename)
        records = tenant.add_functions(digest, functions, names)
        self._save()
        prepared = []
        for record in records:
            fn = functions[record.spec.name]
            prepared.append((fn.spec, fn.artifacts if isinstance(fn, ComputeFunction) else
                             {impl.digest: fn.artifact for impl in fn.spec.implementations}))
        self._prepare_later(prepared)
        return [self.describe_function(r) for r in records]

    def _prepare_later(self, functions: list[tuple[FunctionSpec, dict[str, Any]]]) -> None:
        """Get the engines ready for newly registered functions (their specs and artifacts
        by digest; :meth:`Runtime.prepare <dandelion.runtime.api.Runtime.prepare>`), on a
        thread of its own: starting a zygote for libraries no sandbox has imported yet, or
        compiling a wasm module, takes a while, which their first invocation no longer
        waits for."""
        def prepare() -> None:
            for spec, artifacts in functions:
                try:
                    self.runtime.prepare(spec, artifacts)
                except Exception:  # noqa: BLE001 - its invocation says what is wrong, if any
                    pass

        threading.Thread(target=prepare, name="dandelion-prepare", daemon=True).start()

    def register_native(self, tenant: Tenant, *, name: Any, image: bytes, params: Any,
                        results: Any, engine_type: str = "process") -> list[dict[str, Any]]:
        """Register a native function for the engine that runs it: an ELF (``process`` or
        ``kvm``, which run the same ELF) or a wasm module (``wasm``) built with the C SDK,
        and its signature.

        Args:
            tenant: whose namespace it joins (replacing a function of the same name).
            name: the function's name.
            image: the ELF file's or the module's bytes.
            params: its parameters in order (see
                :func:`~dandelion.server.native.parse_signature`).
            results: its results in order.
            engine_type: the engine it is built for (the reference system's
                ``engine_type``): ``process`` or ``kvm`` (an ELF) or ``wasm`` (a wasm
                module).

        Raises:
            RegistrationError: an unknown engine type, this worker's engine cannot run it,
                a malformed signature, or an image that is not such a function (saying why).
        """
        impl_kind = _ENGINE_TYPES.get(engine_type)
        if impl_kind is None:
            raise RegistrationError(f"unknown engine_type {engine_type!r}",
                                    hint=f"one of: {', '.join(_ENGINE_TYPES)}")
        backend = self.runtime.backend
        if impl_kind not in backend.engine_kinds:
            raise RegistrationError(
                f"this worker's engine '{backend.engine_name}' cannot run {impl_kind} "
                "functions", hint=f"start the worker with `dandelion serve --engine "
                f"{engine_type}`" + (" (Linux, x86-64)" if impl_kind == "native" else ""))
        check_name(name, "name")
        declared_params = parse_signature(params, "params")
        declared_results = parse_signature(results, "results")
        try:
            built = (self.store.put_wasm_bytes(name, image) if impl_kind == "wasm"
                     else self.store.put_native_bytes(name, image))
        except BackendError as e:
            raise RegistrationError(e.message, hint=e.hint) from None
        digest = built.digest
        self.code.add_native(built)
        spec = native_spec(name, digest, declared_params, declared_results, impl_kind)
        record = tenant.add_native(spec)
        self._save()
        self._prepare_later([(spec, {digest: built})])
        return [self.describe_function(record)]

    def register_compositions(self, tenant: Tenant, *, ir: Any = None, source: str | None = None,
                              notation: str | None = None, filename: str | None = None
                              ) -> list[dict[str, Any]]:
        """Register the compositions of IR JSON or of ``.dd``/``.dcl`` text.

        Raises:
            CompositionError: the IR or text is invalid, or does not type-check.
            RegistrationError: it calls functions the tenant has not registered.
        """
        if (ir is None) == (source is None):
            raise RegistrationError("give either 'ir' (IR JSON) or 'source' (.dd/.dcl text)")
        if ir is not None:
            module = self._parse_ir(ir)
        else:
            module = self._parse_dsl(tenant, source, notation, filename)  # type: ignore[arg-type]
        if not module.compositions:
            raise RegistrationError("the module defines no composition")
        resolved = tenant.resolve(module, self.platform)
        check(resolved)
        records = tenant.add_compositions(resolved)
        self._save()
        return [self.describe_composition(r) for r in records]

    @staticmethod
    def _parse_ir(ir: Any) -> Module:
        try:
            if isinstance(ir, str):
                ir = json.loads(ir)
            return module_from_data(ir)
        except CompositionError:
            raise
        except Exception as e:  # malformed documents of any shape
            raise CompositionError(f"not a valid IR document: {type(e).__name__}: {e}",
                                   hint="send the output of dandelion.ir.module_to_data "
                                        "or `dandelion ir`") from None

    def _parse_dsl(self, tenant: Tenant, text: str, notation: str | None,
                   filename: str | None) -> Module:
        try:
            from dandelion.dsl import compile_text  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            raise RegistrationError("this worker cannot read .dd/.dcl text yet",
                                    hint="register IR JSON instead") from None
        if notation not in (None, "dd", "dcl"):
            raise RegistrationError(f"unknown notation {notation!r} (use 'dd' or 'dcl')")
        name = os.path.basename(filename or f"<registered>.{notation or 'dd'}")
        functions = {n: _SpecOnly(r.spec) for n, r in tenant.functions.items()}
        loaded = compile_text(text, name, functions=functions, notation=notation, strict=False)
        module: Module = loaded.module
        return module

    def remove(self, tenant: Tenant, what: str, name: str) -> None:
        """Delete a function or composition.

        Raises:
            NotFound: the tenant has none of that name.
        """
        removed = (tenant.remove_function(name) if what == "function"
                   else tenant.remove_composition(name))
        if not removed:
            raise self._not_found(tenant, what, name)
        self._save()

    # -- description ------------------------------------------------------------------------

    @staticmethod
    def describe_function(record: FunctionRecord) -> dict[str, Any]:
        """A function's public description."""
        spec = record.spec
        return {"name": spec.name, "kind": str(spec.kind),
                "params": [{"name": p.name, "type": str(p.type),
                            **({"defaulted": True} if p.defaulted else {})}
                           for p in spec.params],
                "results": [{"name": r.name, "type": str(r.type)} for r in spec.results],
                "implementation": spec.implementations[0].kind,
                "digest": record.digest, "cacheable": spec.cacheable}

    @staticmethod
    def describe_composition(record: CompositionRecord) -> dict[str, Any]:
        """A composition's public description, with its IR."""
        comp = record.composition
        return {"name": record.name,
                "inputs": [{"name": d.name, "type": str(d.type),
                            **({"defaulted": True} if d.value is not None else {})}
                           for d in comp.inputs],
                "outputs": [{"name": d.name, "type": str(d.type)} for d in comp.outputs],
                "functions": sorted(f.name for f in record.module.functions),
                "cacheable": record.cacheable, "digest": record.digest,
                "ir": module_to_data(record.module, spans=False)}

    def _not_found(self, tenant: Tenant, what: str, name: str) -> NotFound:
        names = tenant.functions if what == "function" else tenant.compositions
        return NotFound(f"no {what} called '{name}'",
                        hint=did_you_mean(name, names) or f"register it first "
                        f"(POST /v1/{what}s)")

    def function(self, tenant: Tenant, name: str) -> FunctionRecord:
        """The tenant's function ``name``.

        Raises:
            NotFound: there is none.
        """
        record = tenant.functions.get(name)
        if record is None:
            raise self._not_found(tenant, "function", name)
        return record

    def composition(self, tenant: Tenant, name: str) -> CompositionRecord:
        """The tenant's composition ``name``.

        Raises:
            NotFound: there is none.
        """
        record = tenant.compositions.get(name)
        if record is None:
            raise self._not_found(tenant, "composition", name)
        return record

    # -- invocation -------------------------------------------------------------------------

    def invoke(self, tenant: Tenant, kind: str, name: str, inputs: Any,
               printed: logs.Collector | None = None) -> tuple[Sets, dict[str, Any], bool]:
        """Run a composition (``kind="composition"``) or one function on wire inputs;
        what its instances print is collected in ``printed``.

        Returns:
            the output sets, their declared types (for :func:`encode_outputs`) and whether
            they came from the result cache.

        Raises:
            NotFound, WireError: a bad request (4xx).
            FunctionError: the invocation failed (its error names function and instance).
        """
        with self._counted(kind) as outcome:
            target = self._target(tenant, kind, name)
            sets, key, outputs = self._decode(tenant, target, inputs)
            if outputs is not None:
                return self._end(tenant, target, outputs, None, outcome, cached=True)
            artifacts = self._artifacts(tenant, target.record, cold=True)
            assert artifacts is not None
            cache = self.cache_of(tenant)
            tally = _tally(cache)
            try:
                with logs.collect(printed):
                    outputs = self.runtime.run_plan(target.record.plan, sets, artifacts,
                                                    cache=cache, observe=tally)
            finally:
                if tally is not None:
                    tally.count(self.metrics)
            return self._end(tenant, target, outputs, key, outcome,
                             tally is not None and tally.served_all)

    async def invoke_here(self, tenant: Tenant, kind: str, name: str, inputs: Any,
                          printed: logs.Collector | None = None,
                          executor: concurrent.futures.Executor | None = None
                          ) -> tuple[Sets, dict[str, Any], bool] | None:
        """:meth:`invoke` from the event loop, without a thread waiting for it
        (:meth:`~dandelion.runtime.api.Runtime.start_here`: a function called alone goes
        straight to its engine, :mod:`dandelion.runtime.one_call`; a run the backend cannot
        start so waits on ``executor``), where the result cache is in memory (looked up on
        the loop).  Code in memory, or whose stored copy decodes at once (a small copy in
        memory, its libraries imported: a cold start at the cost of a hot one), is taken on
        the loop; code that must be read from disk or loaded from its source is loaded on
        ``executor``, and the run is then started from the loop like a hot one (no thread
        waits for the run itself).  ``None`` for a cache on disk or in Redis, or a request
        naming nothing registered: then call :meth:`invoke` on a thread (nothing was done or
        counted yet).
        """
        if self.config.cache not in (None, "memory"):
            return None
        try:
            target = self._target(tenant, kind, name)
            artifacts = self._artifacts(tenant, target.record, cold=False)
        except DandelionError:
            return None  # invoke raises it, counted
        with self._counted(kind) as outcome:
            sets, key, outputs = self._decode(tenant, target, inputs)
            if outputs is not None:
                return self._end(tenant, target, outputs, None, outcome, cached=True)
            loop = asyncio.get_running_loop()
            if artifacts is None:  # cold: its code is loaded on a thread, never the loop
                artifacts = await loop.run_in_executor(
                    executor, contextvars.copy_context().run, self._artifacts, tenant,
                    target.record, True)
                assert artifacts is not None
            plan, cache = target.record.plan, self.cache_of(tenant)
            tally = _tally(cache)
            try:
                with logs.collect(printed):
                    started = self.runtime.start_here(plan, sets, artifacts, cache, tally,
                                                      loop)
                    waiting = started if started is not None else \
                        loop.run_in_executor(  # a run that needs a waiting thread
                            executor, contextvars.copy_context().run,
                            self.runtime.run_plan, plan, sets, artifacts, cache, tally)
                computed: Sets = await waiting
            finally:
                if tally is not None:
                    tally.count(self.metrics)
            return self._end(tenant, target, computed, key, outcome,
                             tally is not None and tally.served_all)

    def _counted(self, kind: str) -> _Counted:
        """Count an invocation and its latency with the outcome it sets (``["error"]`` if
        it raises)."""
        return _Counted(self.metrics, kind)

    def cache_of(self, tenant: Tenant) -> Cache | None:
        """The result cache as ``tenant`` sees it: its own namespace, which no other
        tenant's invocations read (``None`` when the worker caches nothing)."""
        cache = self.runtime.cache
        return None if cache is None else cache.namespaced(namespace_of(tenant.name))

    def _target(self, tenant: Tenant, kind: str, name: str) -> Target:
        if kind == "function":
            return self._function_target(tenant, name)
        record = self.composition(tenant, name)
        return Target(record, record.inputs, record.outputs,
                      defaults=input_defaults(record.composition))

    def _decode(self, tenant: Tenant, target: Target, inputs: Any
                ) -> tuple[Sets, str | None, Sets | None]:
        """The input sets of an invocation, its result cache key (``None``: not cached)
        and the outputs the cache holds for it."""
        sets = decode_sets(inputs, target.inputs, view=self.runtime.backend.inputs_copied,
                           defaults=target.defaults)
        if target.rename is not None:
            sets = {call_input(p): s for p, s in sets.items()}
        record = target.record
        if not (record.cacheable and tenant.result_cache > 0):
            return sets, None, None
        h = hashlib.sha256(f"{record.digest}\0{record.name}\0".encode())
        h.update(dumps(encode_sets(sets, record.inputs, binary=True), binary=True))
        key = h.hexdigest()
        return sets, key, tenant.cached(key)

    @staticmethod
    def _end(tenant: Tenant, target: Target, outputs: Sets, key: str | None,
             outcome: list[str], cached: bool = False) -> tuple[Sets, dict[str, Any], bool]:
        """What :meth:`invoke` returns for ``outputs``: computed (kept in the result cache
        under ``key``, if any), or ``cached``."""
        if key is not None:
            tenant.cache(key, outputs)
        if target.rename is not None:
            outputs = {r: outputs.get(call_output(r), ()) for r in target.rename[1]}
        outcome[0] = "cached" if cached else "ok"
        return outputs, target.outputs, cached

    def _artifacts(self, tenant: Tenant, record: CompositionRecord, cold: bool
                   ) -> dict[str, Any] | None:
        """The code of every function of ``record`` by digest; ``None`` if some of it does
        not load at once, unless ``cold`` (then it is loaded from disk or from its source:
        :meth:`RegisteredCode.load <dandelion.server.tenants.RegisteredCode.load>`)."""
        artifacts = {}
        for spec in record.plan.module.functions:
            if spec.kind is FunctionKind.IO:
                continue
            for impl in spec.implementations:
                version = tenant.versions.get(impl.digest)
                if version is None:
                    raise RegistrationError(f"the code of '{spec.name}' is not registered")
                if impl.kind in ("native", "wasm"):
                    artifact, hot = self.code.load_native(impl.digest, spec.name, impl.kind,
                                                          cold=cold)
                else:
                    artifact, hot = self.code.load(*version, impl.digest, cold=cold)
                if artifact is None:
                    return None
                self.metrics.labelled(self.metrics.loads, "hot" if hot else "cold").inc()
                artifacts[impl.digest] = artifact
        return artifacts

    def _function_target(self, tenant: Tenant, name: str) -> Target:
        """The call of function ``name`` alone: a one-application composition, planned
        once per function and kept (at most ``plan_cache`` of them)."""
        record = self.function(tenant, name)
        # Kept per registration (the spec, not only the code: one ELF may be registered under
        # several signatures), found by the record's identity: hashing its spec (its params'
        # and types' attrs hashes) took a dozen Python calls on every request.  The entry
        # holds its record, so no other record can have that id while it is kept.
        key = id(record)
        with self._lock:
            kept = self._function_plans.get(key)
            if kept is not None and kept[0] is record:
                self._function_plans.move_to_end(key)
                return kept[1]
        spec = record.spec
        module = call_module(spec)  # what dd.run runs for a compute function
        check(module)
        # not a named composition of the tenant
        planned_record = planned(module, context=self.runtime.pass_context)[0]
        found = Target(planned_record, {p.name: p.type for p in spec.params},
                     {r.name: r.type for r in spec.results},
                     ([p.name for p in spec.params], [r.name for r in spec.results]),
                     function_defaults(spec))
        with self._lock:
            self._function_plans[key] = (record, found)
            self._function_plans.move_to_end(key)
            while len(self._function_plans) > self.config.plan_cache:
                self._function_plans.popitem(last=False)
        return found

    @staticmethod
    def encode_outputs(outputs: Sets, decls: dict[str, Any], binary: bool) -> dict[str, Any]:
        """The response document ``{"outputs": …}`` of an invocation.

        Raises:
            EncodingError: an output item does not fit its declared type.
        """
        return {"outputs": encode_sets(outputs, decls, binary)}

    # -- bounds -----------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """Forget what a long-running worker no longer needs: finished jobs past their
        ``job_ttl``, and code that no function or composition uses any more, once it is
        older than ``code_ttl``.  The frontend calls it every :data:`SWEEP_EVERY` seconds.

        Returns:
            how many jobs and code files were forgotten.
        """
        with self._lock:
            tenants = list(self.tenants.values())
        jobs = sum(t.jobs.expire(now) for t in tenants)
        sources: set[str] = set()
        digests: set[str] = set()
        for t in tenants:
            s, d = t.live_code()
            sources |= s
            digests |= d
        ttl = self.config.code_ttl
        keep = digests | {key for s in sources for key in RegisteredCode.keys(s)}
        code = self.store.sweep(keep, ttl, now)
        self._save()
        return {"jobs": jobs, "code": code}

    # -- shutdown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the engines; remove the temporary state directory, if any."""
        self.runtime.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


class _Counted:
    """:meth:`Service._counted`: a context whose value is the outcome to count
    (``["error"]`` until the invocation sets it), counted with the latency on exit (a
    class, not a generator: it is entered on every invocation)."""

    __slots__ = ("metrics", "kind", "start", "outcome")

    def __init__(self, metrics: Metrics, kind: str) -> None:
        self.metrics = metrics
        self.kind = kind
        self.start = 0.0
        self.outcome = ["error"]

    def __enter__(self) -> list[str]:
        self.start = time.perf_counter()
        return self.outcome

    def __exit__(self, _type: Any, error: BaseException | None, _tb: Any) -> None:
        metrics = self.metrics
        if isinstance(error, SandboxViolation):
            metrics.violations.inc()
        metrics.labelled(metrics.invocations, self.kind, self.outcome[0]).inc()
        metrics.labelled(metrics.latency, self.kind).observe(time.perf_counter() - self.start)
