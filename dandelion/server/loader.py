"""Loading registered Python code: source text or a by-value pickle in, compute functions
out.

Registered source is written to the artifact store (content-addressed) and executed as a
fresh module, compiled under the file name the client gave (tracebacks show it and its
lines, never the store's path: :func:`dandelion.runtime.tracebacks.source_name`), that is in
``sys.modules`` only while its body runs (as an import would have it: ``@dataclass`` and
``typing`` look their module up there): the same text always gives the same module name and
code digests, so a function loaded again after its cache entry was evicted (a *cold* start)
is the function the composition was checked against.

A pickle (what :meth:`dandelion.Client.register` sends) holds one function's declaration and
its code by value, with the globals, helpers and closures it reaches; its implementation
is named by the pickle's content digest, so a changed constant is a new version too.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import sys
import types
from typing import Any

import attrs

from dandelion.authoring.compute import ComputeFunction
from dandelion.errors import DandelionError, InputError
from dandelion.ir.nodes import FunctionKind, FunctionSpec, Implementation, Span
from dandelion.runtime.python_function import PythonFunction


class RegistrationError(InputError):
    """Registered code cannot be loaded (a 400 answer that names the problem)."""


def source_digest(source: str, file: str | None = None) -> str:
    """The content digest of a source text (registered as ``file``: the name is part of
    what is registered, as tracebacks show it)."""
    named = source if file is None else f"{file}\0{source}"
    return hashlib.sha256(named.encode("utf-8", "surrogatepass")).hexdigest()


def exec_source(source: str, file: str | None = None) -> dict[str, ComputeFunction]:
    """Run ``source`` (the client's file ``file``) as a module; its compute functions by name.

    Raises:
        RegistrationError: the source does not compile or raises, or defines no
            ``@dd.compute`` function.
    """
    from dandelion.runtime.tracebacks import remember_source, source_name

    # the module's name, and so its functions' code digests, come from the text alone
    name = f"dandelion_registered_{source_digest(source)[:16]}"
    compiled_as = source_name(file or "<registered source>", source_digest(source, file))
    remember_source(compiled_as, source)  # before it runs: @dd.compute reads its source
    module = types.ModuleType(name)
    module.__file__ = compiled_as
    where = f"{file}: " if file else ""
    try:
        code = compile(source, compiled_as, "exec")
    except SyntaxError as e:
        raise RegistrationError(f"{where}line {e.lineno}: {e.msg}",
                                hint="the source must be a valid Python module") from None
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except DandelionError as e:
        raise RegistrationError(f"loading the source failed: {e.message}", hint=e.hint) from None
    except (Exception, SystemExit) as e:  # user code: SystemExit must not stop the worker
        raise RegistrationError(f"loading the source raised {type(e).__name__}: {e}",
                                hint="the module body runs once on the server at "
                                     "registration; keep it to imports and definitions"
                                ) from None
    finally:
        sys.modules.pop(name, None)
    found = {v.name: v for v in vars(module).values() if isinstance(v, ComputeFunction)
             and getattr(v.fn, "__module__", None) == name}
    if not found:
        raise RegistrationError("the source defines no @dd.compute function",
                                hint="decorate the functions to register with @dd.compute")
    return found


@attrs.frozen
class ShippedFunction:
    """A compute function registered by value: its declaration and its code."""

    name: str
    spec: FunctionSpec
    artifact: PythonFunction


def load_pickle(data: bytes, names: list[str] | None = None
                ) -> dict[str, ShippedFunction]:
    """Load the function a client shipped by value: a pickle of ``(spec, artifact)``.

    Args:
        data: the pickle.
        names: the name the client gave it (``[name]``), for errors and as a check.

    Raises:
        RegistrationError: it cannot be loaded on this worker (a library the worker does
            not have, another Python version …) or is not that compute function.
    """
    name = f"'{names[0]}'" if names and len(names) == 1 else "the shipped function"
    try:
        shipped = pickle.loads(data)
    except Exception as e:  # whatever the code it carries raises while loading
        version = ".".join(map(str, sys.version_info[:2]))
        raise RegistrationError(
            f"the code of {name} cannot be loaded on this worker: {type(e).__name__}: {e}",
            hint="install the libraries it imports on the worker, and run the client on "
                 f"the worker's Python ({version})") from None
    if not (isinstance(shipped, tuple) and len(shipped) == 2 and
            isinstance(shipped[0], FunctionSpec) and isinstance(shipped[1], PythonFunction)
            and shipped[0].kind is FunctionKind.COMPUTE
            and shipped[0].name == shipped[1].name
            and (not names or names == [shipped[0].name])):
        raise RegistrationError(f"the pickle of {name} is not a compute function",
                                hint="register functions with dandelion.Client.register")
    spec, artifact = shipped
    entry = next((i.entry for i in spec.implementations if i.kind == "python"), spec.name)
    spec = attrs.evolve(spec, implementations=[
        Implementation("python", "sha256:" + hashlib.sha256(data).hexdigest(), entry)],
        span=Span())
    return {spec.name: ShippedFunction(spec.name, spec, artifact)}


def module_source(module_name: str) -> str:
    """The source text of an installed module (``package.module``).

    Raises:
        RegistrationError: the module cannot be imported or has no source.
    """
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise RegistrationError(f"cannot import module '{module_name}': "
                                f"{type(e).__name__}: {e}") from None
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py") or not os.path.exists(path):
        raise RegistrationError(f"module '{module_name}' has no Python source file")
    with open(path, encoding="utf-8") as f:
        return f.read()


def function_named(functions: dict[str, Any], name: str) -> Any:
    """The artifact of function ``name`` among ``functions``.

    Raises:
        RegistrationError: there is none.
    """
    fn = functions.get(name)
    if fn is None:
        raise RegistrationError(f"the registered source no longer defines '{name}'")
    return fn.artifact
