"""Loading DSL files: text -> checked IR -> a runnable :class:`~dandelion.program.Program`."""

from __future__ import annotations

import contextlib
import gc
import os
import types
from typing import Any, Iterator, Mapping

import attrs

from dandelion.dsl import ast
from dandelion.dsl.bindings import (
    Bound,
    bind_object,
    combine,
    objects_of,
    platform_functions,
    resolve_binding,
)
from dandelion.dsl.diagnostics import Report, Source
from dandelion.dsl.lower import Lowering, used_in_order
from dandelion.dsl.parser import parse_ast
from dandelion.errors import DandelionError
from dandelion.ir.nodes import Module
from dandelion.ir.verify import Diagnostic, verify
from dandelion.program import Program, default_entry

Functions = Mapping[str, Any] | types.ModuleType | None

#: File suffix -> notation.
NOTATIONS = {".dd": "dd", ".dcl": "dcl"}


def notation_of(filename: str, notation: str | None = None) -> str:
    """``dd`` or ``dcl``: the given notation, else the file's suffix, else ``dd``."""
    if notation is not None:
        if notation not in ("dd", "dcl"):
            raise ValueError(f"unknown notation {notation!r} (expected 'dd' or 'dcl')")
        return notation
    return NOTATIONS.get(os.path.splitext(filename)[1], "dd")


def default_composition_name(filename: str) -> str:
    """The name of a ``.dd`` composition written without a header: the file's stem."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    return stem if stem.isidentifier() and not filename.startswith("<") else "main"


@attrs.frozen(eq=False)
class Loaded:
    """Everything one file yields: the syntax tree, the IR, artifacts and diagnostics."""

    tree: ast.FileAst | None
    module: Module
    artifacts: Mapping[str, Any]
    diagnostics: tuple[Diagnostic, ...]
    source: Source
    loop_names: Mapping[tuple[str, int, int], Mapping[str, str]] = attrs.field(factory=dict)


def _bindings(tree: ast.FileAst, functions: Functions, base_dir: str, report: Report,
              strict: bool) -> dict[str, Bound]:
    given = objects_of(functions)
    bound: dict[str, Bound] = {}
    for name, obj in given.items():
        try:
            bound[name] = bind_object(name, obj)
        except (TypeError, DandelionError) as e:
            report.error("bad-binding", f"cannot bind '{name}': {e}", report_span(report))
    if strict:
        given_names = frozenset(bound)
        for binding in tree.bindings:
            for name, new in resolve_binding(binding, base_dir, report, given_names).items():
                bound[name] = combine(bound[name], new) if name in bound else new
    for name, obj in platform_functions().items():
        if name not in bound:
            try:
                bound[name] = bind_object(name, obj)
            except (TypeError, DandelionError):
                continue  # a broken platform entry must not break every file
    return bound


def report_span(report: Report) -> Any:
    from dandelion.ir.nodes import Span

    return Span(report.source.filename)


def compile_text(text: str | bytes, filename: str = "<string>", *, functions: Functions = None,
                 notation: str | None = None, strict: bool = False,
                 raise_errors: bool = True, allow_unbound: bool = False) -> Loaded:
    """Parse, bind, lower and verify ``text``.

    Args:
        text: the source (bytes are decoded as UTF-8).
        filename: shown in messages; its suffix picks the notation; its directory is where
            relative bindings are looked up.
        functions: names bound by the caller (a mapping or a module).
        notation: ``dd`` or ``dcl``, overriding the suffix.
        strict: require every called function to have an implementation and import the
            file's bindings (what running needs).
        raise_errors: raise on errors (else they are in ``diagnostics``).
        allow_unbound: with ``strict``, a declared function without an implementation is a
            warning, not an error (for checking a file whose functions are registered
            apart from it).

    Raises:
        DslSyntaxError: the text cannot be read.
        CompositionError: it reads but does not make a valid composition.
    """
    with _paused_gc():
        return _compile(text, filename, functions, notation, strict, raise_errors,
                        allow_unbound=allow_unbound)


@contextlib.contextmanager
def _paused_gc() -> Iterator[None]:
    # Parsing allocates hundreds of thousands of small acyclic objects; the cyclic collector
    # would traverse the growing heap again and again (a third of the time on big files).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_structure(text: str | bytes, filename: str = "<string>",
                   notation: str | None = None) -> Loaded:
    """``text`` as written, for a tool that needs only its syntax and structure (the
    formatter): nothing is bound (neither the file's bindings nor the platform library) and
    the IR's checks do not run, so a file whose sets, types or bindings are wrong still reads.

    Its ``diagnostics`` hold what lowering found (e.g. a call with an argument its function
    does not take); only syntax errors raise.

    Example:
        >>> from dandelion.dsl.api import read_structure
        >>> loaded = read_structure("input set xs\\noutput set ys\\nys = f(zs)\\n", "u.dd")
        >>> [a.arguments[0].source for a in loaded.module.compositions[0].applications]
        ['zs']

    Raises:
        DslSyntaxError: the text cannot be read.
    """
    with _paused_gc():
        return _compile(text, filename, None, notation, False, False, structure_only=True)


def _compile(text: str | bytes, filename: str, functions: Functions, notation: str | None,
             strict: bool, raise_errors: bool, structure_only: bool = False,
             allow_unbound: bool = False) -> Loaded:
    kind = notation_of(filename, notation)
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    source = Source(text, filename)
    report = Report(source)
    tree = parse_ast(text, filename, kind, report)
    module = Module()
    artifacts: dict[str, Any] = {}
    loop_names: dict[tuple[str, int, int], dict[str, str]] = {}
    if tree is not None and not report.has_syntax_errors():
        base = os.path.dirname(os.path.abspath(filename)) if not filename.startswith("<") \
            else os.getcwd()
        bound = {} if structure_only else _bindings(tree, functions, base, report, strict)
        lowering = Lowering(tree, report, bound, strict=strict,
                            default_name=default_composition_name(filename),
                            allow_unbound=allow_unbound)
        module = lowering.run()
        artifacts = lowering.artifacts
        loop_names = lowering.loop_names
        if not structure_only:
            report.extend(verify(module))
    if structure_only and report.has_syntax_errors():
        report.raise_errors()
    if raise_errors:
        report.raise_errors()
    return Loaded(tree, module, artifacts, tuple(report.found), source, loop_names)


def parse(text: str | bytes, filename: str = "<string>", notation: str | None = None) -> Module:
    """The IR of a DSL text, without binding implementations.

    Functions the file does not declare get a declaration inferred from their call
    (parameters ``arg0``, ``arg1``…, result ``result``), unless the platform library has
    them.

    Example:
        >>> from dandelion.dsl import parse
        >>> m = parse("input set xs\\noutput set ys\\nys = for each x in xs : f(x)\\n")
        >>> [a.function for a in m.compositions[0].applications]
        ['f']
    """
    return compile_text(text, filename, notation=notation).module


def entry_of(module: Module, entry: str | None, filename: str) -> str:
    """The composition of a file to run: ``entry``, else :func:`default_entry`.

    Raises:
        DandelionError: no composition called ``entry``, or none at all.
    """
    if entry is not None:
        if module.composition(entry) is None:
            names = ", ".join(c.name for c in module.compositions) or "none"
            raise DandelionError(f"no composition called '{entry}' (there is: {names})")
        return entry
    if not module.compositions:
        raise DandelionError("the file defines no composition")
    return default_entry(module, default_composition_name(filename))


def loads(text: str | bytes, filename: str = "<string>", functions: Functions = None,
          entry: str | None = None, notation: str | None = None) -> Program:
    """A runnable program from DSL text.

    Args:
        text: the source.
        filename: shown in messages; relative bindings are resolved from its directory.
        functions: a mapping name -> ``@dd.compute`` object (or a module of them) binding
            the names the file uses, in addition to its own ``from … import`` lines and the
            platform I/O library.
        entry: the composition to run (default: the one no other composition calls; if
            there are several, the one named like the file, else the last one).
        notation: ``dd`` or ``dcl`` (default: from the suffix, else ``dd``).

    Raises:
        DslSyntaxError: the text cannot be read.
        CompositionError: unknown names, unbound functions, type errors… (all of them).
    """
    loaded = compile_text(text, filename, functions=functions, notation=notation, strict=True)
    name = entry_of(loaded.module, entry, filename)
    module = used_in_order(loaded.module, name)
    used = {i.digest for f in module.functions for i in f.implementations}
    artifacts = {d: a for d, a in loaded.artifacts.items() if d in used}
    return Program.from_module(module, name, artifacts)


def load(path: str | os.PathLike[str], functions: Functions = None,
         entry: str | None = None) -> Program:
    """A runnable program from a ``.dd`` or ``.dcl`` file (see :func:`loads`).

    A ``.dcl`` file has no syntax for bindings: when ``functions`` is not given and a Python
    file of the same name lies next to it (``fetch.py`` for ``fetch.dcl``), its Dandelion
    functions are bound.
    """
    path = os.fspath(path)
    data, functions = _read(path, functions)
    return loads(data, path, functions=functions, entry=entry)


def check(path: str | os.PathLike[str], functions: Functions = None) -> Loaded:
    """Every problem of a ``.dd`` or ``.dcl`` file, as ``dandelion check`` reports them.

    Bindings are resolved as by :func:`load`, but a declared function that is bound to no
    implementation is a warning, not an error: as in the reference system, functions may be
    registered apart from the compositions that call them.  Nothing raises: the errors
    (syntax errors included) and warnings are in ``diagnostics``.
    """
    path = os.fspath(path)
    data, functions = _read(path, functions)
    return compile_text(data, path, functions=functions, strict=True, raise_errors=False,
                        allow_unbound=True)


def _read(path: str, functions: Functions) -> tuple[bytes, Functions]:
    """A DSL file's bytes, and the functions to bind (a ``.dcl`` file's companion ``.py``)."""
    with open(path, "rb") as f:
        data = f.read()
    companion = os.path.splitext(path)[0] + ".py"
    if functions is None and notation_of(path) == "dcl" and os.path.isfile(companion):
        from dandelion.dsl.bindings import import_python_file

        functions = import_python_file(companion)
    return data, functions
