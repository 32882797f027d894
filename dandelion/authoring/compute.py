"""``@dd.compute``: a pure Python function as a Dandelion compute function."""

from __future__ import annotations

import functools
import hashlib
import inspect
import marshal
import typing
from typing import Any, Callable, Sequence

import attrs

from dandelion.authoring import tracing
from dandelion.authoring.annotations import optional_of, view_of
from dandelion.errors import DandelionError, FunctionTypeError
from dandelion.ir.nodes import FunctionKind, FunctionSpec, Implementation, Param, Span
from dandelion.program import Program
from dandelion.runtime.python_function import PythonFunction as PythonFunction  # public here
from dandelion.runtime.python_function import _python_function as _python_function  # old pickles
from dandelion.runtime.python_function import defaulted
from dandelion.runtime.views import View

#: Name of the one result of a function that returns a single value.
DEFAULT_RESULT = "result"


def code_digest(fn: Callable[..., Any]) -> str:
    """A ``sha256:`` digest of a function's code: its source, else its bytecode."""
    h = hashlib.sha256()
    h.update(f"{fn.__module__}:{fn.__qualname__}\n".encode())
    try:
        h.update(inspect.getsource(fn).encode())
    except (OSError, TypeError):
        h.update(marshal.dumps(fn.__code__))
    return "sha256:" + h.hexdigest()


def _result_views(fn: Callable[..., Any], hints: dict[str, Any],
                  names: Sequence[str] | None, where: str) -> tuple[tuple[str, View], ...]:
    ret = hints.get("return", inspect.Signature.empty)
    if ret is None or ret is type(None):
        return ()
    if ret is inspect.Signature.empty:
        ret = Any
    fields = getattr(ret, "_fields", None)
    if fields is not None and isinstance(ret, type) and issubclass(ret, tuple):
        types = typing.get_type_hints(ret, localns=tracing.caller_locals())
        return tuple((f, view_of(types.get(f, Any), f"{where} result '{f}'")) for f in fields)
    if typing.get_origin(ret) is tuple and names is not None and len(names) > 1:
        args = typing.get_args(ret)
        if len(args) != len(names):
            raise FunctionTypeError(f"{where}: results={tuple(names)} names {len(names)} "
                                    f"results but the annotation has {len(args)}")
        return tuple((n, view_of(a, f"{where} result '{n}'")) for n, a in zip(names, args))
    if names is not None and len(names) != 1:
        raise FunctionTypeError(f"{where}: results={tuple(names)} needs a tuple[...] "
                                "return annotation with one type per result")
    name = names[0] if names else DEFAULT_RESULT
    return ((name, view_of(ret, f"{where} result")),)


def _where(fn: Callable[..., Any]) -> tuple[str, Span]:
    code = getattr(fn, "__code__", None)
    if code is None:
        return fn.__qualname__, Span()
    span = Span(code.co_filename, code.co_firstlineno)
    return f"{fn.__qualname__} ({span})", span


class ComputeFunction(tracing.Applicable):
    """A compute function: plain Python when called directly, an application when called
    inside a ``@dd.composition``.

    Attributes:
        spec: the IR declaration (:class:`~dandelion.ir.FunctionSpec`).
        artifact: the :class:`PythonFunction` engines run.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 results: Sequence[str] | str | None = None, kind: FunctionKind =
                 FunctionKind.COMPUTE, cacheable: bool = True, native: Any = None,
                 wasm: Any = None, batch: int | None = None, fuse: bool = True) -> None:
        if not callable(fn) or inspect.isclass(fn):
            raise FunctionTypeError(f"@dd.compute decorates a function, not {fn!r}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        where, span = _where(fn)
        try:
            hints = typing.get_type_hints(fn, localns=tracing.caller_locals())
        except Exception as e:  # NameError from an unresolvable forward reference, …
            raise FunctionTypeError(f"{where}: cannot read annotations: {e}") from None
        sig = inspect.signature(fn)
        params = []
        for p in sig.parameters.values():
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                raise FunctionTypeError(f"{where}: parameter '{p.name}' must be a plain "
                                        "positional parameter (no *args, **kwargs, keyword-only)")
            if p.name == "by":
                raise FunctionTypeError(f"{where}: a parameter may not be called 'by'",
                                        hint="'by' names the join of an application")
            annotation = hints.get(p.name, Any)
            if p.default is not p.empty:  # (``limit: int | None = None``: an int, or left out)
                annotation = optional_of(annotation) or annotation
            params.append((p.name, view_of(annotation, f"{where} parameter '{p.name}'")))
        #: the parameters with a default value: a call may leave them out (where only
        #: Python runs it: a native or WebAssembly implementation knows no default)
        self.defaulted = defaulted(fn) if native is None and wasm is None else frozenset()
        names = [results] if isinstance(results, str) else results
        result_views = _result_views(fn, hints, names, where)
        self.name = name or fn.__name__
        digest = code_digest(fn)
        if batch is not None and (not isinstance(batch, int) or batch < 1):
            raise FunctionTypeError(f"{where}: batch={batch!r} must be a positive int "
                                    "(1: never batch)")
        self.artifact = PythonFunction(self.name, fn, tuple(params), result_views,
                                       batch=batch, defaulted=tuple(
                                           i for i, (n, _) in enumerate(params)
                                           if n in self.defaulted))
        self._digest = digest
        implementations = [Implementation("python", digest, f"{fn.__module__}:"
                                                            f"{fn.__qualname__}")]
        self._program: Program | None = None
        #: implementation digest -> artifact, the preferred implementation first
        self._artifacts: dict[str, Any] = {digest: self.artifact}
        if wasm is not None:
            from dandelion.sdk import wasm_artifact

            module = wasm_artifact(wasm, self.name, span.file)
            implementations.insert(0, Implementation("wasm", module.digest, str(wasm)))
            self._artifacts = {module.digest: module, **self._artifacts}
        if native is not None:
            from dandelion.sdk import native_artifact

            elf = native_artifact(native, self.name, span.file)
            implementations.insert(0, Implementation("native", elf.digest, str(native)))
            self._artifacts = {elf.digest: elf, **self._artifacts}
        self.spec = FunctionSpec(
            name=self.name,
            params=[Param(n, v.type, defaulted=n in self.defaulted) for n, v in params],
            results=[Param(n, v.type) for n, v in result_views],
            kind=kind,
            implementations=implementations,
            cacheable=cacheable,
            fusable=fuse,
            span=span,
        )

    def vectorised(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Give this function an implementation over many instances at once, used when
        instances run in batches (``docs/fusion.rst``).

        ``fn`` takes, per parameter, the values of all instances of a batch (a list, or
        one stacked array when every value is an ndarray of one shape and dtype) and
        returns one value per instance, in order.  Its results must equal the function's.

        Example:
            >>> import dandelion as dd
            >>> @dd.compute
            ... def double(x: int) -> int:
            ...     return 2 * x
            >>> @double.vectorised
            ... def double_many(xs: list[int]) -> list[int]:
            ...     return [2 * x for x in xs]
            >>> double.artifact.vectorised is double_many
            True
        """
        self.artifact = attrs.evolve(self.artifact, vectorised=fn)
        self._artifacts[self._digest] = self.artifact
        self._program = None
        return fn

    @property
    def program(self) -> Program:
        """This function's call alone, as a program (:meth:`Program.calling
        <dandelion.program.Program.calling>`): what ``dd.run(fn, ...)`` and ``dandelion run
        FILE:NAME`` run, in a sandbox like any application, and cached like any run.

        Example:
            >>> import dandelion as dd
            >>> @dd.compute
            ... def double(x: int) -> int:
            ...     return 2 * x
            >>> dd.run(double, x=21, engine="inline")
            42

        Raises:
            CompositionTypeError: an I/O function (it runs only as a step of a
                composition).
        """
        program: Program | None = getattr(self, "_program", None)  # (None in old pickles)
        if program is None:  # made once: runtimes keep plans and memos per program
            program = self._program = Program.calling(
                self.spec, self._artifacts, self.artifact.params, self.artifact.results)
        return program

    def __getstate__(self) -> dict[str, Any]:
        # a function shipped by value (reached from another's code) travels without its
        # program, made again where it is needed
        return {**self.__dict__, "_program": None}

    @property
    def artifacts(self) -> dict[str, Any]:
        """Digest -> artifact for this function's implementations."""
        return dict(self._artifacts)

    def call_outside(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Plain Python: the function itself."""
        if tracing.contains_set_refs(args, kwargs):
            raise DandelionError(f"'{self.name}' got a set of a composition outside of "
                                 "a composition's definition")
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<dd.compute {self.name}>"


def compute(fn: Callable[..., Any] | None = None, *, name: str | None = None,
            results: Sequence[str] | str | None = None, cacheable: bool = True,
            native: Any = None, wasm: Any = None, batch: int | None = None,
            fuse: bool = True) -> Any:
    """Declare a pure compute function.

    Annotations give the types of parameters and results (see
    :mod:`dandelion.authoring.annotations`).  Several results are declared with a
    ``NamedTuple`` return annotation, or ``results=("a", "b")`` with ``tuple[A, B]``.

    Args:
        fn: the function (when used as ``@dd.compute`` without parentheses).
        name: the function's name in the IR (default: the Python name).
        results: names of the results (default: one result called ``result``).
        cacheable: whether its outputs may be memoized (it must then be deterministic).
        native: a native implementation of the same function (a ``.elf`` built with
            ``dandelion build``, or a ``.c`` file built on first use; relative paths are
            relative to the function's file).  Engines that run native code (``process``)
            use it; the others run the Python body.  See ``docs/isolation.rst``.
        wasm: a wasm implementation of the same function (a ``.wasm`` built with
            ``dandelion build --target wasm``, or a ``.c`` file built on first use); the
            ``wasm`` engine runs it.  A function may have all three: each engine runs the
            first implementation it can (native, then wasm, then Python).
        batch: instances per sandbox invocation when its instances run in batches
            (default: chosen from the measured cost of a sandbox against the function's
            time; ``1``: one instance per sandbox).  See ``docs/fusion.rst``.
        fuse: whether it may share a sandbox invocation with the functions it is chained
            to 1:1 (default ``True``; ``False``: it always runs in a sandbox of its own).
            See ``docs/fusion.rst``.

    Example:
        >>> import dandelion as dd
        >>> @dd.compute
        ... def double(x: int) -> int:
        ...     return 2 * x
        >>> double(21)        # outside a composition: plain Python
        42
    """
    def wrap(f: Callable[..., Any]) -> ComputeFunction:
        return ComputeFunction(f, name=name, results=results, cacheable=cacheable,
                               native=native, wasm=wasm, batch=batch, fuse=fuse)

    return wrap(fn) if fn is not None else wrap
