"""Shipping Python code to sandboxes and workers: by-value pickles and their preload list.

A Python artifact is pickled *by value* when it comes from the user's own modules, scripts
or an interactive session — with the constants, helpers, classes and closures it reaches —
so a sandbox never imports user code; the installed libraries it refers to (``numpy``,
``colorsys`` …) are listed as its ``requires``, which the sandbox's zygote imports before
any filter is installed (importing inside a sandbox needs system calls it may not make).

>>> from dandelion.runtime.shipping import is_library
>>> is_library("json"), is_library("__main__")
(True, False)
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickletools
import sys
import sysconfig
import threading
import types
from typing import Any

from dandelion.runtime import pickling


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update({sys.prefix, sys.base_prefix, sys.exec_prefix})
    return tuple(os.path.realpath(r) + os.sep for r in roots)


_ROOTS = _library_roots()
_pickle_lock = threading.Lock()


def is_library(module_name: str) -> bool:
    """Whether ``module_name`` is installed (stdlib, site-packages, dandelion) rather than
    the user's own code (a script, a local module, ``__main__``)."""
    top = module_name.partition(".")[0]
    if top in ("dandelion", "builtins") or top in sys.builtin_module_names:
        return True
    if top == "__main__":
        return False
    mod = sys.modules.get(top)
    path = getattr(mod, "__file__", None) if mod is not None else None
    if path is None and mod is None:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return False
        path = spec.origin if spec is not None else None
        if spec is not None and spec.origin in ("built-in", "frozen"):
            return True
    if path is None:
        return mod is not None and not hasattr(mod, "__path__")  # builtin or frozen
    return _installed(path)


@functools.lru_cache(maxsize=8192)
def _installed(path: str) -> bool:
    """Whether the module file ``path`` lies below an installation root.  Remembered: a
    function shipped by value asks about every module loaded, and resolving each path
    takes system calls (a worker with a thousand modules spent ~12 ms per function)."""
    return bool(os.path.realpath(path).startswith(_ROOTS))


def _pickled_modules(data: bytes) -> set[str]:
    """Modules a pickle names globals of (``GLOBAL``/``STACK_GLOBAL``, and the persistent
    ids of :mod:`dandelion.runtime.pickling`)."""
    modules: set[str] = set()
    memo: dict[int, Any] = {}
    recent: list[Any] = [None, None]
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                    "SHORT_BINSTRING", "BINSTRING", "STRING"):
            recent.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(arg, int):
            memo[arg] = recent[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET") and isinstance(arg, int):
            recent.append(memo.get(arg))
        elif name == "STACK_GLOBAL":
            if isinstance(recent[-2], str):
                modules.add(recent[-2])
            recent.append(None)
        elif name == "GLOBAL":
            modules.add(str(arg).partition(" ")[0])
            recent.append(None)
        elif name == "BINPERSID":  # a global named by its persistent id
            module = pickling.module_of(recent[-1])
            if module is not None:
                modules.add(module)
            recent.append(None)
        elif name in ("BININT", "BININT1", "BININT2"):
            recent.append(arg)
        elif name not in ("FRAME", "PROTO", "MARK"):
            recent.append(None)
        del recent[:-2]
    return modules


def serialize_python(artifact: Any, portable: bool = False) -> tuple[bytes, tuple[str, ...]]:
    """A Python artifact as cloudpickle bytes, plus the libraries it needs imported.

    Functions and classes from the user's own modules are pickled by value, so the
    sandbox needs only installed libraries, which its zygote imports before sandboxing.
    ``portable``: for another process or machine (see :func:`.pickling.dumps`).
    """
    import cloudpickle

    user = [m for name, m in list(sys.modules.items())
            if isinstance(m, types.ModuleType) and name != "__main__"
            and getattr(m, "__file__", None) and not is_library(name)]
    with _pickle_lock:
        registered = []
        for m in user:
            try:
                cloudpickle.register_pickle_by_value(m)
                registered.append(m)
            except ValueError:
                pass
        modules: set[str] = set()  # module objects and imports in code shipped by value
        try:
            data = pickling.dumps(artifact, modules, portable)
        finally:
            for m in registered:
                try:
                    cloudpickle.unregister_pickle_by_value(m)
                except ValueError:
                    pass
    names = _pickled_modules(data) | modules
    # submodules as well as packages: a package need not import its submodules (dandelion's
    # own __init__ is lazy), and importing one inside the sandbox is a violation
    wanted = {n.partition(".")[0] for n in names if n} | {n for n in names if n and "." in n}
    requires = sorted(t for t in wanted
                      if t.partition(".")[0] != "__main__" and is_library(t))
    return data, tuple(requires)
