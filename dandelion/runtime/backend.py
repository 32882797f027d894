"""The backend contract: run a :class:`~dandelion.planner.Plan` on inputs, return outputs.

A backend declares its capabilities; :func:`check_requirements` says plainly which
requirement of a plan a backend lacks before anything runs.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

from dandelion.errors import BackendError
from dandelion.ir.nodes import FunctionKind
from dandelion.planner.plan import Plan
from dandelion.runtime.sharding import Items


class Backend(abc.ABC):
    """Runs plans.  Subclasses live in ``dandelion.backends.<name>`` as ``Backend``.

    Attributes:
        name: registry name.
        capabilities: what the backend supports: ``compute``, ``io``, ``nested``,
            ``timeouts`` …
        engine_name: the compute engine its functions run on (``process``, ``inline`` …).
        engine_kinds: the implementation kinds that engine runs (``python``, ``native`` …).
    """

    name: ClassVar[str] = "backend"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    engine_name: str = ""
    engine_kinds: frozenset[str] = frozenset()

    @abc.abstractmethod
    def run(self, plan: Plan, inputs: Mapping[str, Items], artifacts: Mapping[str, Any]
            ) -> dict[str, Items]:
        """Run ``plan`` on its direct inputs; return its direct outputs.

        A backend with the ``cache`` capability also takes ``cache=``, a
        :class:`~dandelion.cache.Cache` (or ``None``) in which to look up and keep the
        outputs of cacheable instances.
        """

    def close(self) -> None:  # noqa: B027 - an optional hook; most backends hold nothing
        """Release workers, engines and connections."""


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
