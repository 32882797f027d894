"""How Python artifacts are pickled for sandboxes: cloudpickle, with code objects as
:mod:`marshal` data and the globals most functions name as small persistent ids.

A sandbox unpickles the function of every invocation it serves, with cold caches.  There,
rebuilding a code object through ``CodeType(...)`` from Python takes a quarter of the time
a small function takes to unpickle, and each global a pickle names costs a lookup through
the import system; :mod:`marshal` rebuilds code in C, and a global named by a persistent id
is one dictionary lookup in a table the zygote builds before it forks any sandbox
(:func:`warm`).  Persistent ids (rather than :mod:`copyreg` extension codes) keep this out
of every other pickle the process makes.

>>> loads(dumps([int, str])) == [int, str]
True
"""

from __future__ import annotations

import copyreg
import dis
import functools
import io
import marshal
import pickle
import sys
import types
from typing import Any

#: The globals named by most function pickles; a persistent id is an index into this.
KNOWN = (
    ("dandelion.runtime.python_function", "_python_function"),
    ("cloudpickle.cloudpickle", "_make_function"),
    ("cloudpickle.cloudpickle", "_function_setstate"),
    ("cloudpickle.cloudpickle", "_make_empty_cell"),
    ("cloudpickle.cloudpickle", "_make_cell"),
    ("cloudpickle.cloudpickle", "subimport"),
    ("marshal", "loads"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bool"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("dandelion.items", "Item"),
    ("numpy", "ndarray"),
)


class _Table(dict):  # type: ignore[type-arg]
    """Persistent id -> object, for the modules this process has loaded."""

    def __missing__(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"the pickle names runtime global {pid!r}, which this "
                                     "process has not loaded")


_table = _Table()
_ids: dict[int, int] = {}  # id(object) -> persistent id


def warm() -> None:
    """Resolve :data:`KNOWN` in the modules already imported (in a zygote: once, for every
    sandbox it forks)."""
    for pid, (module, name) in enumerate(KNOWN):
        owner = sys.modules.get(module)
        if owner is not None and hasattr(owner, name) and pid not in _table:
            obj = getattr(owner, name)
            _table[pid] = obj
            _ids[id(obj)] = pid


def module_of(pid: int) -> str | None:
    """The module of persistent id ``pid`` (``None`` if there is none)."""
    return KNOWN[pid][0] if isinstance(pid, int) and 0 <= pid < len(KNOWN) else None


_picklers: Any = None


def _code_picklers() -> tuple[Any, Any]:
    import cloudpickle

    class PortablePickler(cloudpickle.Pickler):  # type: ignore[misc]
        """cloudpickle, with code objects as :mod:`marshal` data (sandboxes run the
        worker's own Python, and pickled code objects are specific to a Python version
        either way), recording the modules the pickle needs."""

        #: modules the pickle refers to: module objects it holds (``import numpy as
        #: np`` at module level: cloudpickle writes ``subimport('numpy')``) and the
        #: imports inside the code objects it carries by value
        modules: set[str]

        def reducer_override(self, obj: Any) -> Any:
            kind = type(obj)
            if kind is types.CodeType:
                self.modules.update(code_imports(obj))
                try:
                    return marshal.loads, (marshal.dumps(obj),)
                except ValueError:  # pragma: no cover - a const marshal cannot write
                    pass
            elif kind is types.ModuleType:
                self.modules.add(obj.__name__)
            return super().reducer_override(obj)

    class CodePickler(PortablePickler):
        """And :data:`KNOWN` globals as persistent ids, which only a process of the same
        Dandelion version resolves."""

        def persistent_id(self, obj: Any) -> int | None:
            pid = _ids.get(id(obj))
            return pid if pid is not None and _table.get(pid) is obj else None

    return CodePickler, PortablePickler


def cached_property(func: Any, attrname: str | None) -> functools.cached_property[Any]:
    """A :func:`functools.cached_property` of ``func`` as a class named it (its class is
    rebuilt attribute by attribute when unpickled, which does not name it again).  Every
    pickler of this process makes one so (:mod:`copyreg`: cloudpickle's, Ray's): Python
    3.11's holds an ``RLock``, which no pickle can carry, and a class using one could not be
    shipped to a sandbox or a Ray worker.

    >>> class Lazy:
    ...     @functools.cached_property
    ...     def size(self):
    ...         return 3
    >>> copy = loads(dumps(Lazy))
    >>> copy().size, copy.__dict__["size"].attrname
    (3, 'size')
    """
    made: functools.cached_property[Any] = functools.cached_property(func)
    made.attrname = attrname
    return made


copyreg.pickle(functools.cached_property,
               lambda prop: (cached_property, (prop.func, prop.attrname)))


def dumps(obj: Any, modules: set[str] | None = None, portable: bool = False) -> bytes:
    """``obj`` pickled (protocol 5) as sandboxes read it best.

    Args:
        obj: what to pickle.
        modules: if given, the names of the modules the pickle holds (as module objects)
            and of those its code objects import are added to it.
        portable: without persistent ids, for another process (``pickle.loads`` reads
            it where the same Python and libraries are installed).

    >>> import json
    >>> seen: set[str] = set()
    >>> _ = dumps({"codec": json}, seen)
    >>> sorted(seen)
    ['json']
    """
    global _picklers
    if _picklers is None:
        _picklers = _code_picklers()
    warm()  # modules imported since the last call
    buf = io.BytesIO()
    pickler = _picklers[1 if portable else 0](buf, protocol=5)
    pickler.modules = modules if modules is not None else set()
    pickler.dump(obj)
    return buf.getvalue()


def code_imports(code: types.CodeType) -> set[str]:
    """The absolute imports in ``code`` and the code nested in it (functions, classes,
    comprehensions defined inside).

    >>> def f():
    ...     import os.path
    ...     from json import dumps
    ...     return [__import__ for _ in ()]
    >>> sorted(code_imports(f.__code__))
    ['json', 'os.path']
    """
    names = set()
    recent: list[Any] = [None, None]  # the arguments of the last two instructions
    for ins in dis.get_instructions(code):
        if ins.opname == "IMPORT_NAME" and not recent[0]:  # (level, fromlist, IMPORT_NAME);
            names.add(str(ins.argval))  # relative imports are the user's own modules
        recent = [recent[1], ins.argval if ins.opname == "LOAD_CONST" else None]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_imports(const)
    return names


def loads(data: bytes) -> Any:
    """What :func:`dumps` pickled."""
    if not _table:  # (a zygote has warmed it before forking)
        warm()
    return _Unpickler(io.BytesIO(data)).load()


class _Unpickler(pickle.Unpickler):
    """Each global named by its id: a dictionary lookup, in C (a class attribute: from
    Python 3.13 an unpickler's ``persistent_load`` cannot be set on the instance)."""

    persistent_load = _table.__getitem__
