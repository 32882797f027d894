"""Pass ``cacheable``: which applications' instances may be memoized, and why not.

A compute function is cacheable unless declared ``cacheable=False`` (it reads the clock,
draws random numbers: caching assumes determinism); an I/O function only when declared
cacheable (it reads something that never changes); a composition applied once per shard is
not cached as a whole, its own applications are.  The verdict goes into the plan's hints
(``{"cacheable": bool}``), which the backends follow, and into the decisions that
``dandelion plan --explain`` prints.  A Python function that reaches a value with no
canonical hash is found uncacheable when it runs (the run's cache report says why) or by
``dandelion plan --explain``, which keys the code it loaded.

>>> from dandelion.ir import *
>>> from dandelion.planner import Plan, PassContext
>>> m = Module([FunctionSpec("f", [Param("x")], [Param("y")]),
...             FunctionSpec("now", [], [Param("t")], cacheable=False)],
...            [Composition("c", [SetDecl("a")], [SetDecl("b"), SetDecl("t")], [],
...                         [Application("f", [Argument("x", "a")], [Output("y", "b")]),
...                          Application("now", [], [Output("t", "t")])])])
>>> p, decisions = cacheable(Plan(m, "c"), PassContext())
>>> [d.message for d in decisions]
["'f' is cacheable", "'now' is not cacheable: declared cacheable=False"]
>>> p.hints[1]["cacheable"]
False
"""

from __future__ import annotations

from typing import Any

import attrs

from dandelion.ir.nodes import FunctionKind, FunctionSpec
from dandelion.planner.context import PassContext
from dandelion.planner.plan import Decision, Plan


def why_not_cacheable(spec: FunctionSpec | None) -> str | None:
    """Why instances of ``spec`` may not be memoized, or ``None`` when they may
    (``None`` for ``spec``: a composition)."""
    if spec is None:
        return "a composition applied per shard (its own applications are cached)"
    if spec.kind is FunctionKind.IO:
        return None if spec.cacheable else "an I/O function, not declared cacheable"
    return None if spec.cacheable else "declared cacheable=False"


def not_cached_because(plan: Plan, index: int, spec: FunctionSpec) -> str | None:
    """Why a backend does not cache the application at ``index`` of ``plan`` (``None``:
    it does): the pass's verdict in the plan's hints, else the function's declaration (a
    plan made without this pass)."""
    hint = plan.hints.get(index, {}).get("cacheable")
    reason = why_not_cacheable(spec)
    if hint is not None:
        return None if hint else (reason or "the plan says so")
    return reason


def cacheable(plan: Plan, context: PassContext) -> tuple[Plan, list[Decision]]:
    """Mark each application of the entry composition cacheable or not (a pure pass)."""
    hints: dict[int, dict[str, Any]] = {i: dict(h) for i, h in plan.hints.items()}
    decisions = []
    module = plan.module
    for i, app in enumerate(plan.composition.applications):
        spec = module.function(app.function)
        reason = why_not_cacheable(spec)
        hints.setdefault(i, {})["cacheable"] = reason is None
        message = f"'{app.function}' is cacheable" if reason is None else \
            f"'{app.function}' is not cacheable: {reason}"
        decisions.append(Decision("cacheable", message, i))
    return attrs.evolve(plan, hints=hints), decisions
