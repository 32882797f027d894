"""The ``inline`` engine: Python functions called in the worker's own process.

No isolation at all: for debugging, tests of semantics and trusted code.  A timeout is
enforced by the dispatcher giving up on the function (it cannot be stopped), so prefer a
sandboxed engine for untrusted code.

A function still sees its inputs, and the caller its outputs, as they would cross a
sandbox (:func:`~dandelion.codec.crossed`): a tuple arrives as a list, an ``int`` declared
``float`` as a ``float``, a Fortran-ordered array in C order, a ``bytearray`` as
``bytes``; what is already in that form (the common case) is handed over as it is.  So a
function behaves alike on every engine, and a cached result, kept under its inputs'
encoding, is what each input that encodes alike computes.
"""

from __future__ import annotations

from typing import Any, Sequence

from dandelion.codec import EXACT, crossed
from dandelion.errors import FunctionError, FunctionTypeError
from dandelion.ir.nodes import Param
from dandelion.ir.types import ElementType
from dandelion.items import Item
from dandelion.runtime.batch import BatchRun, Failed, invoke_many, vectorisable
from dandelion.runtime.engine import Context, FunctionCall, ItemSets, ObjectContext
from dandelion.runtime.engine import Engine as EngineBase
from dandelion.runtime.logs import begin_capture, end_capture
from dandelion.runtime.python_function import invoke_python

try:  # the cache's C extension
    from dandelion.cache._keysc import exact_items
except ImportError:  # pragma: no cover - built without a C compiler: the same in Python
    def exact_items(sets: Sequence[Sequence[Any]], types: tuple[type | None, ...]) -> bool:
        return all(type(item.value) is exact
                   for items, exact in zip(sets, types) for item in items)


class InlineEngine(EngineBase):
    """Calls :class:`~dandelion.runtime.python_function.PythonFunction` artifacts directly."""

    name = "inline"
    kinds = frozenset({"python"})

    def run(self, context: Context, call: FunctionCall) -> None:
        assert isinstance(context, ObjectContext)
        begin_capture()
        try:
            outputs = invoke_python(call.artifact, cross(call.spec.params, context.inputs))
            context.outputs = cross(call.spec.results, outputs)
        except FunctionError as e:
            e.logs = end_capture()
            raise
        finally:
            context.logs = end_capture()
        return None

    def run_batch(self, call: FunctionCall, inputs: Sequence[ItemSets]) -> BatchRun | None:
        """A batch runs the function's vectorised implementation (there is no sandbox to
        save here); without one, or when it raises, the instances run one by one."""
        if not vectorisable(call.artifact, inputs):
            return None
        begin_capture()
        try:
            params, results = call.spec.params, call.spec.results
            outputs: list[Any] = [
                out if isinstance(out, Failed) else cross(results, out)
                for out in invoke_many(call.artifact, [cross(params, sets) for sets in inputs])]
        except FunctionTypeError as e:  # its contract broken: every instance fails with it
            outputs = [Failed(e)] * len(inputs)
        except Exception:  # noqa: BLE001 - found instance by instance
            end_capture()
            return None
        logs = end_capture()  # printed by all instances together: the first shows it
        return BatchRun([(out, logs if i == 0 else "") for i, out in enumerate(outputs)])

    def __repr__(self) -> str:
        return "<InlineEngine>"


def cross(declared: tuple[Param, ...], sets: Any) -> Any:
    """The item sets ``sets`` of the parameters or results ``declared`` as they cross a
    sandbox (:func:`~dandelion.codec.crossed`): ``sets`` itself where nothing changes."""
    known = _ELEMENTS.get(id(declared))
    if known is None or known[0] is not declared:
        known = _elements(declared)
    if exact_items(sets, known[2]):  # the common case, in one call
        return sets
    return _crossed_sets(known[1], sets)


def _crossed_sets(elements: tuple[ElementType, ...], sets: Any) -> Any:
    out = None
    for i, (items, element) in enumerate(zip(sets, elements)):
        for j, item in enumerate(items):
            made = crossed(item.value, element)
            if made is not item.value:
                if out is None:
                    out = [list(s) for s in sets]
                out[i][j] = Item(made, item.key, item.name)
    return sets if out is None else [tuple(s) for s in out]


def _elements(declared: tuple[Param, ...]) -> tuple[Any, ...]:
    """``declared``, each declaration's element type, and the one Python type it crosses
    as unchanged without a closer look (``None``: look closer); kept by ``id(declared)``
    (and so kept alive: the id is not reused)."""
    elements = tuple(p.type.element for p in declared)
    made = (declared, elements, tuple(EXACT.get(e) for e in elements))
    if len(_ELEMENTS) > 4096:
        _ELEMENTS.clear()
    _ELEMENTS[id(declared)] = made
    return made


_ELEMENTS: dict[int, tuple[Any, ...]] = {}


Engine = InlineEngine
