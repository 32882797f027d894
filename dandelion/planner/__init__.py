"""The planner: an ordered list of pure passes.

Each pass is a function ``(Plan, PassContext) -> (Plan, decisions)``
(:mod:`dandelion.planner.context`); the planner runs them in order, records what each
decided, then plans every composition the result applies once per shard, so that the plan
holds everything a backend runs.

>>> from dandelion.ir import Module, Composition
>>> make_plan(Module([], [Composition("c")]), "c").entry
'c'
"""

from __future__ import annotations

from typing import Sequence

import attrs

from dandelion.ir.nodes import Module
from dandelion.ir.verify import check
from dandelion.planner.cacheable import cacheable
from dandelion.planner.context import Pass, PassContext
from dandelion.planner.flatten import flatten
from dandelion.planner.fuse import can_fuse, fuse
from dandelion.planner.partition import partition
from dandelion.planner.placement import locality, near_storage
from dandelion.planner.plan import Decision, Plan

#: The passes run by default, in order.
DEFAULT_PASSES: tuple[Pass, ...] = (flatten, cacheable, fuse, near_storage, locality,
                                    partition)


def make_plan(module: Module, entry: str, passes: Sequence[Pass] | None = None,
              context: PassContext | None = None) -> Plan:
    """Verify ``module`` and derive the plan for composition ``entry``.

    Args:
        module: the IR.
        entry: the composition to run.
        passes: the passes, in order (default: :data:`DEFAULT_PASSES`).
        context: what the passes are given (default: no options, topology or cache).

    Raises:
        CompositionError: the module has errors (all of them are attached).
    """
    check(module)
    return derive_plan(module, entry, passes, context)


def derive_plan(module: Module, entry: str, passes: Sequence[Pass] | None = None,
                context: PassContext | None = None) -> Plan:
    """The plan for composition ``entry`` of a module already verified (no checks), with
    the sub-plans of the compositions it applies once per shard, made by the same passes.
    """
    chosen = DEFAULT_PASSES if passes is None else tuple(passes)
    ctx = context if context is not None else PassContext()
    plan = Plan(module, entry)
    for run_pass in chosen:
        plan, decisions = run_pass(plan, ctx)
        plan = attrs.evolve(plan, decisions=(*plan.decisions, *decisions),
                            passes=(*plan.passes, pass_name(run_pass)))
    nested = sorted({a.function for a in plan.composition.applications
                     if plan.module.composition(a.function) is not None})
    if not nested:
        return plan
    return attrs.evolve(plan, subplans={name: derive_plan(plan.module, name, chosen, ctx)
                                        for name in nested})


def pass_name(run_pass: Pass) -> str:
    """The name a pass's decisions are shown under: its function's name."""
    return getattr(run_pass, "__name__", type(run_pass).__name__)


__all__ = ["DEFAULT_PASSES", "Decision", "Pass", "PassContext", "Plan", "cacheable",
           "can_fuse", "derive_plan", "flatten", "fuse", "locality", "make_plan",
           "near_storage", "partition", "pass_name"]
