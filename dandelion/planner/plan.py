"""The :class:`Plan`: what a backend runs, derived from the IR by the planner's passes."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import attrs

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


@attrs.frozen
class Plan:
    """A composition ready to run.

    Attributes:
        module: the IR the backend executes (passes may have rewritten it).
        entry: the composition to run.
        decisions: what each pass decided, in order.
        hints: per application index, backend hints (placement, caching …) as plain data.
    """

    module: Module
    entry: str
    decisions: tuple[Decision, ...] = attrs.field(converter=_decisions, default=())
    hints: Mapping[int, Mapping[str, Any]] = attrs.field(factory=dict)

    @property
    def composition(self) -> Composition:
        """The entry composition."""
        comp = self.module.composition(self.entry)
        if comp is None:
            raise KeyError(self.entry)
        return comp

    def decide(self, pass_name: str, message: str, application: int | None = None) -> Plan:
        """This plan with one more decision recorded."""
        return attrs.evolve(self, decisions=(*self.decisions,
                                             Decision(pass_name, message, application)))

    def describe(self, *, explain: bool = False) -> str:
        """A human-readable listing of the plan (and of the decisions with ``explain``)."""
        comp = self.composition
        lines = [f"plan for composition '{comp.name}'"]
        lines.append("  inputs:  " + (", ".join(f"{d.name}: {d.type}" for d in comp.inputs)
                                      or "(none)"))
        lines.append("  outputs: " + (", ".join(f"{d.name}: {d.type}" for d in comp.outputs)
                                      or "(none)"))
        for i, app in enumerate(comp.applications):
            args = ", ".join(f"{a.param}={'optional ' if a.optional else ''}{a.mode} {a.source}"
                             for a in app.arguments)
            outs = ", ".join(f"{o.target}={o.result}" for o in app.outputs)
            by = f" by {app.join}" if app.join else ""
            hint = f"  {dict(self.hints[i])}" if i in self.hints else ""
            lines.append(f"  [{i}] {app.function}({args}) => ({outs}){by}{hint}")
        if explain:
            lines.append("decisions:" if self.decisions else "decisions: (none)")
            for d in self.decisions:
                where = f" [{d.application}]" if d.application is not None else ""
                lines.append(f"  {d.pass_name}{where}: {d.message}")
        return "\n".join(lines)

    def to_data(self) -> dict[str, Any]:
        """Plain JSON-able data for the plan."""
        return {"entry": self.entry, "module": to_data(self.module, spans=False),
                "decisions": [attrs.asdict(d) for d in self.decisions],
                "hints": {str(k): dict(v) for k, v in self.hints.items()}}
