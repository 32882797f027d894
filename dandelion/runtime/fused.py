"""Fused chains: several applications linked 1:1 run as one unit, one sandbox invocation
per instance (the planner finds them: :mod:`dandelion.planner.fuse`).

A backend runs a chain as one application of a function made for it (:func:`fused_unit`):
its parameters are the head's arguments followed by every other member's whole inputs, its
results what leaves the chain (each member's outputs but the set the next member reads),
its instances the head's.  Its artifact, a :class:`FusedFunction`, calls the members one
after the other inside the sandbox, each on the outputs of the one before: intermediate
sets never leave it.  The members print into one capture, and a mark ends each member's
text there (:func:`dandelion.runtime.logs.end_member`), so that what a member printed is
shown under its name (:func:`dandelion.runtime.logs.split`).  Because the chain is made of
pure functions, a failed invocation is simply run again member by member
(:meth:`FusedUnit.run_members`), which finds and names the member that failed.

Results are cached per chain, keyed soundly by every member's identity, the chain's
wiring and the chain instance's inputs (:func:`dandelion.cache.key.implementation_identity`);
an intermediate result is never kept (it never leaves the sandbox to be hashed).
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

import attrs

from dandelion.items import Item
from dandelion.runtime.logs import end_member

if TYPE_CHECKING:  # pragma: no cover - a sandbox loads only what FusedFunction needs
    from dandelion.ir.nodes import Application, FunctionSpec, Implementation
    from dandelion.planner.plan import Plan
    from dandelion.runtime.events import Observer
    from dandelion.runtime.sharding import Instance

ItemSets = Sequence[Sequence[Item[Any]]]

#: Where a member's parameter comes from: ``("in", k)`` the unit's parameter ``k``,
#: ``("link", r)`` the previous member's result ``r``, ``("none", 0)`` nothing (unbound).
Source = tuple[str, int]


class FusedFunction:
    """The artifact a sandbox runs for a fused chain: each member on the outputs of the
    one before, the unit's results picked from theirs.

    Attributes:
        name: the unit's name (its members' names joined by ``+``).
        members: the members' artifacts (each a
            :class:`~dandelion.runtime.python_function.PythonFunction`), in chain order.
        wiring: per member, per parameter, its :data:`Source` and whether it is required
            (a required input that is empty skips the member, as it has no instance then).
        picks: per unit result, ``(member, result index)``.
        singles: per member, the indices of its one-item results (checked as a worker
            checks an instance's outputs).
        params: the views of the unit's parameters, ``results`` of its results (as a
            sandbox reads and writes them).
        names: the members' function names (what they print is shown under them).
    """

    batch: int | None = None
    vectorised: Any = None

    def __init__(self, name: str, members: Sequence[Any],
                 wiring: Sequence[Sequence[tuple[Source, bool]]],
                 picks: Sequence[tuple[int, int]], params: Sequence[tuple[str, Any]],
                 singles: Sequence[Sequence[int]], names: Sequence[str] | None = None
                 ) -> None:
        self.name = name
        self.names = tuple(names) if names is not None else tuple(m.name for m in members)
        self.members = tuple(members)
        self.wiring = tuple(tuple(w) for w in wiring)
        self.picks = tuple(picks)
        self.params = tuple(params)
        self.singles = tuple(tuple(s) for s in singles)
        self.results = tuple((f"{m}.{members[m].results[r][0]}", members[m].results[r][1])
                             for m, r in self.picks)

    def __reduce__(self) -> tuple[Any, ...]:
        return FusedFunction, (self.name, self.members, self.wiring, self.picks, self.params,
                               self.singles, self.names)

    def invoke(self, inputs: ItemSets) -> list[tuple[Item[Any], ...]]:
        """Run the chain on one instance's inputs; the unit's results."""
        outputs: list[list[tuple[Item[Any], ...]]] = []
        previous: Sequence[Sequence[Item[Any]]] = ()
        for member, wiring, singles, name in zip(self.members, self.wiring, self.singles,
                                                 self.names):
            args = [_source(src, inputs, previous) for src, _ in wiring]
            if any(required and not items for (_, required), items in zip(wiring, args)):
                done: list[tuple[Item[Any], ...]] = [() for _ in member.results]
            else:
                try:
                    done = member.invoke(args)
                finally:  # what it printed shows under its name, even when it raised
                    end_member(name)
                for r in singles:  # what a worker checks of each instance's outputs
                    if r >= len(done) or len(done[r]) != 1:
                        raise ValueError(f"'{member.name}' returned another number of "
                                         f"items than one for result {r}")
            outputs.append(done)
            previous = done
        return [outputs[m][r] for m, r in self.picks]

    def __repr__(self) -> str:
        return f"<fused chain {self.name}>"


def _source(src: Source, inputs: ItemSets, previous: ItemSets) -> Sequence[Item[Any]]:
    kind, k = src
    if kind == "in":
        return inputs[k] if k < len(inputs) else ()
    if kind == "link":
        return previous[k] if k < len(previous) else ()
    return ()


@attrs.frozen(eq=False)
class FusedUnit:
    """A chain as one application: what a backend runs in its members' place.

    Attributes:
        chain: the members' application indices, producer first.
        app: the unit's application (over the composition's sets).
        spec: the unit's declaration (a result of a member that a chain instance may skip
            is a set: it leaves none there).
        specs: the members' declarations.
        artifact: the :class:`FusedFunction`, or ``None`` when a member's artifact is not
            a Python one (then the chain runs unfused).
    """

    chain: tuple[int, ...]
    app: Application
    spec: FunctionSpec
    specs: tuple[FunctionSpec, ...]
    artifact: FusedFunction

    def member_inputs(self, member: int, inputs: ItemSets, previous: ItemSets
                      ) -> tuple[tuple[Item[Any], ...], ...] | None:
        """The inputs of ``member`` in the chain instance with unit ``inputs``, the
        previous member having returned ``previous``; ``None`` when the member has no
        instance there (a required input is empty)."""
        wiring = self.artifact.wiring[member]
        args = tuple(tuple(_source(src, inputs, previous)) for src, _ in wiring)
        if any(required and not items for (_, required), items in zip(wiring, args)):
            return None
        return args

    def run_members(self, inst: Instance,
                    run: Callable[[int, Instance], Sequence[Sequence[Item[Any]]] | None]
                    ) -> bool:
        """Run the chain instance ``inst`` again member by member: ``run(m, instance)``
        runs member ``m`` on its own instance and returns its outputs, or ``None`` to stop
        (it failed, or the run was cancelled); a member with no instance here is skipped.
        Whether every member ran (then the chain's own error stands)."""
        from dandelion.runtime.sharding import Instance

        previous: ItemSets = ()
        for m, spec in enumerate(self.specs):
            args = self.member_inputs(m, inst.inputs, previous)
            if args is None:  # no instance of this member here
                previous = [() for _ in spec.results]
                continue
            outputs = run(m, Instance(inst.index, args, inst.keys))
            if outputs is None:
                return False
            previous = outputs
        return True


def fused_unit(plan: Plan, chain: Sequence[int], artifacts: Sequence[Any],
               implementations: Sequence[Implementation]) -> FusedUnit:
    """The unit that runs ``chain`` (application indices of ``plan``'s entry) with the
    members' chosen Python ``artifacts`` (and their ``implementations``)."""
    from dandelion.ir.nodes import (
        Application,
        Argument,
        FunctionKind,
        FunctionSpec,
        Implementation,
        Output,
        Param,
    )
    from dandelion.ir.types import DataType
    from dandelion.planner.fuse import link_of

    comp, module = plan.composition, plan.module
    apps = [comp.applications[i] for i in chain]
    specs = []
    for app in apps:
        spec = module.function(app.function)
        assert spec is not None, app.function  # the pass fuses functions only
        specs.append(spec)
    links = [link_of(plan, a, b) for a, b in zip(chain, chain[1:])]
    arguments: list[Argument] = []
    params: list[Param] = []
    views: list[tuple[str, Any]] = []
    wiring: list[list[tuple[Source, bool]]] = []
    for m, (app, spec, artifact) in enumerate(zip(apps, specs, artifacts)):
        args = {a.param: a for a in app.arguments}
        link = links[m - 1] if m else None
        made = {o.target: o.result for o in apps[m - 1].outputs} if m else {}
        wires: list[tuple[Source, bool]] = []
        for p, (_, view) in zip(spec.params, artifact.params):
            a = args.get(p.name)
            if a is None:
                wires.append((("none", 0), False))
            elif a.source == link:
                r = [x.name for x in specs[m - 1].results].index(made[link])
                wires.append((("link", r), True))
            else:
                name = f"{m}.{p.name}"
                wires.append((("in", len(params)), not a.optional))
                # the head's arguments shard the unit; another member's are whole, and
                # optional here: its own emptiness skips that member, not the chain
                arguments.append(attrs.evolve(a, param=name, optional=a.optional or m > 0))
                params.append(Param(name, p.type))
                views.append((name, view))
        wiring.append(wires)
    picks: list[tuple[int, int]] = []
    outputs: list[Output] = []
    results: list[Param] = []
    # a member after one with a required input of its own may have no instance in a chain
    # instance: its results are sets in the unit; the others' keep their shape, which a
    # worker checks (a member that leaves a wrong number of items is then found apart)
    # (or after one whose set result it reads whole: that set may be empty)
    skippable = [False]
    for m in range(1, len(apps)):
        own = any(required for (kind, _), required in wiring[m] if kind == "in")
        whole = any(specs[m - 1].results[r].type.is_set
                    for (kind, r), _ in wiring[m] if kind == "link")
        skippable.append(skippable[-1] or own or whole)
    for m, (app, spec) in enumerate(zip(apps, specs)):
        names = [r.name for r in spec.results]
        for out in app.outputs:
            if m < len(links) and out.target == links[m]:
                continue  # the intermediate set: it never leaves the sandbox
            r = names.index(out.result)
            name = f"{m}.{out.result}"
            picks.append((m, r))
            outputs.append(Output(name, out.target))
            shape = spec.results[r].type
            results.append(Param(name, DataType(shape.element, True) if skippable[m] else shape))
    name = "+".join(app.function for app in apps)
    head = apps[0]
    join = None if head.join is None else attrs.evolve(
        head.join, params=[f"0.{p}" for p in head.join.params])
    singles = [[r for r, p in enumerate(spec.results) if not p.type.is_set] for spec in specs]
    digest = "fused:" + hashlib.sha256(json.dumps(
        [[i.kind, i.digest] for i in implementations] + [wiring, picks, singles]).encode()
    ).hexdigest()
    spec = FunctionSpec(name, params, results, FunctionKind.COMPUTE,
                        [Implementation("python", digest, name)],
                        cacheable=all(s.cacheable for s in specs))
    app = Application(name, arguments, outputs, join=join, span=head.span)
    return FusedUnit(tuple(chain), app, spec, tuple(specs),
                     _artifact(digest, name, artifacts, wiring, picks, views, singles,
                               [s.name for s in specs]))


_artifacts: dict[str, FusedFunction] = {}
_lock = threading.Lock()


def _artifact(digest: str, name: str, members: Sequence[Any],
              wiring: list[list[tuple[Source, bool]]], picks: list[tuple[int, int]],
              views: list[tuple[str, Any]], singles: list[list[int]], names: list[str]
              ) -> FusedFunction:
    """The one :class:`FusedFunction` of these members and wiring (the artifact store and
    the engines trust the same object: a sandbox's code is serialized once)."""
    with _lock:
        known = _artifacts.get(digest)
        if known is not None and all(a is b for a, b in zip(known.members, members)):
            return known
        if len(_artifacts) > 1024:
            _artifacts.clear()
        made = _artifacts[digest] = FusedFunction(name, members, wiring, picks, views,
                                                  singles, names)
        return made


def member_watch(observe: Observer, composition: str, unit: FusedUnit, engine: str
                 ) -> Any:
    """A pool's watch for a unit's instances that tells ``observe`` about each member's
    instance: all with the unit's times, the unit's inputs on the first member and its
    outputs on the last, the function's time shared evenly."""
    from dandelion.runtime.events import watcher

    watches = [watcher(observe, composition, i, spec.name, engine)
               for i, spec in zip(unit.chain, unit.specs)]
    last = len(watches) - 1

    def watch(inst: Instance, start: float, end: float | None, outputs: Any,
              error: BaseException | None, seconds: float | None) -> None:
        each = seconds / len(watches) if seconds is not None else None
        for m, w in enumerate(watches):
            one = inst if m == 0 else attrs.evolve(inst, inputs=())
            w(one, start, end, outputs if m == last else (), error, each)

    return watch


__all__ = ["FusedFunction", "FusedUnit", "fused_unit", "member_watch"]
