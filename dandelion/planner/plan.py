"""The :class:`Plan`: what a backend runs, derived from the IR by the planner's passes."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import attrs

from dandelion.errors import BackendError
from dandelion.ir.nodes import Composition, Module
from dandelion.ir.serialize import to_data


@attrs.frozen
class Decision:
    """Something a pass decided, and why (shown by ``dandelion plan --explain``)."""

    pass_name: str
    message: str
    application: int | None = None


def _decisions(decisions: Iterable[Decision]) -> tuple[Decision, ...]:
    return tuple(decisions)


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(names)


def _subplans(subplans: Mapping[str, Plan]) -> Mapping[str, Plan]:
    return dict(subplans)


def _chains(chains: Iterable[Iterable[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(chain) for chain in chains)


@attrs.frozen
class Plan:
    """A composition ready to run: everything a backend runs, as plain data.

    Attributes:
        module: the IR the backend executes (passes may have rewritten it).
        entry: the composition to run.
        decisions: what each pass decided, in order.
        hints: per application index, backend hints (placement, caching …) as plain data.
        passes: the names of the passes that made this plan, in order.
        subplans: per composition that the entry applies to sharded inputs (once per
            shard), its own plan (which holds its own sub-plans): a backend looks them up
            and never calls the planner while it runs.
        chains: fused chains (:mod:`dandelion.planner.fuse`): the indices of applications
            linked 1:1, producer first, each run as one unit in one sandbox invocation per
            instance.
    """

    module: Module
    entry: str
    decisions: tuple[Decision, ...] = attrs.field(converter=_decisions, default=())
    hints: Mapping[int, Mapping[str, Any]] = attrs.field(factory=dict)
    passes: tuple[str, ...] = attrs.field(converter=_names, default=())
    subplans: Mapping[str, Plan] = attrs.field(converter=_subplans, factory=dict)
    chains: tuple[tuple[int, ...], ...] = attrs.field(converter=_chains, default=())

    @property
    def composition(self) -> Composition:
        """The entry composition."""
        comp = self.module.composition(self.entry)
        if comp is None:
            raise KeyError(self.entry)
        return comp

    def subplan(self, name: str) -> Plan:
        """The plan of the composition ``name`` that the entry applies once per shard.

        Raises:
            BackendError: the planner made no sub-plan for it (a plan made by hand).
        """
        sub = self.subplans.get(name)
        if sub is None:
            raise BackendError(f"the plan of composition '{self.entry}' has no sub-plan for "
                               f"composition '{name}'",
                               hint="make plans with dandelion.planner.make_plan, which plans "
                                    "nested compositions too")
        return sub

    def describe(self, *, explain: bool = False) -> str:
        """A human-readable listing of the plan (and of the decisions with ``explain``)."""
        comp = self.composition
        lines = [f"plan for composition '{comp.name}'"]
        lines.append("  inputs:  " + (", ".join(f"{d.name}: {d.type}{_held(d.value, ' = ')}"
                                                for d in comp.inputs) or "(none)"))
        lines.append("  outputs: " + (", ".join(f"{d.name}: {d.type}" for d in comp.outputs)
                                      or "(none)"))
        held = [f"{d.name}: {d.type}{_held(d.value, ' = ')}" for d in comp.ephemeral
                if d.value is not None]
        if held:
            lines.append("  constants: " + ", ".join(held))
        for i, app in enumerate(comp.applications):
            args = ", ".join(f"{a.param}={'optional ' if a.optional else ''}{a.mode} {a.source}"
                             for a in app.arguments)
            outs = ", ".join(f"{o.target}={o.result}" for o in app.outputs)
            by = f" by {app.join}" if app.join else ""
            hint = f"  {dict(self.hints[i])}" if i in self.hints else ""
            lines.append(f"  [{i}] {app.function}({args}) => ({outs}){by}{hint}")
        for chain in self.chains:
            lines.append("  fused: " + " -> ".join(
                f"[{i}] {comp.applications[i].function}" for i in chain))
        if explain:
            lines.append("decisions:" if self.decisions or self.passes else "decisions: (none)")
            for d in self.decisions:
                where = f" [{d.application}]" if d.application is not None else ""
                lines.append(f"  {d.pass_name}{where}: {d.message}")
            decided = {d.pass_name for d in self.decisions}
            for name in self.passes:
                if name not in decided:
                    lines.append(f"  {name}: (no change)")
        for name, sub in self.subplans.items():
            sub_lines = sub.describe(explain=explain).splitlines()
            sub_lines[0] = f"sub-plan for composition '{name}' (run once per shard)"
            lines += ["  " + line for line in sub_lines]
        return "\n".join(lines)

    def to_data(self) -> dict[str, Any]:
        """Plain JSON-able data for the plan."""
        return {"entry": self.entry, "module": to_data(self.module, spans=False),
                "decisions": [attrs.asdict(d) for d in self.decisions],
                "hints": {str(k): dict(v) for k, v in self.hints.items()},
                "passes": list(self.passes), "chains": [list(c) for c in self.chains],
                "subplans": {k: v.to_data() for k, v in self.subplans.items()}}


def _held(value: str | None, prefix: str) -> str:
    """The items a set holds of its own (a constant, an input's default) as a plan lists
    them: ``prefix`` and their values (at most 60 characters); nothing for none."""
    if value is None:
        return ""
    from dandelion import constants

    items = constants.read(value)
    shown = repr(items[0].value) if len(items) == 1 else repr([i.value for i in items])
    return prefix + (shown if len(shown) <= 60 else shown[:57] + "...")
