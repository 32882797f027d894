"""The identity of a Python function: everything its outputs depend on besides its inputs.

A digest over, by value and recursively: its code object (bytecode, constants, names — not
file names or line numbers), defaults and closure cells; every global it names (helper
functions and their own globals, classes and their methods and attributes, module-level
constants, the attributes it reaches through user modules); and, for what comes from an
installed distribution, the distribution's name and version (its code is not walked).  The
standard library is named only (the key adds the interpreter's major.minor), and so is
Dandelion itself (by its version).

The walk runs once per function: the result is memoized with the bindings it read (a
global's value, a cell's contents, a function's ``__code__``) and the digests of the mutable
values it met (lists, dicts, arrays, objects), and reused only while all of them still hold,
so redefining a helper in a notebook or appending to a module-level list is seen.

>>> def helper(x):
...     return x + 1
>>> def f(x):
...     return helper(x) * 2
>>> before = python_identity(f)
>>> def helper(x):
...     return x + 2
>>> python_identity(f) == before
False

A value that cannot be hashed by value (a lock, an open file) makes the function
uncacheable, and the error says which global it was.
"""

from __future__ import annotations

import abc
import builtins
import copyreg
import functools
import importlib
import importlib.machinery
import importlib.util
import json
import os
import struct
import sys
import threading
import types
import weakref
from importlib import metadata
from typing import Any, Callable

from dandelion.cache import hashing
from dandelion.cache.content import Uncacheable
from dandelion.cache.watch import sighting_for
from dandelion.codec import ndarray_class

_MISSING = object()

#: Mutable values are re-hashed on each use of a memoized identity; beyond this many
#: objects a walk gives up (a global that reaches a whole program is not a constant).
MAX_OBJECTS = 100_000

_ATOMS = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis),
          type(NotImplemented))
_MUTABLE_CONTAINERS = (list, dict, set, bytearray)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


@functools.cache
def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover - a broken installation
        return "?"


@functools.cache
def _editable(distribution: str) -> bool:
    """Whether a distribution is installed in editable mode (its code is user code)."""
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json") or "{}"
        return bool(json.loads(text).get("dir_info", {}).get("editable", False))
    except (metadata.PackageNotFoundError, ValueError, AttributeError):
        return False


def _installed(top: str, distributions: list[str]) -> bool:
    """Whether module ``top`` is the one ``distributions`` installed, not the user's own of
    the same name (a local ``utils.py`` where an installed distribution also has a top-level
    ``utils``): whether its file lies where one of them is installed."""
    module = sys.modules.get(top)
    if module is not None:
        paths = [getattr(module, "__file__", None), *getattr(module, "__path__", ())]
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return True
        paths = [spec.origin, *(spec.submodule_search_locations or ())] if spec else []
    files = [os.path.realpath(p) for p in paths if isinstance(p, str) and os.path.isabs(p)]
    if not files:  # built in, or nowhere to tell: as its name says
        return True
    for name in distributions:
        try:
            root = os.path.realpath(str(metadata.distribution(name).locate_file(""))) + os.sep
        except metadata.PackageNotFoundError:  # pragma: no cover - a broken installation
            continue
        if any(f.startswith(root) for f in files):
            return True
    return False


@functools.cache
def origin(module: str) -> tuple[str, ...]:
    """Where module ``module`` comes from: ``("stdlib",)``, ``("dist", name, version, …)``
    for an installed distribution (Dandelion included), or ``("user",)``.

    >>> origin("json"), origin("dandelion.items")[:2]
    (('stdlib',), ('dist', 'dandelion'))
    """
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "builtins":
        return ("stdlib",)
    if top == "dandelion":  # the framework: its version and the engine ABI in the key
        return ("dist", "dandelion", _version("dandelion"))
    dists = _distributions().get(top)
    if dists and not any(_editable(name) for name in dists) and _installed(top, dists):
        out: list[str] = ["dist"]
        for name in sorted(set(dists)):
            out += [name, _version(name)]
        return tuple(out)
    return ("user",)


def _module_of(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else "builtins"


class _Walk:
    """One walk from a function: digests by value, with what must hold for reuse."""

    def __init__(self, root: Any = None) -> None:
        self.root = root
        self.done: dict[int, bytes] = {}
        self.active: set[int] = set()
        self.keep: list[Any] = []  # keeps walked objects alive, so ids stay unique
        #: (mapping, name, value): ``mapping.get(name) is value`` must hold for reuse
        self.bindings: list[tuple[Any, str, Any]] = []
        #: (cell, value) and (object, attribute, value) likewise
        self.cells: list[tuple[Any, Any]] = []
        self.attrs: list[tuple[Any, str, Any]] = []
        #: (value, digest): a mutable value must still hash the same
        self.mutable: list[tuple[Any, bytes]] = []
        self.where: list[str] = []
        self.inside_mutable = False

    # -- digests ---------------------------------------------------------------------------

    def digest(self, obj: Any) -> bytes:
        if type(obj) in _ATOMS:
            return hashing.digest(_atom(obj))
        key = id(obj)
        known = self.done.get(key)
        if known is not None:
            return known
        if key in self.active:  # a cycle: name the object instead of walking it again
            return hashing.digest(b"cycle:" + repr(type(obj)).encode() +
                                  _qualname(obj).encode())
        if len(self.done) > MAX_OBJECTS:
            raise Uncacheable(f"{self._where()} reaches more than {MAX_OBJECTS} objects")
        if not self.inside_mutable and _is_mutable(obj):
            # hashed on its own, as it is re-hashed whenever the memoized identity is used
            sub = self.sub()
            result = sub.digest(obj)
            self.bindings += sub.bindings
            self.cells += sub.cells
            self.attrs += sub.attrs
            self.keep.append(obj)
            self.mutable.append((obj, result))
            self.done[key] = result
            return result
        self.active.add(key)
        self.keep.append(obj)
        try:
            result = hashing.digest(self._parts(obj))
        finally:
            self.active.discard(key)
        self.done[key] = result
        return result

    def sub(self) -> _Walk:
        """A walk of one mutable value on its own (the same wherever it is reached)."""
        walk = _Walk(self.root)
        walk.inside_mutable = True
        walk.where = list(self.where)
        return walk

    def _where(self) -> str:
        return " -> ".join(w for w in self.where if w) or "the function"

    def _parts(self, obj: Any) -> bytes:
        d = self.digest
        if isinstance(obj, types.FunctionType):
            # a Python function from nowhere (exec'd without a __name__) is user code
            module = obj.__module__ if isinstance(obj.__module__, str) else "__main__"
            if origin(module) != ("user",) and obj is not self.root:
                return b"function\0" + _extern(obj)
            return self._function(obj)
        if isinstance(obj, types.CodeType):
            return self._code(obj)
        if isinstance(obj, type):
            return self._class(obj)
        if isinstance(obj, types.ModuleType):
            return b"module\0" + _origin_bytes(obj.__name__)
        if isinstance(obj, (types.BuiltinFunctionType, types.MethodDescriptorType,
                            types.WrapperDescriptorType, types.BuiltinMethodType)):
            owner = getattr(obj, "__self__", None)
            if owner is not None and not isinstance(owner, types.ModuleType):
                return b"boundbuiltin\0" + d(owner) + _qualname(obj).encode()
            return b"builtin\0" + _extern(obj)
        if isinstance(obj, types.MethodType):
            return b"method\0" + d(obj.__self__) + d(obj.__func__)
        # the built-in containers themselves; a subclass (a user's dict with methods, a
        # defaultdict and its factory, a namedtuple) is an object of its class, below
        kind = type(obj)
        if kind is tuple or kind is list:
            return (b"tuple\0" if kind is tuple else b"list\0") + b"".join(d(x) for x in obj)
        if kind is set or kind is frozenset:
            return (b"set\0" if kind is set else b"frozenset\0") + \
                b"".join(sorted(d(x) for x in obj))
        if kind is dict:
            return b"dict\0" + b"".join(d(k) + d(v) for k, v in obj.items())
        if isinstance(obj, bytearray):
            return b"bytearray\0" + bytes(obj)
        if isinstance(obj, (staticmethod, classmethod)):
            return type(obj).__name__.encode() + d(obj.__func__)
        if isinstance(obj, property):
            return b"property\0" + d(obj.fget) + d(obj.fset) + d(obj.fdel)
        if isinstance(obj, functools.partial):
            return b"partial\0" + d(obj.func) + d(obj.args) + d(obj.keywords)
        if isinstance(obj, types.MappingProxyType):  # a dataclass field's metadata …
            return b"mappingproxy\0" + b"".join(d(k) + d(v) for k, v in obj.items())
        if isinstance(obj, functools.cached_property):  # its lock is not what it computes
            return b"cached_property\0" + d(obj.func)
        if _is_array(obj) and kind is ndarray_class():  # (a np.matrix is an object below)
            if obj.dtype.hasobject:
                return b"objarray\0" + d(obj.tolist())
            head = f"ndarray\0{obj.dtype.str}{obj.shape!r}".encode()
            return head + bytes(obj.tobytes())
        wrapped = getattr(obj, "__wrapped__", None)
        if isinstance(wrapped, types.FunctionType) and \
                origin(_module_of(kind)) != ("user",):  # a library's decorator (@dd.compute …)
            return b"wrapped\0" + d(kind) + d(wrapped)
        return self._object(obj)  # a user's decorator object with its state (its factor …)

    def _function(self, fn: types.FunctionType) -> bytes:
        self.where.append(fn.__qualname__ if fn is self.root else "")
        try:
            d = self.digest
            code = fn.__code__
            self.attrs += [(fn, "__code__", code), (fn, "__defaults__", fn.__defaults__),
                           (fn, "__kwdefaults__", fn.__kwdefaults__)]
            parts = [b"function\0", fn.__qualname__.encode(), b"\0", d(code),
                     d(fn.__defaults__), d(fn.__kwdefaults__)]
            for cell in fn.__closure__ or ():
                try:
                    value = cell.cell_contents
                except ValueError:  # a cell not yet filled
                    value = _MISSING
                    parts.append(b"emptycell")
                else:
                    parts.append(d(value))
                self.cells.append((cell, value))
            if _defined_here(fn):
                _import_user_modules(code)
            parts.append(self._globals(fn.__globals__, _names(code)))
            return b"".join(parts)
        finally:
            self.where.pop()

    def _globals(self, namespace: dict[str, Any], names: frozenset[str]) -> bytes:
        """The digests of the globals named in ``names``, and of what the code imports."""
        parts: list[bytes] = []
        modules: list[types.ModuleType] = []
        for name in sorted(names):
            value = namespace.get(name, _MISSING)
            self.bindings.append((namespace, name, value))
            if value is _MISSING:
                value = getattr(builtins, name, _MISSING)
                if value is _MISSING:  # an attribute's name, or ``import x`` in the body
                    module = sys.modules.get(name)
                    if module is not None:
                        self.bindings.append((sys.modules, name, module))
                        parts.append(b"import\0" + name.encode() + _origin_bytes(name))
                        if origin(name) == ("user",):
                            modules.append(module)
                    continue
                parts.append(b"builtins." + name.encode())
                continue
            self.where.append(name)
            try:
                parts.append(name.encode() + b"=" + self.digest(value))
            finally:
                self.where.pop()
            if isinstance(value, types.ModuleType) and origin(value.__name__) == ("user",):
                modules.append(value)
        seen = {id(m) for m in modules}
        while modules:  # ``helpers.f(x)``: the attributes of user modules the code names
            module = modules.pop(0)
            for name in sorted(names):
                value = module.__dict__.get(name, _MISSING)
                if value is _MISSING:
                    continue
                self.bindings.append((module.__dict__, name, value))
                self.where.append(f"{module.__name__}.{name}")
                try:
                    parts.append(module.__name__.encode() + b"." + name.encode() + b"=" +
                                 self.digest(value))
                finally:
                    self.where.pop()
                if isinstance(value, types.ModuleType) and id(value) not in seen and \
                        origin(value.__name__) == ("user",):
                    seen.add(id(value))
                    modules.append(value)
        return b"\0".join(parts)

    def _code(self, code: types.CodeType) -> bytes:
        d = self.digest
        return b"".join([
            b"code\0", code.co_code, b"\0", code.co_name.encode(), b"\0",
            struct.pack("<7i", code.co_argcount, code.co_posonlyargcount,
                        code.co_kwonlyargcount, code.co_nlocals, code.co_flags,
                        len(code.co_freevars), len(code.co_cellvars)),
            d(code.co_consts), d(code.co_names), d(code.co_varnames),
            d(code.co_freevars), d(code.co_cellvars),
            d(getattr(code, "co_exceptiontable", b""))])

    def _class(self, cls: type) -> bytes:
        module = _module_of(cls)
        if origin(module) != ("user",):
            return b"class\0" + _extern(cls)
        self.where.append(cls.__qualname__)
        try:
            d = self.digest
            parts = [b"class\0", cls.__qualname__.encode(), b"\0", d(cls.__bases__),
                     _extension_digest(module)]
            if type(cls) is not type:  # its metaclass (a user's with __getitem__ …)
                parts.append(b"meta=" + d(type(cls)))
            for name, value in sorted(cls.__dict__.items()):
                if name in ("__dict__", "__weakref__", "__module__", "__qualname__"):
                    continue
                self.bindings.append((cls.__dict__, name, value))
                if isinstance(value, (types.GetSetDescriptorType, types.MemberDescriptorType)):
                    parts.append(name.encode() + b"=slot")  # __slots__ entries
                    continue
                if name == "_abc_impl" and isinstance(cls, abc.ABCMeta):
                    parts.append(b"_abc_impl=" + self._abc_registry(cls))
                    continue
                parts.append(name.encode() + b"=" + d(value))
            # what it inherits from the user's classes stays inherited: a name set on it
            # later (Sub.k = 5 over Base.k) is a rebinding like any other
            own = cls.__dict__
            self.bindings += [(own, name, _MISSING) for base in cls.__mro__[1:-1]
                              if origin(_module_of(base)) == ("user",)
                              for name in base.__dict__ if name not in own]
            return b"\0".join(parts)
        finally:
            self.where.pop()

    def _abc_registry(self, cls: abc.ABCMeta) -> bytes:
        """An abstract base class's registered virtual subclasses (``B.register(C)``), which
        ``isinstance`` answers by; the rest of its ``_abc_impl`` is a cache of answers."""
        dump = getattr(abc, "_get_dump", None)
        if dump is None:  # pragma: no cover - another implementation of abc
            return b"?"
        registered = [ref() for ref in dump(cls)[0]]
        return b"".join(sorted(self.digest(c) for c in registered if c is not None))

    def _object(self, obj: Any) -> bytes:
        """Any other value: its class and what reconstructs it (its ``__reduce_ex__``)."""
        try:
            reducer = copyreg.dispatch_table.get(type(obj))
            reduced = reducer(obj) if reducer is not None else obj.__reduce_ex__(4)
        except Exception as e:
            raise Uncacheable(f"{self._where()}: a {type(obj).__name__} cannot be hashed by "
                              f"value ({e})") from None
        if isinstance(reduced, str):  # a module-level singleton, named
            return b"named\0" + _extern(obj)
        parts = [b"object\0", self.digest(type(obj))]
        for i, part in enumerate(reduced):
            if i >= 3 and part is not None:  # list and dict items come as iterators
                part = list(part)
            parts.append(self.digest(part))
        return b"".join(parts)


def _is_mutable(obj: Any) -> bool:
    """Whether ``obj`` may change without being rebound (so it is re-hashed on reuse)."""
    if isinstance(obj, _MUTABLE_CONTAINERS) or _is_array(obj):
        return True
    return type(obj).__module__ != "builtins" and not isinstance(obj, (
        type, types.FunctionType, types.ModuleType, types.BuiltinFunctionType,
        functools.partial))


def _is_array(obj: Any) -> bool:
    ndarray = ndarray_class()
    return ndarray is not None and isinstance(obj, ndarray)


def _atom(obj: Any) -> bytes:
    if isinstance(obj, bytes):
        return b"b" + obj
    if isinstance(obj, str):
        return b"s" + obj.encode("utf-8", "surrogatepass")
    if isinstance(obj, float):
        return b"f" + struct.pack("<d", obj)
    return type(obj).__name__.encode() + b":" + repr(obj).encode()


def _qualname(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return name if isinstance(name, str) else type(obj).__qualname__


def _extern(obj: Any) -> bytes:
    module = _module_of(obj)
    return module.encode() + b":" + _qualname(obj).encode() + _origin_bytes(module)


def _origin_bytes(module: str) -> bytes:
    where = origin(module)
    named = b"\0" + "\0".join(where).encode()
    return named + _extension_digest(module) if where == ("user",) else named


def _extension_digest(module: str) -> bytes:
    """The digest of the compiled file of a user's extension module (a Cython or C module
    built in place, not installed), whose code the walk cannot read: rebuilt, it misses.
    Empty for any other module."""
    path = getattr(sys.modules.get(module), "__file__", None)
    if not isinstance(path, str) or not path.endswith(_EXTENSIONS):
        return b""
    try:
        st = os.stat(path)
        return _file_digest(path, st.st_mtime_ns, st.st_size)
    except OSError:  # gone since it was loaded: what was loaded is unknown
        raise Uncacheable(f"the extension module {module} was loaded from {path}, which is "
                          "gone") from None


_EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, _mtime_ns: int, _size: int) -> bytes:
    with open(path, "rb") as f:
        return hashing.digest(f.read())


def _defined_here(fn: types.FunctionType) -> bool:
    """Whether ``fn`` lives in a module of this process (its globals are the module's), not
    one that came by value (a server's tenant's, a Ray worker's): only the code of this
    process's own modules may make it import its user modules, never a name another sent."""
    module = sys.modules.get(fn.__module__) if isinstance(fn.__module__, str) else None
    return module is not None and getattr(module, "__dict__", None) is fn.__globals__


def _import_user_modules(code: types.CodeType) -> None:
    """Import the user modules that ``code`` imports in its body and that are not imported
    yet, so that the walk sees what they hold: in a new process a function's identity is
    made before it first runs, and a module it imports only then would be left out (an edit
    to it would be served the result of the code before).  One that fails to import is left
    to the function's run to report."""
    from dandelion.runtime.pickling import code_imports

    for name in code_imports(code):
        if name not in sys.modules and origin(name) == ("user",):
            try:
                importlib.import_module(name)
            except (Exception, SystemExit):  # (a module that exits on import must not end
                pass  # the caller's program here: its run reports it)


@functools.lru_cache(maxsize=4096)
def _names(code: types.CodeType) -> frozenset[str]:
    """The names a code object and the code nested in it use (globals, attributes,
    imports): a superset of the globals it reads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return frozenset(names)


class Identity:
    """The identity of a Python function as one walk made it: its ``digest``, and what the
    walk read, which must all hold for the digest to stay the function's (:meth:`holds`)."""

    __slots__ = ("digest", "root", "bindings", "cells", "attrs", "mutable", "generations")

    def __init__(self, digest: bytes, walk: _Walk) -> None:
        self.digest = digest
        self.root = walk.root
        self.bindings = walk.bindings
        self.cells = walk.cells
        self.attrs = walk.attrs
        self.mutable = walk.mutable
        #: per mutable value, the generation of its array's write watch its digest was
        #: checked in (:mod:`dandelion.cache.watch`; -1: none, or not an array)
        self.generations = [-1] * len(walk.mutable)

    def holds(self) -> bool:
        """Whether everything the walk read is still the same."""
        for mapping, name, value in self.bindings:
            if mapping.get(name, _MISSING) is not value:
                return False
        for cell, value in self.cells:
            try:
                if cell.cell_contents is not value:
                    return False
            except ValueError:
                if value is not _MISSING:
                    return False
        for owner, attr, value in self.attrs:
            if getattr(owner, attr, _MISSING) is not value:
                return False
        for i, (obj, digest) in enumerate(self.mutable):
            sighting = sighting_for(obj)
            if sighting is not None:  # a large module array is not hashed again while its
                if sighting.unchanged(obj, self.generations[i]):  # memory is unwritten
                    continue
                generation = sighting.arm(obj)
            try:
                if _Walk(self.root).sub().digest(obj) != digest:
                    return False
            except Uncacheable:
                return False
            if sighting is not None:
                self.generations[i] = generation
        return True


_memo: weakref.WeakKeyDictionary[Callable[..., Any], Identity] = weakref.WeakKeyDictionary()
_memo_lock = threading.Lock()


def python_identity(fn: Callable[..., Any]) -> bytes:
    """The 32-byte identity of Python function ``fn`` (memoized while it holds).

    Raises:
        Uncacheable: something ``fn`` reaches cannot be hashed by value (the message says
            what, and through which names).
    """
    return identity_of(fn).digest


def identity_of(fn: Callable[..., Any]) -> Identity:
    """The :class:`Identity` of Python function ``fn`` as it is now: the memoized one while
    it holds, else a new walk's (then memoized).  A caller that keeps it may check
    :meth:`Identity.holds` itself on its next use, without this lookup.

    >>> def f(x):
    ...     return x + 1
    >>> known = identity_of(f)
    >>> known.digest == python_identity(f), known.holds()
    (True, True)
    >>> f.__code__ = (lambda x: x + 2).__code__
    >>> known.holds(), identity_of(f).digest == known.digest
    (False, False)

    Raises:
        Uncacheable: as :func:`python_identity`.
    """
    with _memo_lock:
        known = _memo.get(fn)
    if known is not None and known.holds():
        return known
    walk = _Walk(fn)
    made = Identity(walk.digest(fn), walk)
    with _memo_lock:
        _memo[fn] = made
    return made
