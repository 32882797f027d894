"""The Python front end: ``@dd.compute`` and ``@dd.composition``."""

from dandelion.authoring.annotations import Json, View
from dandelion.authoring.composition import CompositionFunction, as_program, composition
from dandelion.authoring.compute import ComputeFunction, PythonFunction, compute
from dandelion.authoring.tracing import all_, any_each, any_keyed, each, keyed, optional

__all__ = ["CompositionFunction", "ComputeFunction", "Json", "PythonFunction", "View",
           "all_", "any_each", "any_keyed", "as_program", "composition", "compute", "each",
           "keyed", "optional"]
