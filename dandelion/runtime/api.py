"""``dd.run`` and ``dd.Runtime``: running compositions from Python."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import threading
import weakref
from typing import Any, Callable, Mapping, Sequence

import attrs

from dandelion.cache.cache import Cache, KnownPrefix, open_cache
from dandelion.ir.nodes import FunctionSpec
from dandelion.planner import Pass, PassContext, make_plan
from dandelion.planner.plan import Plan
from dandelion.planner.topology import topology as read_topology
from dandelion.program import Program, as_program
from dandelion.runtime.array_rerun import ArrayRerun
from dandelion.runtime.backend import Backend, check_requirements
from dandelion.runtime.events import Observer, fan_out
from dandelion.runtime.registry import load_backend
from dandelion.runtime.run_memo import RunMemo
from dandelion.runtime.sharding import Items


class Runtime:
    """A backend, ready to run compositions; use it as a context manager.

    Args:
        backend: the backend's name (``"local"``, ``"ray"`` …).
        engine: the compute engine of the local backend (``"inline"``, ``"process"`` …).
        passes: the planner passes (default: :data:`dandelion.planner.DEFAULT_PASSES`).
        pass_context: what the passes are given: options, topology, cache (default: none
            of them).
        cache: where results of cacheable functions are kept (``docs/caching.rst``):
            ``True`` (default: in memory, in front of the disk store in
            ``$DANDELION_CACHE_DIR`` or the user's cache directory), ``False``, a
            :class:`~dandelion.cache.Store`, a directory, a ``redis://`` URL, ``"memory"``,
            or a list of those (a stack, fastest first).
        observers: called with every :class:`~dandelion.runtime.events.Event` of every run
            (more with :meth:`subscribe`); with none, runs make no events at all.
        fuse: run chains of functions linked 1:1 in one sandbox invocation per instance
            (default ``True``; ``False`` sets the ``fuse`` option of the passes' context:
            every function in a sandbox of its own; ``docs/fusion.rst``).
        topology: which nodes are near which storage (``docs/placement.rst``): a
            :class:`~dandelion.planner.topology.Topology`, its plain data or a JSON file
            (default: the file ``$DANDELION_TOPOLOGY`` names, if set); given to the passes
            and to a backend with the ``placement`` capability.
        **options: passed to the backend (``workers=``, ``timeout=`` …).

    Example:
        >>> import dandelion as dd
        >>> @dd.compute
        ... def inc(x: int) -> int:
        ...     return x + 1
        >>> @dd.composition
        ... def bump(x: int) -> int:
        ...     return inc(x)
        >>> with dd.Runtime(engine="inline", workers=2) as rt:
        ...     rt.run(bump, 41)
        42
    """

    def __init__(self, backend: str = "local", engine: str | None = None,
                 passes: list[Pass] | None = None, pass_context: PassContext | None = None,
                 cache: Any = True, observers: Sequence[Observer] = (), fuse: bool = True,
                 topology: Any = None, **options: Any) -> None:
        cls = load_backend(backend)
        if not fuse:
            context = pass_context or PassContext()
            pass_context = attrs.evolve(context, options={**context.options, "fuse": False})
        if engine is not None:
            options["engine"] = engine
        found = read_topology(topology)
        if found is not None:
            pass_context = attrs.evolve(pass_context or PassContext(), topology=found)
            if "placement" in cls.capabilities:
                options["topology"] = found
        self.cache: Cache | None = open_cache(cache)
        self.backend: Backend = cls(**options)
        nodes = self.backend.node_cpus() if "placement" in cls.capabilities else {}
        if nodes:
            pass_context = attrs.evolve(pass_context or PassContext(), nodes=nodes)
        self.passes = passes
        self.pass_context = pass_context
        self._observers: tuple[Observer, ...] = tuple(observers)
        self._observe = fan_out(self._observers)
        self._plans: weakref.WeakKeyDictionary[Program, Plan] = weakref.WeakKeyDictionary()
        #: per program, its plan's whole-run memo (``None``: its runs are not memoized whole)
        self._memos: weakref.WeakKeyDictionary[Program, RunMemo | None] = \
            weakref.WeakKeyDictionary()
        #: per program, its rerun in C (dandelion.runtime.array_rerun), where it has one
        self._reruns: weakref.WeakKeyDictionary[Program, ArrayRerun] = \
            weakref.WeakKeyDictionary()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.closed = False

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` with every event of the runs that start from now on; returns
        the function that unsubscribes it.

        Example:
            >>> import dandelion as dd
            >>> @dd.compute
            ... def inc(x: int) -> int:
            ...     return x + 1
            >>> @dd.composition
            ... def incs(xs: list[int]) -> list[int]:
            ...     return inc(dd.each(xs))
            >>> events = []
            >>> with dd.Runtime(engine="inline", workers=1, cache=False) as rt:
            ...     stop = rt.subscribe(events.append)
            ...     rt.run(incs, [1, 2])
            ...     stop()
            [2, 3]
            >>> sorted((e.instance, str(e.kind)) for e in events)
            [(0, 'finished'), (0, 'started'), (1, 'finished'), (1, 'started')]
        """
        with self._lock:
            self._observers = (*self._observers, observer)
            self._observe = fan_out(self._observers)

        def unsubscribe() -> None:
            with self._lock:
                chosen = list(self._observers)
                if observer in chosen:
                    chosen.remove(observer)
                self._observers = tuple(chosen)
                self._observe = fan_out(self._observers)

        return unsubscribe

    def plan(self, target: Any) -> Plan:
        """The plan this runtime runs for ``target`` (cached per program)."""
        program = as_program(target)
        plan = self._plans.get(program)
        if plan is None:
            plan = make_plan(program.module, program.entry, self.passes, self.pass_context)
            check_requirements(plan, self.backend)
            self._plans[program] = plan
        return plan

    def run(self, target: Any, /, *args: Any, **inputs: Any) -> Any:
        """Run a composition, or one compute function alone, and return its output (a named
        tuple for several).

        Args:
            target: a ``@dd.composition``, a ``@dd.compute`` function (run as its call alone,
                as a worker invokes a registered function:
                :meth:`~dandelion.program.Program.calling`), a
                :class:`~dandelion.program.Program` or a module.
            *args: direct inputs, in declaration order.
            **inputs: direct inputs by name: plain values, ``dd.Item`` s, or lists of them.

        Raises:
            InputError: missing, unknown or mistyped inputs.
            FunctionError: a function failed (names the function, instance and keys).
        """
        return self._run(target, args, inputs, True)

    def _run(self, target: Any, args: tuple[Any, ...], inputs: dict[str, Any],
             cache: bool | str) -> Any:
        """:meth:`run`, with this run's use of the cache: ``True``, ``False`` or
        ``"refresh"`` (look nothing up, compute and keep everything)."""
        if self.closed:
            from dandelion.errors import BackendError

            raise BackendError("this runtime is closed")
        program = as_program(target)
        # a rerun of one array in and one out, in C (dandelion.runtime.array_rerun): from
        # the second run of a program, whose plan, memo and inputs have passed the checks
        rerun = self._reruns.get(program) if cache is True and len(args) + len(inputs) == 1 \
            else None
        made = data = value = None
        prefixes: dict[int, KnownPrefix] = {}
        using = self.cache  # (cache=True: this cache, unless it refreshes)
        if rerun is not None and using is not None and not using.refresh and \
                not self._watched():
            value = args[0] if args else inputs.get(rerun.name)
            made = rerun.key(using, value, prefixes)
            if made is not None:
                output, data = rerun.serve(using, made[0])
                if output is not None:
                    return output
        sets = program.bind(args, inputs)
        plan = self.plan(program)
        if "cache" not in self.backend.capabilities:
            outputs = self.backend.run(plan, sets, program.artifacts, observe=self._observe)
            return program.unbind(outputs)
        if cache is not True or using is None or using.refresh:  # (else: this cache)
            using = self._cache_for(cache)
        # the whole run in one lookup (dandelion.runtime.run_memo); a run that is watched
        # (observers, a backend's progress display) goes through the dispatcher, which
        # reports each application's hits and instances
        # (keyed by the rerun: its memo, unwatched, with this cache)
        memo = rerun.memo if rerun is not None and made is not None else \
            self._memo(program, plan) if using is not None and not self._watched() else None
        key = None
        seen = True  # (a refreshed run is kept whole)
        if memo is not None and using is not None:
            ids: dict[int, tuple[Any, bytes]] = {}
            items = sets.get(memo.inputs[0], ()) if made is not None else ()
            looked = len(items) == 1 and items[0].value is value and not using.refresh
            if looked:  # keyed and looked up by the rerun
                key = made[0]  # type: ignore[index]
                ids[id(items[0])] = (items[0], made[1])  # type: ignore[index]
            else:
                key = memo.storage_key(using, sets, ids, prefixes)
            if key is not None and not using.refresh:
                served, seen = (None, False) if looked and data is None else \
                    memo.read(using, key, data) if looked else memo.serve(using, key)
                if served is not None:
                    if rerun is not None:  # the output's layout, for the next rerun in C
                        rerun.learn(served)
                    return program.unbind(served)
            if key is not None:  # the run's lookups reuse the inputs' ids and the prefixes,
                # and keep the outputs' ids (and, the first time, the run's mark; for a run
                # of one instance, they know it missed)
                using = memo.knowing(using, key, ids, prefixes, seen)
        outputs = self.backend.run(plan, sets, program.artifacts,  # type: ignore[call-arg]
                                   observe=self._observe, cache=using)
        if memo is not None and memo.keeps and using is not None and key is not None:
            memo.keep(using, key, outputs, whole=seen)  # whole from its second run on
        return program.unbind(outputs)

    def _watched(self) -> bool:
        """Whether runs are watched (observers, a backend's progress display): they go
        through the dispatcher, which reports each application's hits and instances."""
        return self._observe is not None or \
            getattr(self.backend, "progress", None) is not None

    def _memo(self, program: Program, plan: Plan) -> RunMemo | None:
        """The whole-run memo of ``program``'s plan, made once (and its
        :class:`~dandelion.runtime.array_rerun.ArrayRerun`, where it has one)."""
        try:
            return self._memos[program]
        except KeyError:
            memo = self._memos[program] = RunMemo.of(plan, program.artifacts,
                                                     self.backend.engine_kinds)
            rerun = ArrayRerun.of(program, memo)
            if rerun is not None:
                self._reruns[program] = rerun
            return memo

    def run_plan(self, plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
                 cache: Cache | None = None, observe: Observer | None = None
                 ) -> dict[str, Items]:
        """Run a plan on sets of items, for callers that bind inputs themselves (the HTTP
        frontend decodes them from the wire).

        Args:
            plan: the plan (from :meth:`plan` or :func:`~dandelion.planner.make_plan`).
            inputs: every direct input of its composition, as a tuple of items.
            artifacts: the code of its functions by implementation digest.
            cache: the cache this run looks results up in and keeps them in (``None``:
                none; the server passes its tenant's namespace of :attr:`cache`); ignored
                by a backend that does not cache.
            observe: told this run's events, besides the runtime's observers.

        Raises:
            BackendError: the runtime is closed, or its backend cannot run the plan.
            FunctionError: a function failed.
        """
        self._check_runnable(plan)
        chosen = fan_out([o for o in (self._observe, observe) if o is not None])
        if cache is None or "cache" not in self.backend.capabilities:
            return self.backend.run(plan, inputs, artifacts, observe=chosen)
        return self.backend.run(plan, inputs, artifacts,  # type: ignore[call-arg]
                                observe=chosen, cache=cache)

    def start_plan(self, plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
                   cache: Cache | None = None, observe: Observer | None = None,
                   loop: asyncio.AbstractEventLoop | None = None
                   ) -> concurrent.futures.Future[dict[str, Items]] | None:
        """:meth:`run_plan` without blocking: a future of its outputs, resolved by the
        thread that finishes the run's last piece of work; or ``None`` (nothing started)
        where the backend needs a waiting thread for the run (see :meth:`Backend.start
        <dandelion.runtime.backend.Backend.start>`): then call :meth:`run_plan` on a
        thread.  The ``cache`` is looked up on the calling thread.  Called from a
        coroutine on ``loop`` (and given it), the run's functions may be driven from that
        loop, with no thread between it and the sandboxes; never block the loop on the
        future then (await it: ``asyncio.wrap_future``).

        Raises:
            BackendError: the runtime is closed, or its backend cannot run the plan.
        """
        self._check_runnable(plan)
        chosen = fan_out([o for o in (self._observe, observe) if o is not None])
        if cache is None or "cache" not in self.backend.capabilities:
            return self.backend.start(plan, inputs, artifacts, observe=chosen, loop=loop)
        return self.backend.start(plan, inputs, artifacts,  # type: ignore[call-arg]
                                  observe=chosen, loop=loop, cache=cache)

    def start_here(self, plan: Plan, inputs: Mapping[str, Items],
                   artifacts: Mapping[str, Any], cache: Cache | None,
                   observe: Observer | None, loop: asyncio.AbstractEventLoop
                   ) -> asyncio.Future[dict[str, Items]] | None:
        """:meth:`start_plan` from a coroutine on the running ``loop``: a future that the
        coroutine awaits, resolved on ``loop`` (:meth:`Backend.start_here
        <dandelion.runtime.backend.Backend.start_here>`; for a plan that is one call on the
        ``local`` backend, with nothing between the engine and the loop's future:
        :mod:`dandelion.runtime.one_call`); or ``None`` as :meth:`start_plan`.

        Raises:
            BackendError: the runtime is closed, or its backend cannot run the plan.
        """
        self._check_runnable(plan)
        chosen = fan_out([o for o in (self._observe, observe) if o is not None])
        if cache is None or "cache" not in self.backend.capabilities:
            return self.backend.start_here(plan, inputs, artifacts, chosen, loop)
        return self.backend.start_here(plan, inputs, artifacts, chosen, loop, cache=cache)

    def prepare(self, spec: FunctionSpec, artifacts: Mapping[str, Any]) -> None:
        """Get the backend's engines ready to run function ``spec`` (its code in
        ``artifacts``) soon, e.g. when it is registered with a worker, so that its first
        invocation does not start what its sandboxes fork from (:meth:`Backend.prepare
        <dandelion.runtime.backend.Backend.prepare>`).  May block for a while.

        Raises:
            BackendError: no engine of this runtime runs ``spec``, or it cannot prepare.
        """
        self.backend.prepare(spec, artifacts)

    def _check_runnable(self, plan: Plan) -> None:
        if self.closed:
            from dandelion.errors import BackendError

            raise BackendError("this runtime is closed")
        check_requirements(plan, self.backend)

    def _cache_for(self, mode: bool | str) -> Cache | None:
        if mode not in (True, False, "refresh"):
            from dandelion.cache.cache import CacheConfigError

            raise CacheConfigError(f"cache={mode!r}: a run takes cache=True, False or "
                                   "'refresh'", hint="configure the store with "
                                                     "dd.Runtime(cache=...)")
        if mode is False or self.cache is None:
            return None
        return self.cache.refreshing(mode == "refresh")

    def submit(self, target: Any, /, *args: Any, **inputs: Any) -> concurrent.futures.Future[Any]:
        """Start :meth:`run` in the background and return its future."""
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix="dandelion-run")
        # in the caller's context (where, e.g., function output is collected)
        return self._executor.submit(contextvars.copy_context().run, self.run, target, *args,
                                     **inputs)

    async def run_async(self, target: Any, /, *args: Any, **inputs: Any) -> Any:
        """:meth:`run`, awaitable from asyncio code."""
        return await asyncio.wrap_future(self.submit(target, *args, **inputs))

    def close(self) -> None:
        """Stop the backend; the runtime cannot run anything afterwards."""
        if self.closed:
            return
        self.closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.backend.close()
        if self.cache is not None:
            self.cache.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_defaults: dict[tuple[str, str | None], Runtime] = {}
_defaults_lock = threading.Lock()


def default_runtime(backend: str | None = None, engine: str | None = None) -> Runtime:
    """The shared runtime that :func:`run` uses for this backend and engine."""
    key = (backend or "local", engine)
    with _defaults_lock:
        rt = _defaults.get(key)
        if rt is None or rt.closed:
            rt = _defaults[key] = Runtime(key[0], engine=engine)
        return rt


@atexit.register
def _close_defaults() -> None:
    for rt in list(_defaults.values()):
        rt.close()


def run(target: Any, /, *args: Any, backend: str | None = None, engine: str | None = None,
        cache: bool | str = True, **inputs: Any) -> Any:
    """Run a composition (or a compute function alone: :meth:`Runtime.run`) on the default
    runtime of ``backend`` and ``engine``.

    ``backend``, ``engine`` and ``cache`` are reserved: no composition input may be called
    so.  ``cache=False`` neither looks up nor keeps results, ``cache="refresh"`` recomputes
    everything and keeps the new results (``docs/caching.rst``).

    Example:
        >>> import dandelion as dd
        >>> @dd.compute
        ... def length(s: str) -> int:
        ...     return len(s)
        >>> @dd.composition
        ... def lengths(words: list[str]) -> list[int]:
        ...     return length(dd.each(words))
        >>> dd.run(lengths, ["a", "bb", "ccc"], engine="inline")
        [1, 2, 3]
        >>> dd.run(length, "abcd", engine="inline")  # a compute function alone
        4
    """
    return default_runtime(backend, engine)._run(target, args, inputs, cache)
