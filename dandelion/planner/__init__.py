"""The planner: an ordered list of pure passes ``Plan -> Plan`` (DESIGN.md §3, §6).

>>> from dandelion.ir import Module, Composition
>>> make_plan(Module([], [Composition("c")]), "c").entry
'c'
"""

from __future__ import annotations

from typing import Callable, Sequence

from dandelion.ir.nodes import Module
from dandelion.ir.verify import check
from dandelion.planner.flatten import flatten
from dandelion.planner.plan import Decision, Plan

Pass = Callable[[Plan], Plan]

#: The passes run by default, in order.
DEFAULT_PASSES: tuple[Pass, ...] = (flatten,)


def make_plan(module: Module, entry: str, passes: Sequence[Pass] | None = None) -> Plan:
    """Verify ``module`` and derive the plan for composition ``entry``.

    Raises:
        CompositionError: the module has errors (all of them are attached).
    """
    check(module)
    return derive_plan(module, entry, passes)


def derive_plan(module: Module, entry: str, passes: Sequence[Pass] | None = None) -> Plan:
    """The plan for composition ``entry`` of a module already verified (no checks)."""
    plan = Plan(module, entry)
    for p in DEFAULT_PASSES if passes is None else passes:
        plan = p(plan)
    return plan


__all__ = ["DEFAULT_PASSES", "Decision", "Pass", "Plan", "derive_plan", "flatten",
           "make_plan"]
