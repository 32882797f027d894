"""The backend contract: run a :class:`~dandelion.planner.Plan` on inputs, return outputs.

A backend declares its capabilities; :func:`check_requirements` says plainly which
requirement of a plan a backend lacks before anything runs.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import sys
from typing import Any, ClassVar, Mapping, TypeVar

import attrs

from dandelion import constants
from dandelion.errors import BackendError
from dandelion.ir.nodes import (
    Application,
    Composition,
    FunctionKind,
    FunctionSpec,
    Module,
    ShardingMode,
)
from dandelion.planner.plan import Plan
from dandelion.runtime.events import Observer
from dandelion.runtime.sharding import Items

T = TypeVar("T")


class Backend(abc.ABC):
    """Runs plans.  Subclasses live in ``dandelion.backends.<name>`` as ``Backend``.

    Attributes:
        name: registry name.
        capabilities: what the backend supports: ``compute``, ``io``, ``nested``,
            ``timeouts`` …
        engine_name: the compute engine its functions run on (``process``, ``inline`` …).
        engine_kinds: the implementation kinds that engine runs (``python``, ``native`` …).
        inputs_copied: whether every compute function reads copies of its inputs in memory
            of its own (an isolated engine's context) and never the objects a run is given:
            a caller may then give it read-only views of its data (the HTTP frontend gives
            an ``ndarray`` as a view of the request body), which no function could write
            to in place.  ``False`` (the default): a function may get the caller's object.
    """

    name: ClassVar[str] = "backend"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    engine_name: str = ""
    engine_kinds: frozenset[str] = frozenset()
    inputs_copied: bool = False

    @abc.abstractmethod
    def run(self, plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
            observe: Observer | None = None) -> dict[str, Items]:
        """Run ``plan`` on its direct inputs; return its direct outputs.

        With ``observe``, report every instance's start and end to it
        (:mod:`dandelion.runtime.events`); without, build no event at all.  A backend with
        the ``cache`` capability also takes ``cache=``, a :class:`~dandelion.cache.Cache`
        (or ``None``) in which to look up and keep the outputs of cacheable instances.
        """

    def start(self, plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
              observe: Observer | None = None, loop: asyncio.AbstractEventLoop | None = None
              ) -> concurrent.futures.Future[dict[str, Items]] | None:
        """Start :meth:`run` without a thread waiting for it: a future of its outputs, or
        ``None`` where this backend needs a waiting thread for this run (the default; the
        caller then calls :meth:`run` on a thread of its own).  An HTTP frontend starts
        invocations from its event loop this way, with no thread hand-off on either side:
        called on a running event ``loop`` and given it, a backend may drive the run's
        functions from that loop (see :mod:`dandelion.runtime.handoff`).
        A backend with the ``cache`` capability also takes ``cache=`` (see :meth:`run`).
        """
        return None

    def start_here(self, plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
                   observe: Observer | None, loop: asyncio.AbstractEventLoop,
                   cache: Any = None) -> asyncio.Future[dict[str, Items]] | None:
        """:meth:`start` from a coroutine on the running ``loop``: a future of the outputs
        that the coroutine awaits, resolved on ``loop``; ``None`` where :meth:`start` gives
        none.  The default wraps :meth:`start`'s future
        (:func:`~dandelion.runtime.handoff.awaitable`); a backend may resolve the loop's
        future itself, with nothing in between (the ``local`` backend, for a plan that is
        one call: :mod:`dandelion.runtime.one_call`).  A ``cache`` only for a backend with
        the ``cache`` capability, as for :meth:`start`.
        """
        from dandelion.runtime.handoff import awaitable

        given = {} if cache is None else {"cache": cache}
        started = self.start(plan, inputs, artifacts, observe=observe, loop=loop, **given)
        return None if started is None else awaitable(started, loop)

    def prepare(self, spec: FunctionSpec, artifacts: Mapping[str, Any]) -> None:  # noqa: B027
        """Get the engines ready to run function ``spec`` (its code in ``artifacts``) soon
        (:meth:`Engine.prepare <dandelion.runtime.engine.Engine.prepare>`); may block.  The
        default: nothing to do."""

    def node_cpus(self) -> dict[str, int]:
        """The nodes a backend with the ``placement`` capability runs on, by the names its
        placement hints take, with their CPUs; the planner's placement passes read them
        (``PassContext.nodes``).  Empty (the default): one node, nothing to place."""
        return {}

    def close(self) -> None:  # noqa: B027 - an optional hook; most backends hold nothing
        """Release workers, engines and connections."""


#: The engine used when none is named: the sandboxing ``process`` engine on Linux (its
#: seccomp filter and C primitives are Linux-only), ``inline`` elsewhere.  Pass
#: ``engine="inline"`` to debug functions in the worker's own process.
DEFAULT_ENGINE = "process" if sys.platform.startswith("linux") else "inline"


@attrs.frozen
class ComputeOptions:
    """The compute options every backend takes, read once: which engine (its class, name and
    the implementation kinds it runs), the options its constructor gets, and the time limits.

    >>> from dandelion.runtime.backend import ComputeOptions
    >>> o = ComputeOptions.read("inline", timeout=2.0, timeouts={"slow": 60.0})
    >>> o.engine_name, sorted(o.engine_kinds), o.timeouts
    ('inline', ['python'], {'slow': 60.0, '*': 2.0})
    """

    engine_class: Any
    engine_options: dict[str, Any]
    timeouts: dict[str, float]

    @property
    def engine_name(self) -> str:
        """The engine's registry name."""
        return str(self.engine_class.name)

    @property
    def engine_kinds(self) -> frozenset[str]:
        """The implementation kinds the engine runs."""
        return frozenset(self.engine_class.kinds)

    @classmethod
    def read(cls, engine: str | None = None, timeout: float | None = None,
             timeouts: Mapping[str, float] | None = None,
             engine_options: Mapping[str, Any] | None = None) -> ComputeOptions:
        """The options of ``engine`` (default :data:`DEFAULT_ENGINE`); ``timeout`` applies
        to every function without one of its own in ``timeouts``.

        Raises:
            BackendError: an unknown engine, or an option its constructor does not take.
        """
        from dandelion.runtime.registry import load_engine

        limits = dict(timeouts or {})
        if timeout is not None:
            limits.setdefault("*", timeout)
        engine_class = load_engine(engine or DEFAULT_ENGINE)
        check_engine_options(engine_class, engine_options or {})
        return cls(engine_class, dict(engine_options or {}), limits)


def check_engine_options(engine_class: Any, options: Mapping[str, Any]) -> None:
    """Refuse an option that ``engine_class``'s constructor does not take, naming the ones it
    does, before any engine starts: a misspelt option (``reuse_sandbox``) must not be
    silently ignored.

    >>> from dandelion.runtime.backend import check_engine_options
    >>> from dandelion.runtime.registry import load_engine
    >>> check_engine_options(load_engine("inline"), {})
    >>> check_engine_options(load_engine("inline"), {"memory_limit": 1})
    Traceback (most recent call last):
    ...
    dandelion.errors.BackendError: the inline engine takes no option 'memory_limit'; it takes none

    Raises:
        BackendError: an option the engine does not take.
    """
    import inspect

    from dandelion.ir.verify import did_you_mean

    parameters = inspect.signature(engine_class).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    known = [name for name, p in parameters.items()
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for name in options:
        if name not in known:
            raise BackendError(
                f"the {engine_class.name} engine takes no option {name!r}; "
                + (f"it takes {', '.join(known)}" if known else "it takes none"),
                hint=did_you_mean(name, known) or None)


def initial_sets(composition: Composition, inputs: Mapping[str, Items]
                 ) -> dict[str, Items]:
    """The sets a run of ``composition`` starts with: its direct inputs (one not given holds
    its default, else nothing), its constants (:mod:`dandelion.constants`) and, empty, every
    other set that no application produces.

    >>> from dandelion.ir import Application, Composition, Output, SetDecl
    >>> from dandelion.runtime.backend import initial_sets
    >>> c = Composition("c", [SetDecl("a"), SetDecl("b")], [SetDecl("o"), SetDecl("e")], [],
    ...                 [Application("f", outputs=[Output("r", "o")])])
    >>> initial_sets(c, {"a": (1,)})
    {'a': (1,), 'b': (), 'e': ()}
    """
    sets = {d.name: tuple(inputs[d.name]) if d.name in inputs else
            constants.read(d.value) if d.value is not None else () for d in composition.inputs}
    produced = {o.target for app in composition.applications for o in app.outputs}
    for decl in composition.declarations():
        if decl.name not in produced and decl.name not in sets:
            sets[decl.name] = constants.read(decl.value) if decl.value is not None else ()
    return sets


def signature(module: Module, name: str) -> FunctionSpec:
    """The signature of the function or composition an application calls.

    Raises:
        BackendError: nothing is declared as ``name`` (``verify`` rejects such a module
            before a plan exists).
    """
    spec = module.callee_signature(name)
    if spec is None:
        raise BackendError(f"function '{name}' is not declared")
    return spec


#: How an application binds one parameter of its function: the parameter's name, the set
#: bound to it (``None``: none), its sharding mode and whether it is optional.
Binding = tuple[str, str | None, ShardingMode, bool]


def bindings(app: Application, spec: FunctionSpec) -> tuple[Binding, ...]:
    """What :func:`bind` takes from the plan, per parameter of ``spec`` in order (an unbound
    parameter: no set, as if optional; one with a default is optional too: an empty set
    gives it its default, it does not skip the instance); the same for every run of the
    plan."""
    args = {a.param: a for a in app.arguments}
    return tuple((p.name, a.source, a.mode, a.optional or p.defaulted)
                 if (a := args.get(p.name)) is not None
                 else (p.name, None, ShardingMode.ALL, True) for p in spec.params)


def bound(bindings: tuple[Binding, ...], sets: Mapping[str, T]
          ) -> list[tuple[str, T | tuple[()], ShardingMode, bool]]:
    """:func:`bind` of a run whose plan's :func:`bindings` are given: the sets they name in
    ``sets`` (an unbound parameter gets an empty one)."""
    return [(name, sets[source] if source is not None else (), mode, optional)
            for name, source, mode, optional in bindings]


def bind(app: Application, spec: FunctionSpec, sets: Mapping[str, T]
         ) -> list[tuple[str, T | tuple[()], ShardingMode, bool]]:
    """Per parameter of ``spec``, in order: its name, the set ``app`` binds to it (an
    unbound parameter gets an empty one, as if optional), the sharding mode and whether it
    is optional; the sets are whatever the backend holds them as (:func:`bindings` from
    the plan, :func:`bound` for the run)."""
    return bound(bindings(app, spec), sets)


def requirements(plan: Plan) -> set[str]:
    """The capabilities ``plan`` needs."""
    needs = {"compute"}
    names = {a.function for c in plan.module.compositions for a in c.applications}
    for name in names:
        spec = plan.module.function(name)
        if spec is not None and spec.kind is FunctionKind.IO:
            needs.add("io")
        if plan.module.composition(name) is not None:
            needs.add("nested")
    return needs


def check_requirements(plan: Plan, backend: Backend) -> None:
    """Raise :class:`BackendError` naming each requirement ``backend`` lacks."""
    lacking = sorted(requirements(plan) - set(backend.capabilities))
    if lacking:
        raise BackendError(f"backend '{backend.name}' cannot run composition '{plan.entry}': "
                           f"it lacks {', '.join(lacking)}")
