"""``@dd.composition``: a Python function body recorded as a composition DAG."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, Sequence

import attrs

from dandelion import constants
from dandelion.authoring import tracing
from dandelion.authoring.annotations import optional_of, view_of
from dandelion.authoring.tracing import SetRef, Trace
from dandelion.errors import CompositionTypeError, FunctionTypeError
from dandelion.ir.nodes import Composition, Module, SetDecl, Span
from dandelion.ir.verify import check
from dandelion.program import Program, input_defaults
from dandelion.runtime.views import View

#: Name of the single output of a composition whose result is not assigned a name.
DEFAULT_OUTPUT = "result"


class CompositionFunction(tracing.Applicable):
    """A composition defined in Python.

    Calling it inside another composition records a nested application; calling it
    anywhere else runs it with :func:`dandelion.run`.

    Attributes:
        name: the composition's name.
        module: the IR: this composition, the compositions it calls, their functions.
        program: a :class:`~dandelion.program.Program` ready for a backend.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 outputs: Sequence[str] | str | None = None) -> None:
        functools.update_wrapper(self, fn)
        self.name = name or fn.__name__
        where = f"composition '{self.name}'"
        try:
            hints = typing.get_type_hints(fn, localns=tracing.caller_locals())
        except Exception as e:
            raise FunctionTypeError(f"{where}: cannot read annotations: {e}") from None
        code = fn.__code__
        span = Span(code.co_filename, code.co_firstlineno)
        trace = Trace(fn)
        input_views: list[tuple[str, View]] = []
        refs = []
        defaults: dict[str, str] = {}  # (its items, for a run that leaves such an input out)
        for p in inspect.signature(fn).parameters.values():
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                raise FunctionTypeError(f"{where}: input '{p.name}' must be a plain parameter")
            annotation = hints.get(p.name, Any)
            optional = optional_of(annotation) if p.default is not p.empty else None
            view = view_of(optional or annotation, f"{where} input '{p.name}'")
            input_views.append((p.name, view))
            if optional is not None and p.default is None:  # (``T | None = None``: no items)
                defaults[p.name] = constants.NONE
            elif p.default is not p.empty:
                defaults[p.name] = constants.write(p.default, view.type,
                                                   f"{where}: the default of input '{p.name}'")
            refs.append(trace.new_set(p.name, view.type, span, named=True, is_input=True))
        with trace:
            returned = fn(*refs)
        trace.name_sets()
        out_refs, out_names = self._outputs(returned, outputs, hints, where, span)
        for ref, out_name in zip(out_refs, out_names):
            ref.name = out_name
        output_views = self._output_views(hints, out_refs, out_names, where)
        out_set = set(map(id, out_refs))
        ephemeral = [SetDecl(s.name, s.type, s.span, s.value) for s in trace.sets
                     if not s.is_input and id(s) not in out_set]
        comp = Composition(
            self.name,
            inputs=[SetDecl(n, v.type, span, defaults.get(n)) for n, v in input_views],
            outputs=[SetDecl(n, v.type, span) for n, v in output_views],
            ephemeral=ephemeral,
            applications=[app.to_ir() for app in trace.apps],
            span=span)
        module = Module([], [comp])
        artifacts: dict[str, Any] = {}
        for callee in trace.callees.values():
            if isinstance(callee, CompositionFunction):
                module = module.merge(callee.module)
            else:
                module = module.merge(Module([callee.spec]))
            artifacts.update(callee.artifacts)
        check(module)
        self.module: Module = module
        self.composition = comp
        self.artifacts = artifacts
        ret = hints.get("return")
        named = ret if isinstance(ret, type) and issubclass(ret, tuple) and \
            getattr(ret, "_fields", None) == tuple(out_names) else None
        self.program = Program(module, self.name, artifacts, tuple(input_views),
                               tuple(output_views), named, defaults=input_defaults(comp))
        self.spec = attrs.evolve(comp.signature(), span=span)

    def _outputs(self, returned: Any, outputs: Sequence[str] | str | None,
                 hints: dict[str, Any], where: str, span: Any
                 ) -> tuple[list[SetRef], list[str]]:
        fields = getattr(returned, "_fields", None)
        refs = list(returned) if isinstance(returned, tuple) else [returned]
        if returned is None:
            refs = []
            ret = hints.get("return")
            if ret is not None and ret is not type(None) and outputs is None:
                raise CompositionTypeError(
                    f"{where} is annotated to return "
                    f"{ret.__name__ if isinstance(ret, type) else ret} but "
                    "returns nothing", span=span,
                    hint="return the set(s) it produces, e.g. 'return f(x)'; annotate it "
                         "'-> None' if it has no output")
        for ref in refs:
            if not isinstance(ref, SetRef):
                raise CompositionTypeError(f"{where} returns {type(ref).__name__}; a "
                                           "composition returns the sets it produces",
                                           span=span)
            if ref.is_input:
                raise CompositionTypeError(f"{where} returns its input '{ref.name}' "
                                           "unchanged", span=span,
                                           hint="outputs must be produced by a function")
        if len({id(r) for r in refs}) != len(refs):
            raise CompositionTypeError(f"{where} returns the same set twice", span=span)
        if isinstance(outputs, str):
            outputs = [outputs]
        ret = hints.get("return")
        if outputs is None and ret is not None and getattr(ret, "_fields", None):
            outputs = list(ret._fields)
        if outputs is None and fields is not None:
            outputs = list(fields)
        if outputs is not None:
            names = list(outputs)
            if len(names) != len(refs):
                raise CompositionTypeError(f"{where} declares outputs {names} but returns "
                                           f"{len(refs)} set(s)", span=span)
        elif len(refs) == 1:
            names = [refs[0].name if refs[0].named else DEFAULT_OUTPUT]
        else:
            names = [r.name if r.named else f"{DEFAULT_OUTPUT}{i}" for i, r in enumerate(refs)]
        return refs, names

    def _output_views(self, hints: dict[str, Any], refs: list[SetRef], names: list[str],
                      where: str) -> list[tuple[str, View]]:
        ret = hints.get("return")
        annotations: list[Any]
        if ret is None:
            annotations = [None] * len(refs)
        elif getattr(ret, "_fields", None):
            types = typing.get_type_hints(ret)
            annotations = [types.get(f) for f in ret._fields]
        elif len(refs) > 1 and typing.get_origin(ret) is tuple:
            annotations = list(typing.get_args(ret))
        else:
            annotations = [ret]
        views = []
        for ref, name, ann in zip(refs, names, annotations):
            if ann is None:
                views.append((name, View(ref.type)))
            else:
                views.append((name, view_of(ann, f"{where} output '{name}'")))
        return views

    def call_outside(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Runs the composition (:func:`dandelion.run`)."""
        from dandelion.runtime.api import run

        return run(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<dd.composition {self.name}>"


def composition(fn: Callable[..., Any] | None = None, *, name: str | None = None,
                outputs: Sequence[str] | str | None = None) -> Any:
    """Define a composition from a Python function body.

    The body runs once, at definition time, on placeholders: every call of a compute
    function records an application, and the sets it wires are checked for type and shape
    right away (errors name the file and line of the call).

    Args:
        fn: the body (when used as ``@dd.composition`` without parentheses).
        name: the composition's name (default: the Python name).
        outputs: names of the direct outputs (default: the variable returned, or ``result``).

    Example:
        >>> import dandelion as dd
        >>> @dd.compute
        ... def double(x: int) -> int:
        ...     return 2 * x
        >>> @dd.composition
        ... def twice(xs: list[int]) -> list[int]:
        ...     return double(dd.each(xs))
        >>> dd.run(twice, xs=[1, 2, 3], engine="inline")
        [2, 4, 6]
    """
    def wrap(f: Callable[..., Any]) -> CompositionFunction:
        return CompositionFunction(f, name=name, outputs=outputs)

    return wrap(fn) if fn is not None else wrap

