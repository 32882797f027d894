"""The artifact store: function code by content digest, on disk (cold) and in memory (hot).

An *artifact* is what an engine runs for one implementation: a
:class:`~dandelion.authoring.compute.PythonFunction` (stored as a cloudpickle) or a
:class:`NativeFunction` (a static x86-64 ELF).  A **cold** invocation loads the code from the
store's directory and checks its digest; a **hot** one finds it in memory.  Sandboxes are
never specific to a function: the code travels to a fresh sandbox on every invocation.

Python functions are pickled *by value* when they come from the user's own modules, scripts
or an interactive session, so a sandbox never imports user code; the libraries a function
refers to (``numpy`` …) are recorded as its ``requires`` and are imported by the sandbox's
zygote before any filter is installed.

>>> store = ArtifactStore(tempfile.mkdtemp())
>>> try:
...     store.put_native_bytes("noop", b"not an elf")
... except BackendError as e:
...     print(e.message)
native function 'noop': not an ELF file
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import os
import pickletools
import struct
import sys
import sysconfig
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any, Collection

import attrs

from dandelion.errors import BackendError
from dandelion.runtime import pickling

#: Native functions are linked at this address (``dandelion build``); segments must lie in
#: ``[NATIVE_BASE, NATIVE_LIMIT)``, below 2 GiB so that the small code model works.
NATIVE_BASE = 0x10000000
NATIVE_LIMIT = 0x80000000
_PAGE = 4096


@attrs.frozen
class NativeImage:
    """A validated native function: where to map what, and where to enter.

    Attributes:
        entry: address of ``int entry(void *context)``.
        segments: ``(vaddr, memsz, prot, offset, filesz)`` per loadable segment.
    """

    entry: int
    segments: tuple[tuple[int, int, int, int, int], ...]


@attrs.frozen(eq=False)
class NativeFunction:
    """The artifact of a native compute function: a static freestanding x86-64 ELF built
    with the C SDK (``dandelion build func.c -o func.elf``).

    Attributes:
        name: the function's name.
        image: the ELF file's bytes.
    """

    name: str
    image: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    @property
    def digest(self) -> str:
        """``sha256:`` of the ELF bytes."""
        return "sha256:" + hashlib.sha256(self.image).hexdigest()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], name: str | None = None
                  ) -> NativeFunction:
        """Load and validate an ELF file.

        Raises:
            BackendError: the file is missing or is not a valid native function.
        """
        p = Path(path)
        try:
            image = p.read_bytes()
        except OSError as e:
            raise BackendError(f"cannot read native function {str(p)!r}: {e.strerror}",
                               hint=f"build it: dandelion build {p.with_suffix('.c').name} "
                                    f"-o {p.name}") from None
        fn = cls(name or p.stem, image)
        validate_elf(fn.name, image)
        return fn


def validate_elf(name: str, image: bytes) -> NativeImage:
    """Check that ``image`` is a static x86-64 executable the process engine can map.

    Raises:
        BackendError: it is not, saying why.
    """
    def bad(why: str) -> BackendError:
        return BackendError(f"native function '{name}': {why}",
                            hint="build it with `dandelion build func.c -o func.elf`")

    if len(image) < 64 or image[:4] != b"\x7fELF":
        raise bad("not an ELF file")
    if image[4] != 2 or image[5] != 1:
        raise bad("not a 64-bit little-endian ELF")
    (e_type, e_machine, _v, e_entry, e_phoff, _sh, _fl, _eh, e_phentsize, e_phnum,
     *_rest) = struct.unpack_from("<HHIQQQIHHHHHH", image, 16)
    if e_machine != 62:
        raise bad(f"built for machine {e_machine}, not x86-64")
    if e_type != 2:
        raise bad("not a static executable (ET_EXEC); position-independent or "
                          "shared objects are not supported")
    if e_phentsize != 56 or e_phoff + 56 * e_phnum > len(image) or e_phnum > 64:
        raise bad("malformed program headers")
    segments = []
    pages: list[tuple[int, int]] = []
    entry_ok = False
    for i in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = \
            struct.unpack_from("<IIQQQQQQ", image, e_phoff + 56 * i)
        if p_type in (2, 3):  # PT_DYNAMIC, PT_INTERP
            raise bad("dynamically linked; native functions are static")
        if p_type == 7:
            raise bad("uses thread-local storage, which a sandbox does not set up")
        if p_type != 1 or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(image):
            raise bad(f"segment {i} lies outside the file")
        start = p_vaddr & ~(_PAGE - 1)
        end = (p_vaddr + p_memsz + _PAGE - 1) & ~(_PAGE - 1)
        if start < NATIVE_BASE or end > NATIVE_LIMIT:
            raise bad(f"segment {i} at {p_vaddr:#x} is outside "
                      f"[{NATIVE_BASE:#x}, {NATIVE_LIMIT:#x})")
        if any(start < e and s < end for s, e in pages):
            raise bad(f"segment {i} shares a page with another segment")
        pages.append((start, end))
        prot = (1 if p_flags & 4 else 0) | (2 if p_flags & 2 else 0) | (4 if p_flags & 1 else 0)
        segments.append((p_vaddr, p_memsz, prot, p_offset, p_filesz))
        if p_flags & 1 and p_vaddr <= e_entry < p_vaddr + p_memsz:
            entry_ok = True
    if sum(e - s for s, e in pages) > 1 << 30:
        raise bad("its segments need more than 1 GiB")
    if not entry_ok:
        raise bad(f"entry point {e_entry:#x} is not in an executable segment")
    return NativeImage(e_entry, tuple(segments))


@attrs.frozen(eq=False)
class WasmFunction:
    """The artifact of a wasm compute function: a WebAssembly module built from the same C
    SDK for ``wasm32`` (``dandelion build func.c --target wasm``) that imports nothing and
    exports ``memory`` and ``dandelion_entry``.

    Attributes:
        name: the function's name.
        image: the module's bytes.
    """

    name: str
    image: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    @property
    def digest(self) -> str:
        """``sha256:`` of the module's bytes."""
        return "sha256:" + hashlib.sha256(self.image).hexdigest()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], name: str | None = None
                  ) -> WasmFunction:
        """Load and validate a ``.wasm`` file.

        Raises:
            BackendError: the file is missing or is not a module a wasm engine runs.
        """
        p = Path(path)
        try:
            image = p.read_bytes()
        except OSError as e:
            raise BackendError(f"cannot read wasm function {str(p)!r}: {e.strerror}",
                               hint=f"build it: dandelion build {p.with_suffix('.c').name} "
                                    f"--target wasm") from None
        fn = cls(name or p.stem, image)
        validate_wasm(fn.name, image)
        return fn


def _leb128(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 35:
            raise ValueError("truncated")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at


def validate_wasm(name: str, image: bytes) -> None:
    """Check that ``image`` is a WebAssembly module that imports nothing: a wasm function
    computes on its context only, so it has nothing to call (wasmtime checks the rest when
    it compiles the module).

    >>> validate_wasm("f", b"\\0asm\\1\\0\\0\\0")  # an empty module
    >>> try:
    ...     validate_wasm("f", b"\\0asm\\1\\0\\0\\0\\2\\7\\1\\1m\\1f\\0\\0")
    ... except BackendError as e:
    ...     print(e.message)
    wasm function 'f': imports 1 function or value; a wasm function may import nothing

    Raises:
        BackendError: it is not a module, or it imports something.
    """
    def bad(why: str) -> BackendError:
        return BackendError(f"wasm function '{name}': {why}",
                            hint="build it with `dandelion build func.c --target wasm` (the "
                                 "C SDK links no imports)")

    if image[:8] != b"\0asm\1\0\0\0":
        raise bad("not a WebAssembly module (version 1)")
    at = 8
    try:
        while at < len(image):
            section = image[at]
            size, at = _leb128(image, at + 1)
            if section == 2:  # the import section
                count, _ = _leb128(image, at)
                if count:
                    raise bad(f"imports {count} function{'s' if count > 1 else ''} or "
                              "value; a wasm function may import nothing")
            at += size
    except ValueError:
        raise bad("malformed (a section is truncated)") from None
    if at != len(image):
        raise bad("malformed (a section is truncated)")


# --- Python functions ------------------------------------------------------------------

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


# --- the store -----------------------------------------------------------------------------

@attrs.frozen
class StoredCode:
    """Code as a sandbox receives it.

    Attributes:
        kind: ``python``, ``native`` or ``wasm``.
        data: the cloudpickle, the ELF image or the wasm module.
        requires: libraries a Python function needs preloaded.
        native: the validated image of a native function.
    """

    kind: str
    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    requires: tuple[str, ...] = ()
    native: NativeImage | None = None


def default_root() -> Path:
    """The default store directory (per user, under the temporary directory)."""
    return Path(tempfile.gettempdir()) / f"dandelion-artifacts-{os.getuid()}"


class ArtifactStore:
    """Code by digest: files under ``root`` (cold), an LRU in memory (hot).

    Args:
        root: the directory (default :func:`default_root`).
        hot_bytes: how much code to keep in memory.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 hot_bytes: int = 256 << 20) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.hot_bytes = hot_bytes
        self._hot: collections.OrderedDict[str, StoredCode] = collections.OrderedDict()
        self._hot_size = 0
        self._lock = threading.Lock()
        self._source: dict[str, Any] = {}  # digest -> the artifact object it was written from
        #: counters: ``hot`` (found in memory), ``cold`` (loaded from disk), ``stored``
        self.stats = collections.Counter[str]()

    def path(self, digest: str) -> Path:
        """The file that holds (or would hold) the code of ``digest``."""
        return self._path(digest)

    def _path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        if not hexdigest or not hexdigest.isalnum() or not algo.isalnum():
            raise BackendError(f"malformed artifact digest {digest!r}")
        return self.root / algo / hexdigest[:2] / hexdigest

    def _remember(self, digest: str, code: StoredCode) -> None:
        with self._lock:
            old = self._hot.pop(digest, None)
            if old is not None:
                self._hot_size -= len(old.data)
            self._hot[digest] = code
            self._hot_size += len(code.data)
            while self._hot_size > self.hot_bytes and len(self._hot) > 1:
                gone, old = self._hot.popitem(last=False)
                self._hot_size -= len(old.data)
                # nor keep its artifact alive: a long-running worker sees many versions
                self._source.pop(gone, None)

    def drop_hot(self) -> None:
        """Forget everything in memory: the next load of each digest is cold."""
        with self._lock:
            self._hot.clear()
            self._hot_size = 0

    def evict(self, digest: str) -> None:
        """Forget ``digest`` in memory: its next load is cold."""
        with self._lock:
            old = self._hot.pop(digest, None)
            if old is not None:
                self._hot_size -= len(old.data)

    def sweep(self, keep: Collection[str], older_than: float, now: float | None = None
              ) -> int:
        """Delete the code on disk that is not in ``keep`` and was written more than
        ``older_than`` seconds ago (a grace time for runs that are about to read it);
        how many were deleted."""
        cutoff = (time.time() if now is None else now) - older_than
        removed = 0
        keep = set(keep)
        for algo in self.root.iterdir() if self.root.is_dir() else ():
            for path in algo.glob("*/*"):
                if path.suffix or f"{algo.name}:{path.name}" in keep:
                    continue
                try:
                    if path.stat().st_mtime >= cutoff:
                        continue
                    path.unlink()
                    path.with_suffix(".json").unlink(missing_ok=True)
                    for compiled in path.parent.glob(f"{path.name}.*"):
                        compiled.unlink(missing_ok=True)
                except FileNotFoundError:
                    continue
                try:
                    path.parent.rmdir()  # when it was the last of its prefix
                except OSError:
                    pass
                removed += 1
                digest = f"{algo.name}:{path.name}"
                self.evict(digest)
                with self._lock:
                    self._source.pop(digest, None)
        return removed

    def is_hot(self, digest: str) -> bool:
        """Whether ``digest`` is in memory."""
        with self._lock:
            return digest in self._hot

    def get(self, digest: str, artifact: Any = None, kind: str = "python") -> StoredCode:
        """The code of ``digest``: hot from memory, else cold from disk, else (when the
        caller has the ``artifact``) serialized now and written to disk.

        A Python digest names source code, not captured values, so a file on disk is
        trusted for an artifact object only if this store wrote it from that same object;
        a native or wasm digest is the image's own content digest and always trusted.

        Raises:
            BackendError: it is nowhere, or the file on disk is corrupt.
        """
        with self._lock:
            code = self._hot.get(digest)
            if code is not None and (artifact is None or self._source.get(digest) is artifact
                                     or code.kind in ("native", "wasm")):
                self._hot.move_to_end(digest)
                self.stats["hot"] += 1
                return code
            trusted = (artifact is None or isinstance(artifact, (NativeFunction, WasmFunction))
                       or self._source.get(digest) is artifact)
        code = self._load(digest) if trusted else None
        if code is None:
            if artifact is None:
                raise BackendError(f"no code for {digest} in the artifact store {self.root}")
            code = self._store(digest, artifact, kind)
        with self._lock:
            if artifact is not None:
                self._source[digest] = artifact
        self._remember(digest, code)
        return code

    def _load(self, digest: str) -> StoredCode | None:
        path = self._path(digest)
        try:
            data = path.read_bytes()
            meta = json.loads(path.with_suffix(".json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise BackendError(f"artifact {digest} in {path.parent} is unreadable: {e}") from e
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise BackendError(f"artifact {digest} in {path.parent} is corrupt (its content "
                               "digest does not match)", hint="delete the file; it is "
                                                               "rewritten on the next run")
        self.stats["cold"] += 1
        native = validate_elf(meta.get("name", "?"), data) if meta["kind"] == "native" else None
        return StoredCode(meta["kind"], data, tuple(meta.get("requires", ())), native)

    def _store(self, digest: str, artifact: Any, kind: str) -> StoredCode:
        if isinstance(artifact, NativeFunction):
            code = StoredCode("native", artifact.image, (),
                              validate_elf(artifact.name, artifact.image))
        elif isinstance(artifact, WasmFunction):
            validate_wasm(artifact.name, artifact.image)
            code = StoredCode("wasm", artifact.image)
        else:
            data, requires = serialize_python(artifact)
            code = StoredCode("python", data, requires)
        self._write(digest, code, getattr(artifact, "name", ""))
        return code

    def _write(self, digest: str, code: StoredCode, name: str) -> None:
        path = self._path(digest)
        meta = {"kind": code.kind, "requires": list(code.requires),
                "sha256": hashlib.sha256(code.data).hexdigest(), "name": name}
        for target, content in ((path, code.data),
                                (path.with_suffix(".json"), json.dumps(meta).encode())):
            path.parent.mkdir(parents=True, exist_ok=True)  # (a sweep may have removed it)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, target)
        self.stats["stored"] += 1

    def put(self, digest: str, kind: str, data: bytes, name: str = "") -> StoredCode:
        """Store ``data`` as it is, under ``digest``: code of another ``kind`` than the
        engines run (a worker keeps the source text registered with it as ``source``).

        >>> import tempfile
        >>> store = ArtifactStore(tempfile.mkdtemp())
        >>> _ = store.put("source:ab12", "source", b"x = 1")
        >>> store.drop_hot()
        >>> store.get("source:ab12")
        StoredCode(kind='source', data=<5 bytes>, requires=(), native=None)
        """
        code = StoredCode(kind, data)
        self._write(digest, code, name)
        self._remember(digest, code)
        return code

    def compiled(self, digest: str, tag: str) -> bytes | None:
        """What an engine compiled from the code of ``digest`` ahead of time and kept with
        :meth:`keep_compiled` under ``tag`` (which names the compiler and its settings), or
        ``None``; a file whose checksum does not match is ``None`` too."""
        path = self._path(digest)
        path = path.with_name(f"{path.name}.{tag}")
        try:
            data = path.read_bytes()
        except OSError:
            return None
        body = data[32:]
        if data[:32] != hashlib.sha256(body).digest():
            return None
        self.stats["compiled"] += 1
        return body

    def keep_compiled(self, digest: str, tag: str, data: bytes | bytearray) -> None:
        """Keep ``data``, compiled from the code of ``digest``, beside it (checksummed,
        written atomically, deleted with it by :meth:`sweep`)."""
        path = self._path(digest)
        path = path.with_name(f"{path.name}.{tag}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(data).digest() + data)
        os.replace(tmp, path)

    def put_native_bytes(self, name: str, image: bytes) -> NativeFunction:
        """Validate and store an ELF image; returns its artifact."""
        fn = NativeFunction(name, image)
        validate_elf(name, image)
        self.get(fn.digest, fn, "native")
        return fn

    def put_wasm_bytes(self, name: str, image: bytes) -> WasmFunction:
        """Validate and store a wasm module; returns its artifact."""
        fn = WasmFunction(name, image)
        validate_wasm(name, image)
        self.get(fn.digest, fn, "wasm")
        return fn


_default: ArtifactStore | None = None
_default_lock = threading.Lock()


def default_store() -> ArtifactStore:
    """The process-wide store in :func:`default_root`."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ArtifactStore()
        return _default


def native_artifact(native: Any, name: str, near: str | None = None) -> NativeFunction:
    """The :class:`NativeFunction` for ``@dd.compute(native=...)``.

    Args:
        native: a :class:`NativeFunction`, ELF bytes, a path to an ELF, or a path to a C
            file (built with the SDK on first use into the store's directory).
        name: the function's name.
        near: a file whose directory relative paths are resolved against.

    Raises:
        BackendError: the file is missing, does not build, or is not a valid native function.
    """
    if isinstance(native, NativeFunction):
        return native
    if isinstance(native, (bytes, bytearray)):
        fn = NativeFunction(name, bytes(native))
        validate_elf(name, fn.image)
        return fn
    return NativeFunction.from_file(_built(native, near, "native"), name)


def wasm_artifact(wasm: Any, name: str, near: str | None = None) -> WasmFunction:
    """The :class:`WasmFunction` for ``@dd.compute(wasm=...)``: a :class:`WasmFunction`,
    module bytes, a path to a ``.wasm`` file, or a path to a C file (built with the SDK for
    wasm on first use into the store's directory); as :func:`native_artifact`.

    Raises:
        BackendError: the file is missing, does not build, or is not a valid wasm function.
    """
    if isinstance(wasm, WasmFunction):
        return wasm
    if isinstance(wasm, (bytes, bytearray)):
        fn = WasmFunction(name, bytes(wasm))
        validate_wasm(name, fn.image)
        return fn
    return WasmFunction.from_file(_built(wasm, near, "wasm"), name)


def _built(source: Any, near: str | None, target: str) -> Path:
    """The file ``source`` names (relative to ``near``'s directory), or, for a C file,
    what it builds to for ``target`` (built once per content and flags)."""
    path = Path(source)
    if not path.is_absolute() and near:
        candidate = Path(near).resolve().parent / path
        if candidate.exists() or not path.exists():
            path = candidate
    if path.suffix != ".c":
        return path
    from dandelion.sdk import FLAGS, WASM_FLAGS, build, build_wasm

    try:
        source_bytes = path.read_bytes()
    except OSError as e:
        raise BackendError(f"cannot read {target} source {str(path)!r}: {e.strerror}"
                           ) from None
    flags = FLAGS if target == "native" else WASM_FLAGS
    key = hashlib.sha256(source_bytes + repr(flags).encode()).hexdigest()
    suffix = ".elf" if target == "native" else ".wasm"
    out = default_root() / f"{target}-build" / f"{path.stem}-{key[:16]}{suffix}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        (build if target == "native" else build_wasm)([path], tmp)
        os.replace(tmp, out)
    return out
