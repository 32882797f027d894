"""The artifact of a Python compute function, as every engine and sandbox runs it.

A :class:`PythonFunction` is what ``@dd.compute`` ships (by value, see
:mod:`dandelion.runtime.shipping`) and what a sandbox unpickles and invokes: its own module,
so that a sandbox loads the runtime, not the front end (:mod:`dandelion.authoring`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs

from dandelion.codec import INT64_RANGE
from dandelion.errors import DandelionError, FunctionError, FunctionTypeError
from dandelion.items import Item
from dandelion.runtime.tracebacks import format_traceback, user_frames
from dandelion.runtime.views import View, from_python, shared_view, to_python


@attrs.frozen(eq=False)
class PythonFunction:
    """The code artifact of a Python compute function, as engines run it.

    ``invoke`` turns the items of each parameter into Python arguments, calls the function
    and turns what it returns into items, checking both against the annotations.  It is
    what a sandbox deserializes and runs, so it holds only picklable data.
    """

    name: str
    fn: Callable[..., Any]
    params: tuple[tuple[str, View], ...]
    results: tuple[tuple[str, View], ...]
    #: the implementation over many instances at once (:mod:`dandelion.runtime.batch`)
    vectorised: Callable[..., Any] | None = None
    #: instances per sandbox invocation (``None``: chosen by measurement; ``1``: never
    #: batched)
    batch: int | None = None
    #: the positions of the parameters that have a default value: an instance whose set
    #: for one is empty calls the function without it (:meth:`invoke`)
    defaulted: tuple[int, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        # Plain fields, rebuilt by one function: a sandbox unpickles this for every
        # invocation, where each global a pickle names and each object it builds costs
        # microseconds of cold caches; the common views come from the zygote's cache.
        args: tuple[Any, ...] = (self.name, self.fn, tuple(
            (n, v.type.element.value, v.type.is_set, v.items, v.annotation)
            for n, v in self.params + self.results), len(self.params))
        if self.vectorised is not None or self.batch is not None or self.defaulted:
            args += (self.vectorised, self.batch, self.defaulted)
        return _python_function, args

    def invoke(self, inputs: Sequence[Sequence[Item[Any]]]) -> list[tuple[Item[Any], ...]]:
        """Run once on one instance's inputs (one item sequence per parameter, in order); a
        parameter with a default whose items are none is left out of the call."""
        if self.defaulted and self.leaves_out(inputs):
            value = self._call_leaving_out(inputs)
        else:
            args = []
            for (p, view), items in zip(self.params, inputs):
                # one plain value of exactly its annotated class: nothing to check or convert
                if view.plain is not None and len(items) == 1 and \
                        type(items[0].value) is view.plain:
                    args.append(items[0].value)
                else:
                    args.append(to_python(items, view, f"parameter '{p}' of '{self.name}'"))
            value = self.fn(*args)
        if not self.results:
            return []
        if len(self.results) == 1:
            values: Sequence[Any] = (value,)
        else:
            if not isinstance(value, tuple) or len(value) != len(self.results):
                raise FunctionTypeError(
                    f"'{self.name}' must return a tuple of {len(self.results)} values "
                    f"({', '.join(r for r, _ in self.results)}), got {type(value).__name__}")
            values = value
        out: list[tuple[Item[Any], ...]] = []
        for (r, view), v in zip(self.results, values):
            plain = view.plain
            if plain is not None and type(v) is plain and (
                    plain is not int or INT64_RANGE[0] <= v <= INT64_RANGE[1]) and (
                    not view.array or not v.dtype.hasobject):
                out.append((Item(v),))
            else:
                out.append(from_python(v, view, f"result '{r}' of '{self.name}'"))
        return out

    def leaves_out(self, inputs: Sequence[Sequence[Item[Any]]]) -> bool:
        """Whether an instance of these inputs leaves a parameter with a default out (its
        items are none)."""
        return any(i < len(inputs) and not inputs[i] for i in self.defaulted)

    def _call_leaving_out(self, inputs: Sequence[Sequence[Item[Any]]]) -> Any:
        """Call the function without each parameter that has a default and no items: those
        before it by position, those after it by name (as Python's own call with a default
        left out would)."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for i, ((p, view), items) in enumerate(zip(self.params, inputs)):
            if not items and i in self.defaulted:
                continue
            value = to_python(items, view, f"parameter '{p}' of '{self.name}'")
            if kwargs or len(args) < i:
                kwargs[p] = value
            else:
                args.append(value)
        return self.fn(*args, **kwargs)


def defaulted(fn: Any) -> frozenset[str]:
    """The parameters of Python function ``fn`` that have a default value (none for
    anything that has no signature): a call may leave them out (``defaulted`` of
    :class:`~dandelion.ir.Param`).

    >>> from dandelion.runtime.python_function import defaulted
    >>> sorted(defaulted(lambda x, factor=2, scale=1.0: x))
    ['factor', 'scale']
    """
    import inspect  # (at decoration and in errors: not in a sandbox's path)

    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # not a callable, or one without a signature
        return frozenset()
    return frozenset(p.name for p in parameters if p.default is not p.empty)


def _python_function(name: str, fn: Callable[..., Any],
                     views: tuple[tuple[str, str, bool, bool, Any], ...], n_params: int,
                     vectorised: Callable[..., Any] | None = None, batch: int | None = None,
                     defaulted: tuple[int, ...] = ()) -> PythonFunction:
    """A :class:`PythonFunction` from what its ``__reduce__`` gives."""
    built = tuple((n, shared_view(element, is_set, items, annotation))
                  for n, element, is_set, items, annotation in views)
    return PythonFunction(name, fn, built[:n_params], built[n_params:], vectorised, batch,
                          defaulted)


def invoke_python(artifact: PythonFunction, inputs: Sequence[Sequence[Item[Any]]],
                  ) -> list[tuple[Item[Any], ...]]:
    """Run a Python artifact, wrapping unexpected exceptions as :class:`FunctionError`."""
    try:
        return artifact.invoke(inputs)
    except DandelionError:
        raise
    except Exception as e:
        kind = type(e)
        name = kind.__qualname__ if kind.__module__ == "builtins" else \
            f"{kind.__module__}.{kind.__qualname__}"
        raise FunctionError(f"compute function '{artifact.name}' raised "
                            f"{type(e).__name__}: {e}", function=artifact.name,
                            traceback=format_traceback(user_frames(e.__traceback__), name,
                                                       str(e))) from e
