"""A :class:`Program`: IR plus the code artifacts and value views needed to run it."""

from __future__ import annotations

import collections
from typing import Any, Mapping

import attrs

from dandelion.errors import CompositionTypeError, DandelionError, EncodingError, InputError
from dandelion.ir.nodes import Composition, Module
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
    """

    module: Module
    entry: str
    artifacts: Mapping[str, Any] = attrs.field(factory=dict)
    inputs: tuple[tuple[str, View], ...] = ()
    outputs: tuple[tuple[str, View], ...] = ()
    result_type: Any = None

    @classmethod
    def from_module(cls, module: Module, entry: str | None = None,
                    artifacts: Mapping[str, Any] | None = None) -> Program:
        """A program for ``entry`` (default: :func:`default_entry`)."""
        comp = cls._entry(module, entry)
        return cls(module, comp.name, dict(artifacts or {}), _views(comp.inputs),
                   _views(comp.outputs))

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
            raise InputError(f"composition '{self.entry}' takes {len(names)} input(s) "
                             f"({', '.join(names)}) but {len(args)} were given")
        values: dict[str, Any] = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                from dandelion.ir.verify import did_you_mean

                raise InputError(f"composition '{self.entry}' has no input '{key}'",
                                 hint=did_you_mean(key, names) or
                                 f"its inputs are: {', '.join(names) or '(none)'}")
            if key in values:
                raise InputError(f"input '{key}' of '{self.entry}' is given twice")
            values[key] = value
        missing = [n for n in names if n not in values]
        if missing:
            raise InputError(f"composition '{self.entry}' is missing input(s): "
                             f"{', '.join(missing)}")
        sets = {}
        for name, view in self.inputs:
            try:
                sets[name] = from_python(values[name], view, f"input '{name}'")
            except EncodingError:
                raise  # a value no engine can take: the same error on every engine
            except DandelionError as e:
                raise InputError(e.message, hint=e.hint) from None
        return sets

    def unbind(self, sets: Sets) -> Any:
        """The Python result of a run: one value, or a named tuple for several outputs."""
        values = [to_python(sets.get(name, ()), view, f"output '{name}'")
                  for name, view in self.outputs]
        if len(values) == 1:
            return values[0]
        if not values:
            return None
        result_type = self.result_type or collections.namedtuple(
            f"{self.entry}_result", [n for n, _ in self.outputs], rename=True)
        return result_type(*values)


def as_program(target: Any) -> Program:
    """A :class:`Program` for a program, an IR module or a composition function (anything
    whose ``program`` attribute is a :class:`Program`, as ``@dd.composition`` makes).

    >>> from dandelion.ir import Composition, Module
    >>> from dandelion.program import as_program
    >>> as_program(Module([], [Composition("c")])).entry
    'c'

    Raises:
        CompositionTypeError: ``target`` is not something that runs as a composition.
    """
    if isinstance(target, Program):
        return target
    if isinstance(target, Module):
        return Program.from_module(target)
    program = getattr(target, "program", None)
    if isinstance(program, Program):
        return program
    from dandelion.authoring.compute import ComputeFunction

    if isinstance(target, ComputeFunction):
        raise CompositionTypeError(f"'{target.name}' is a compute function; run it by calling "
                                   "it, or wrap it in a @dd.composition")
    raise CompositionTypeError(f"cannot run {type(target).__name__}: expected a "
                               "@dd.composition, a Program or an IR Module")
