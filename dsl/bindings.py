"""Binding the names a DSL file uses to code: Python objects, native and wasm artifacts.

A name can be bound, in order of precedence, by the ``functions=`` argument of
:func:`dandelion.dsl.load`, by a ``from python|native|wasm "…" import`` line in the file, or
by the platform's I/O library (:func:`dandelion.io.platform_functions`), which is always in
scope.  Each becomes a :class:`Bound`: the function's :class:`~dandelion.ir.FunctionSpec`
(or, for a Python ``@dd.composition``, its IR module) plus the artifacts that run it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import types
from typing import Any, Mapping

import attrs

from dandelion.dsl import ast
from dandelion.dsl.diagnostics import Report, did_you_mean
from dandelion.ir.nodes import FunctionSpec, Implementation, Module


@attrs.frozen(eq=False)
class NativeArtifact:
    """A compiled artifact named by a binding: an ELF executable or a wasm module.

    Attributes:
        kind: ``native`` or ``wasm`` (an :class:`~dandelion.ir.Implementation` kind).
        path: absolute path of the file.
        digest: ``sha256:`` of its content.
    """

    kind: str
    path: str
    digest: str
    entry: str = ""


@attrs.frozen(eq=False)
class Bound:
    """What a name is bound to.

    Attributes:
        name: the name the DSL file uses.
        spec: the function's declaration, renamed to ``name``.
        artifacts: digest -> artifact for its implementations.
        module: for a Python composition, its IR (the composition and what it calls).
        natives: ``native``/``wasm`` artifacts bound to a name that has no Python
            implementation (the signature comes from the file's declaration of the function).
    """

    name: str
    spec: FunctionSpec | None
    artifacts: Mapping[str, Any] = attrs.field(factory=dict)
    module: Module | None = None
    natives: tuple[NativeArtifact, ...] = ()


def combine(first: Bound, second: Bound) -> Bound:
    """Two bindings of one name (e.g. Python and native): one function, several
    implementations.  A Python implementation's spec takes the native ones in."""
    artifacts = {**first.artifacts, **second.artifacts}
    spec = first.spec or second.spec
    natives = first.natives + second.natives
    if spec is not None:
        for artifact in natives:
            spec = native_spec(spec, artifact, artifact.entry)
        natives = ()
    return Bound(first.name, spec, artifacts, first.module or second.module, natives)


def platform_functions() -> dict[str, Any]:
    """The platform I/O library, if :mod:`dandelion.io` is installed; ``{}`` otherwise."""
    try:
        from dandelion import io

        found = io.platform_functions()
    except (ImportError, AttributeError):
        return {}
    return dict(found)


def bind_object(name: str, obj: Any) -> Bound:
    """A :class:`Bound` for a Python object: ``@dd.compute``, ``@dd.composition``, an
    object with ``.spec`` and ``.artifacts`` (an I/O function) or a plain function.

    Raises:
        TypeError: ``obj`` is none of these.
    """
    if hasattr(obj, "module") and hasattr(obj, "composition") and hasattr(obj, "program"):
        return Bound(name, None, dict(obj.artifacts), module=obj.module)
    spec = getattr(obj, "spec", None)
    if not isinstance(spec, FunctionSpec):
        if callable(obj) and not isinstance(obj, type):
            from dandelion.authoring.compute import ComputeFunction

            obj = ComputeFunction(obj, name=name)
            spec = obj.spec
        else:
            raise TypeError(f"'{name}' is bound to {type(obj).__name__}, which is not a "
                            "function (expected @dd.compute, @dd.composition or a callable)")
    artifacts = getattr(obj, "artifacts", None)
    if artifacts is None:
        artifact = getattr(obj, "artifact", None)
        artifacts = {i.digest: artifact for i in spec.implementations} if artifact else {}
    if spec.name != name:
        spec = attrs.evolve(spec, name=name)
    return Bound(name, spec, dict(artifacts))


def objects_of(functions: Mapping[str, Any] | types.ModuleType | None) -> dict[str, Any]:
    """Name -> object from a mapping, or from a module's Dandelion functions."""
    if functions is None:
        return {}
    if isinstance(functions, types.ModuleType):
        return {n: o for n, o in vars(functions).items()
                if not n.startswith("_") and isinstance(getattr(o, "spec", None), FunctionSpec)}
    return dict(functions)


def import_python_file(path: str) -> types.ModuleType:
    """Import a Python file by path (see :func:`dandelion.loading.import_file`)."""
    from dandelion.loading import import_file

    return import_file(path)


def _import_python(binding: ast.Binding, base_dir: str) -> types.ModuleType:
    where = binding.module
    if binding.quoted and (where.endswith(".py") or "/" in where or os.sep in where):
        return import_python_file(os.path.join(base_dir, where))
    added = base_dir not in sys.path
    if added:
        sys.path.insert(0, base_dir)
    try:
        return importlib.import_module(where)
    finally:
        if added and base_dir in sys.path:
            sys.path.remove(base_dir)


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def resolve_binding(binding: ast.Binding, base_dir: str, report: Report,
                    skip: frozenset[str] = frozenset()) -> dict[str, Bound]:
    """Import what one ``from … import`` line names; problems go to ``report``."""
    wanted = [n for n in binding.names if n.alias not in skip]
    if not wanted:
        return {}
    found: dict[str, Bound] = {}
    if binding.kind in ("native", "wasm"):
        path = os.path.normpath(os.path.join(base_dir, binding.module))
        if not os.path.isfile(path):
            report.error("unbound-function", f"{binding.kind} artifact '{binding.module}' "
                         "does not exist", binding.span, f"looked for {path}")
            return {}
        artifact = NativeArtifact(binding.kind, path, _digest(path), binding.module)
        for n in wanted:
            found[n.alias] = Bound(n.alias, None, {artifact.digest: artifact},
                                   natives=(artifact,))
        return found
    try:
        module = _import_python(binding, base_dir)
    except Exception as e:  # the user's module failed to import: say which and why
        report.error("import-failed", f"cannot import python module '{binding.module}': "
                     f"{type(e).__name__}: {e}", binding.span)
        return {}
    for n in wanted:
        if not hasattr(module, n.name):
            names = [k for k, v in vars(module).items() if callable(v)]
            report.error("unknown-import", f"python module '{binding.module}' has no "
                         f"function '{n.name}'", n.span, did_you_mean(n.name, names))
            continue
        try:
            found[n.alias] = bind_object(n.alias, getattr(module, n.name))
        except Exception as e:  # e.g. a FunctionTypeError from an unsupported annotation
            report.error("bad-binding", f"cannot bind '{n.alias}': {e}", n.span)
    return found


def native_spec(declared: FunctionSpec, artifact: NativeArtifact, entry: str) -> FunctionSpec:
    """A declared function with the implementation a native/wasm binding gives it."""
    impl = Implementation(artifact.kind, artifact.digest, entry)
    return attrs.evolve(declared, implementations=(*declared.implementations, impl))
