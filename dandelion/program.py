"""A :class:`Program`: IR plus the code artifacts and value views needed to run it."""

from __future__ import annotations

import collections
from typing import Any, Mapping

import attrs

from dandelion import constants
from dandelion.errors import CompositionTypeError, DandelionError, EncodingError, InputError
from dandelion.ir.nodes import (
    Application,
    Argument,
    Composition,
    FunctionKind,
    FunctionSpec,
    Module,
    Output,
    SetDecl,
)
from dandelion.items import Item
from dandelion.runtime.views import View, from_python, to_python

Sets = Mapping[str, tuple[Item[Any], ...]]


def default_entry(module: Module, stem: str | None = None) -> str:
    """The composition to run when none is named: the only one no other composition calls;
    else the one called ``stem`` (a file's name); else the last one.

    >>> from dandelion.ir import Application, Composition, Module
    >>> from dandelion.program import default_entry
    >>> m = Module([], [Composition("outer", applications=[Application("inner")]),
    ...                 Composition("inner")])
    >>> default_entry(m)
    'outer'
    """
    if not module.compositions:
        raise DandelionError("the module has no composition to run")
    called = {a.function for c in module.compositions for a in c.applications}
    roots = [c.name for c in module.compositions if c.name not in called]
    if len(roots) == 1:
        return roots[0]
    if stem is not None and module.composition(stem) is not None:
        return stem
    return module.compositions[-1].name


def call_input(param: str) -> str:
    """The set of a function's call (:func:`call_module`) that carries parameter ``param``."""
    return f"in.{param}"


def call_output(result: str) -> str:
    """The set of a function's call (:func:`call_module`) that carries result ``result``."""
    return f"out.{result}"


def call_module(spec: FunctionSpec) -> Module:
    """The call of one function alone, as a module: its composition ``invoke.NAME`` applies
    the function once per item of each parameter's set, as a composition calling it would.
    Its sets are prefixed (:func:`call_input`, :func:`call_output`), since a parameter and a
    result may share a name.  What a worker runs for ``POST /v1/functions/NAME/invoke`` and
    ``dd.run`` for a ``@dd.compute`` function.

    >>> from dandelion.ir import FunctionSpec, Param
    >>> from dandelion.program import call_module
    >>> comp = call_module(FunctionSpec("double", [Param("x", "int")],
    ...                                 [Param("out", "int")])).compositions[0]
    >>> comp.name, [d.name for d in comp.inputs], [d.name for d in comp.outputs]
    ('invoke.double', ['in.x'], ['out.out'])
    """
    comp = Composition(
        f"invoke.{spec.name}",
        inputs=[SetDecl(call_input(p.name), p.type) for p in spec.params],
        outputs=[SetDecl(call_output(r.name), r.type) for r in spec.results],
        applications=[Application(spec.name, [Argument(p.name, call_input(p.name),
                                                       optional=p.defaulted)
                                              for p in spec.params],
                                  [Output(r.name, call_output(r.name))
                                   for r in spec.results])])
    return Module([spec], [comp])


def _refuse_io(spec: FunctionSpec) -> None:
    if spec.kind is FunctionKind.IO:
        raise CompositionTypeError(
            f"'{spec.name}' is an I/O function; it runs only as a step of a composition",
            hint="call it in the body of a @dd.composition and run that")


def _views(decls: Any) -> tuple[tuple[str, View], ...]:
    return tuple((d.name, View(d.type)) for d in decls)


@attrs.frozen(eq=False)
class Program:
    """Everything a backend needs to run one composition.

    Attributes:
        module: the IR (the entry composition, what it calls, the functions).
        entry: name of the composition to run.
        artifacts: content digest -> code artifact, for every implementation used.
        inputs: name and :class:`View` of each direct input, in declaration order.
        outputs: name and :class:`View` of each direct output.
        result_type: the named tuple class several outputs come back as (default: one
            made from the output names).
        function: for the call of one function (:meth:`calling`), its name: ``inputs``
            and ``outputs`` are then its parameters and results, which the composition's
            sets carry under the names :func:`call_input` and :func:`call_output` give.
        defaults: each input a run may leave out, and the items it then gets, as text
            (:mod:`dandelion.constants`): for the call of one function, its parameters that
            have a default value (``defaulted`` of :class:`~dandelion.ir.Param`), which get
            none (:data:`~dandelion.constants.NONE`: the sandbox then calls the function
            without them, and the default applies); for a composition, its inputs that hold
            a default (``value`` of :class:`~dandelion.ir.SetDecl`).

    >>> import dandelion as dd
    >>> @dd.compute
    ... def scale(x: float, factor: float = 2.0) -> float:
    ...     return x * factor
    >>> scale.program.defaults, dd.run(scale, 3.0, engine="inline")
    ({'factor': '[]'}, 6.0)
    >>> @dd.composition
    ... def scaled(x: float, factor: float = 3.0) -> float:
    ...     return scale(x, factor)
    >>> list(scaled.program.defaults), dd.run(scaled, 3.0, engine="inline")
    (['factor'], 9.0)
    """

    module: Module
    entry: str
    artifacts: Mapping[str, Any] = attrs.field(factory=dict)
    inputs: tuple[tuple[str, View], ...] = ()
    outputs: tuple[tuple[str, View], ...] = ()
    result_type: Any = None
    function: str | None = None
    defaults: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_module(cls, module: Module, entry: str | None = None,
                    artifacts: Mapping[str, Any] | None = None) -> Program:
        """A program for ``entry`` (default: :func:`default_entry`)."""
        comp = cls._entry(module, entry)
        return cls(module, comp.name, dict(artifacts or {}), _views(comp.inputs),
                   _views(comp.outputs), defaults=input_defaults(comp))

    @classmethod
    def calling(cls, spec: FunctionSpec, artifacts: Mapping[str, Any],
                params: tuple[tuple[str, View], ...], results: tuple[tuple[str, View], ...]
                ) -> Program:
        """The call of function ``spec`` alone (:func:`call_module`), run with its own
        parameter names and returning what a composition calling it would: its one result,
        or a named tuple ``NAME_result`` of several (as :meth:`dandelion.Client.invoke`).

        Raises:
            CompositionTypeError: ``spec`` is an I/O function (a worker runs those only as
                a step of a composition).
        """
        _refuse_io(spec)
        result_type = collections.namedtuple(
            f"{spec.name}_result", [n for n, _ in results], rename=True) \
            if len(results) > 1 else None
        module = call_module(spec)
        return cls(module, module.compositions[0].name, dict(artifacts), params, results,
                   result_type, spec.name, function_defaults(spec))

    @property
    def _what(self) -> str:
        """How messages name what this program runs."""
        if self.function is not None:
            return f"function '{self.function}'"
        return f"composition '{self.entry}'"

    @staticmethod
    def _entry(module: Module, entry: str | None) -> Composition:
        if not module.compositions:
            raise DandelionError("the module has no composition to run")
        comp = module.composition(entry if entry is not None else default_entry(module))
        if comp is None:
            names = ", ".join(c.name for c in module.compositions)  # only a named entry
            raise DandelionError(f"no composition called '{entry}' (there is: {names})")
        return comp

    @property
    def composition(self) -> Composition:
        """The entry composition."""
        return self._entry(self.module, self.entry)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
             ) -> dict[str, tuple[Item[Any], ...]]:
        """Turn ``run(program, *args, **kwargs)`` values into input sets.

        Raises:
            InputError: a missing, unknown or doubly given input, or a value of the wrong type.
        """
        names = [n for n, _ in self.inputs]
        if len(args) > len(names):
            raise InputError(f"{self._what} takes {len(names)} input(s) "
                             f"({', '.join(names)}) but {len(args)} were given")
        values: dict[str, Any] = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                from dandelion.ir.verify import did_you_mean

                raise InputError(f"{self._what} has no input '{key}'",
                                 hint=did_you_mean(key, names) or
                                 f"its inputs are: {', '.join(names) or '(none)'}")
            if key in values:
                raise InputError(f"input '{key}' of '{self.function or self.entry}' is given "
                                 "twice")
            values[key] = value
        missing = [n for n in names if n not in values and n not in self.defaults]
        if missing:
            raise InputError(f"{self._what} is missing input(s): {', '.join(missing)}")
        sets: dict[str, tuple[Item[Any], ...]] = {}
        for name, view in self.inputs:
            if name not in values:  # left out: its default
                sets[name] = constants.read(self.defaults[name])
                continue
            try:
                sets[name] = from_python(values[name], view, f"input '{name}'",
                                         returned=False)
            except DandelionError as e:
                # None where an input that may be left out cannot hold it (``limit=None`` for
                # ``limit: int | None = None``) stands for leaving it out, as in Python
                if values[name] is None and name in self.defaults:
                    sets[name] = constants.read(self.defaults[name])
                    continue
                if isinstance(e, EncodingError):
                    raise  # a value no engine can take: the same error on every engine
                raise InputError(e.message, hint=e.hint) from None
        if self.function is not None:
            return {call_input(n): s for n, s in sets.items()}
        return sets

    def unbind(self, sets: Sets) -> Any:
        """The Python result of a run: one value, or a named tuple for several outputs."""
        keys = call_output if self.function is not None else str
        values = [to_python(sets.get(keys(name), ()), view, f"output '{name}'")
                  for name, view in self.outputs]
        if len(values) == 1:
            return values[0]
        if not values:
            return None
        result_type = self.result_type or collections.namedtuple(
            f"{self.entry}_result", [n for n, _ in self.outputs], rename=True)
        return result_type(*values)


def function_defaults(spec: FunctionSpec) -> dict[str, str]:
    """The parameters of ``spec`` that have a default value, each with no items
    (:data:`~dandelion.constants.NONE`): what a run of the function alone that leaves them
    out gives them (:attr:`Program.defaults`)."""
    return {p.name: constants.NONE for p in spec.params if p.defaulted}


def input_defaults(comp: Composition) -> dict[str, str]:
    """The inputs of ``comp`` that hold a default, and its items as text (what a run that
    leaves them out gets: :attr:`Program.defaults`)."""
    return {d.name: d.value for d in comp.inputs if d.value is not None}


def as_program(target: Any) -> Program:
    """A :class:`Program` for a program, an IR module, a composition function or a compute
    function (anything whose ``program`` attribute is a :class:`Program`, as
    ``@dd.composition`` and ``@dd.compute`` make: a compute function runs as its call alone,
    :meth:`Program.calling`).

    >>> from dandelion.ir import Composition, Module
    >>> from dandelion.program import as_program
    >>> as_program(Module([], [Composition("c")])).entry
    'c'

    Raises:
        CompositionTypeError: ``target`` is not something that runs as a composition, or
            is an I/O function (which runs only as a step of one).
    """
    if isinstance(target, Program):
        return target
    if isinstance(target, Module):
        return Program.from_module(target)
    program = getattr(target, "program", None)
    if isinstance(program, Program):
        return program
    spec = getattr(target, "spec", None)
    if isinstance(spec, FunctionSpec):
        _refuse_io(spec)  # a platform I/O function (a compute function has a program)
    raise CompositionTypeError(f"cannot run {type(target).__name__}: expected a "
                               "@dd.composition, a @dd.compute function, a Program or an IR "
                               "Module")
