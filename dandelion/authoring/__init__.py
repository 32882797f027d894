"""The Python front end: ``@dd.compute`` and ``@dd.composition``.

Its modules are imported on first use: a sandbox that runs a compute function needs
:mod:`~dandelion.authoring.compute`, not the composition tracer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Json": "annotations", "View": "annotations",
    "CompositionFunction": "composition",
    "composition": "composition",
    "ComputeFunction": "compute", "PythonFunction": "compute", "compute": "compute",
    "all_": "tracing", "any_each": "tracing", "any_keyed": "tracing", "each": "tracing",
    "keyed": "tracing", "optional": "tracing",
}

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.authoring.annotations import Json, View
    from dandelion.authoring.composition import CompositionFunction, composition
    from dandelion.authoring.compute import ComputeFunction, PythonFunction, compute
    from dandelion.authoring.tracing import all_, any_each, any_keyed, each, keyed, optional


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dandelion.authoring' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"dandelion.authoring.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["CompositionFunction", "ComputeFunction", "Json", "PythonFunction", "View",
           "all_", "any_each", "any_keyed", "composition", "compute", "each",
           "keyed", "optional"]
