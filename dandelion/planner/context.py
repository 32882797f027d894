"""What every pass is given: the :class:`PassContext`, and the :data:`Pass` type.

A pass is a pure function ``(Plan, PassContext) -> (Plan, decisions)``: it reads its
tunables, the topology and the cache from the context (never from globals), returns the
new plan and says what it decided (``dandelion plan --explain`` prints it).

>>> from dandelion.ir import Composition, Module
>>> from dandelion.planner import Decision, Plan, PassContext
>>> def noop(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
...     return plan, [Decision("noop", f"width {context.option('width', 4)}")]
>>> noop(Plan(Module([], [Composition("c")]), "c"), PassContext())[1]
[Decision(pass_name='noop', message='width 4', application=None)]
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs

from dandelion.planner.plan import Decision, Plan


def _options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(options)


@attrs.frozen
class PassContext:
    """Everything a pass may read besides the plan.

    Attributes:
        options: tunables by name (a pass documents the ones it reads, and their defaults).
        topology: the cluster's nodes and where storage lives (``None``: one node, nothing
            known about storage).
        cache: a handle on the result cache (``None``: no cache).
        nodes: the nodes a multi-node backend runs on, by the names placement hints use
            (a ``dandelion-node`` label, else the Ray node id), with their CPUs (empty:
            not known; the passes then use the topology's node names, one CPU each).
    """

    options: Mapping[str, Any] = attrs.field(converter=_options, factory=dict)
    topology: Any = None
    cache: Any = None
    nodes: Mapping[str, int] = attrs.field(converter=_options, factory=dict)

    def option(self, name: str, default: Any = None) -> Any:
        """The tunable ``name``, or ``default`` when it is not given."""
        return self.options.get(name, default)


#: A planner pass: a pure function from a plan and the context to the new plan and the
#: decisions it made.
Pass = Callable[[Plan, PassContext], "tuple[Plan, list[Decision]]"]

__all__ = ["Pass", "PassContext"]
