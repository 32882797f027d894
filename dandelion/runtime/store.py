"""The artifact store: function code by content digest, on disk (cold) and in memory (hot).

An *artifact* is what an engine runs for one implementation: a
:class:`~dandelion.runtime.python_function.PythonFunction` (stored as the pickle
:mod:`~dandelion.runtime.shipping` makes), a :class:`~dandelion.runtime.native.NativeFunction`
(a static x86-64 ELF) or a :class:`~dandelion.runtime.wasm.WasmFunction`.  A **cold**
invocation loads the code from the store's directory and checks its digest; a **hot** one
finds it in memory.  Sandboxes are never specific to a function: the code travels to a fresh
sandbox on every invocation.

>>> import tempfile
>>> from dandelion.errors import BackendError
>>> from dandelion.runtime.store import ArtifactStore
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
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Collection

import attrs

from dandelion.cache.content import Uncacheable
from dandelion.cache.identity import python_identity
from dandelion.errors import BackendError
from dandelion.runtime import nowait, pickling
from dandelion.runtime.native import NativeFunction, NativeImage, validate_elf
from dandelion.runtime.shipping import serialize_python
from dandelion.runtime.wasm import WasmFunction, validate_wasm


def fingerprint(artifact: Any) -> bytes | None:
    """What the serialized copy of a Python ``artifact`` depends on beyond its source: its
    function's identity (:func:`~dandelion.cache.identity.python_identity`: the values of
    the constants, helpers and closure cells it reaches, which its pickle captures by value).

    A digest names a function's source, so a module constant rebound after the function
    first ran (``m.SCALE = 2``) keeps the digest; the store then serializes the function
    again instead of serving the copy that captured the old value, and a sandbox computes
    what an in-process call computes.  ``None`` (not checked: the first copy is served)
    for what is not a Python function, or reaches something that cannot be hashed by value
    (then neither can its results be cached).

    The identity is memoized while what the function reads stays the same object, so the
    check costs about a microsecond per invocation.
    """
    fn = getattr(artifact, "fn", None)
    if fn is None or isinstance(artifact, (NativeFunction, WasmFunction)):
        return None
    try:
        return python_identity(fn)
    except Uncacheable:
        return None


#: What a Python artifact decoded *sealed* (:meth:`ArtifactStore.stored_artifact`) is
#: recorded with in place of its fingerprint
SEALED = b"sealed: decoded from this code, run only elsewhere"


@attrs.frozen
class StoredCode:
    """Code as a sandbox receives it.

    Attributes:
        kind: ``python``, ``native`` or ``wasm``.
        data: the cloudpickle, the ELF image or the wasm module.
        requires: libraries a Python function needs preloaded.
        native: the validated image of a native function.
        name: the name it was stored under (:meth:`ArtifactStore.put`: a registered
            source's file name, as the client gave it).
    """

    kind: str
    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    requires: tuple[str, ...] = ()
    native: NativeImage | None = None
    name: str = attrs.field(default="", repr=False)


#: The largest stored code :meth:`ArtifactStore.stored_artifact` decodes with
#: ``quick=True`` (a small function's pickle is well under 1 KiB; one that captures large
#: values is not quick to decode)
QUICK_BYTES = 64 << 10


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
        self._root = os.fspath(self.root)
        self.hot_bytes = hot_bytes
        self._hot: collections.OrderedDict[str, StoredCode] = collections.OrderedDict()
        self._hot_size = 0
        self._lock = threading.Lock()
        #: digest -> (the artifact object it was written from, that object's fingerprint
        #: then: see :func:`fingerprint`)
        self._source: dict[str, tuple[Any, bytes | None]] = {}
        #: digest -> the sha256 of what this store last wrote for it (a Python function
        #: loaded again, e.g. by a worker that evicted it, serializes to the same bytes:
        #: its file is not written again)
        self._written: dict[str, str] = {}
        #: digest -> the metadata this store last wrote for it (kind, requires, name) and
        #: the code's length (a cold load of its own code reads only the code's file and
        #: checks it against ``_written``: :meth:`get_at_once`)
        self._meta: dict[str, tuple[str, tuple[str, ...], str, int]] = {}
        #: counters: ``hot`` (found in memory), ``cold`` (loaded from disk), ``stored``
        self.stats = collections.Counter[str]()

    def path(self, digest: str) -> Path:
        """The file that holds (or would hold) the code of ``digest``."""
        return self._path(digest)

    def _path(self, digest: str) -> Path:
        return Path(self._file(digest))

    def _file(self, digest: str) -> str:
        """:meth:`path` as a string (what a cold load on the event loop opens: building
        the string costs a tenth of building the path)."""
        algo, _, hexdigest = digest.partition(":")
        if not hexdigest or not hexdigest.isalnum() or not algo.isalnum():
            raise BackendError(f"malformed artifact digest {digest!r}")
        return f"{self._root}/{algo}/{hexdigest[:2]}/{hexdigest}"

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
                    self._written.pop(digest, None)
                    self._meta.pop(digest, None)
        return removed

    def is_hot(self, digest: str) -> bool:
        """Whether ``digest`` is in memory."""
        with self._lock:
            return digest in self._hot

    def in_memory(self, digest: str) -> StoredCode | None:
        """The code of ``digest`` if it is in memory (as recently used), else ``None``.

        An engine keeps what it prepares from a native function's code (cut segments, a
        compiled module) while this is the very code it prepared it from: code pushed out
        of memory and loaded again (a worker's cold start) is prepared again.
        """
        with self._lock:
            code = self._hot.get(digest)
            if code is not None:
                self._hot.move_to_end(digest)
            return code

    def get(self, digest: str, artifact: Any = None, kind: str = "python") -> StoredCode:
        """The code of ``digest``: hot from memory, else cold from disk, else (when the
        caller has the ``artifact``) serialized now and written to disk.

        A Python digest names source code, not captured values, so a file on disk is
        trusted for an artifact object only if this store wrote it from that same object;
        a native or wasm digest is the image's own content digest and always trusted.

        An artifact that :meth:`stored_artifact` decoded sealed is served the code it was
        decoded from without its fingerprint being taken.

        Raises:
            BackendError: it is nowhere, or the file on disk is corrupt.
        """
        with self._lock:
            source = None if artifact is None else self._source.get(digest)
        version = SEALED if source is not None and source[0] is artifact and \
            source[1] is SEALED else fingerprint(artifact)
        with self._lock:
            code = self._hot.get(digest)
            if code is not None and (artifact is None or code.kind in ("native", "wasm")
                                     or self._wrote(digest, artifact, version)):
                self._hot.move_to_end(digest)
                self.stats["hot"] += 1
                return code
            trusted = (artifact is None or isinstance(artifact, (NativeFunction, WasmFunction))
                       or self._wrote(digest, artifact, version))
        code = self._load(digest) if trusted else None
        if code is None:
            if artifact is None:
                raise BackendError(f"no code for {digest} in the artifact store {self.root}")
            code = self._store(digest, artifact, kind)  # (a change since `version` was
            with self._lock:  # taken is serialized again next time)
                self._source[digest] = (artifact, version)
        self._remember(digest, code)
        return code

    def _wrote(self, digest: str, artifact: Any, version: bytes | None) -> bool:
        """Whether the code of ``digest`` is what this store serialized from ``artifact``
        when its fingerprint was ``version`` (call with the lock held)."""
        source = self._source.get(digest)
        return source is not None and source[0] is artifact and source[1] == version

    def stored_artifact(self, digest: str, quick: bool = False, sealed: bool = False) -> Any:
        """The Python artifact decoded from the code this store wrote for ``digest`` (read
        from memory, else from disk and checked against its content digest), which
        :meth:`get` then serves that very code; ``None`` where this store wrote no Python
        code for ``digest``, or it no longer decodes.

        For a worker's evicted code (docs/serve.rst, "Cold invocations"): decoding the
        stored pickle takes tens of microseconds, where loading the function again from
        its source (running its module and ``@dd.compute``'s inspection of it) takes about
        a millisecond.  A digest names the code the store wrote, so the copy is that code:
        what a changed registration runs has another digest.

        Args:
            digest: the code's digest.
            quick: only where decoding costs next to nothing (``None`` otherwise): the code
                is at most :data:`QUICK_BYTES` long, in memory or read without waiting for
                a disk (:meth:`get_at_once`), and every library it needs is imported
                already — no wait for a disk, no import, no large object to rebuild.
            sealed: the caller never runs the artifact in this process (its engines run
                Python functions in sandboxes of their own, which receive the code from
                :meth:`get`), and nothing else reaches it.  What a function decoded from a
                pickle reaches by value (its globals, closure cells and helpers) is its own,
                so only code running it could change that: :meth:`get` serves it the code it
                was decoded from without taking its identity, which is otherwise taken here
                and checked there (:func:`fingerprint`, more than half of a cold load's
                instructions).

        Raises:
            BackendError: the file on disk is corrupt or unreadable.
        """
        with self._lock:
            written = self._written.get(digest)
        if written is None:
            return None
        if quick:
            code = self.get_at_once(digest)
            if code is None or len(code.data) > QUICK_BYTES or \
                    not all(r in sys.modules for r in code.requires):
                return None
        else:
            try:
                code = self.get(digest)
            except BackendError as e:
                if "no code for" in e.message:  # deleted (by a sweep or by hand)
                    return None
                raise
        if code.kind != "python" or hashlib.sha256(code.data).hexdigest() != written:
            return None  # rewritten by someone else since: not what this store vouches for
        try:
            artifact = pickling.loads(code.data)
        except Exception:  # a library gone since: loading the source says what is wrong
            return None
        version = SEALED if sealed else fingerprint(artifact)
        with self._lock:
            self._source[digest] = (artifact, version)
        return artifact

    def get_at_once(self, digest: str) -> StoredCode | None:
        """The code of ``digest`` where that takes no wait for a disk, for an event loop:
        from memory, else from its files on disk if they are at most :data:`QUICK_BYTES`
        long and in the kernel's caches (:func:`~dandelion.runtime.nowait.read_cached`),
        checked as :meth:`get` checks them; ``None`` otherwise (then :meth:`get` it where
        waiting is allowed, which also says what is wrong with a missing file).

        Code this store wrote itself is read from its one file, without asking its length,
        and checked against the content digest this store wrote it with (kept in memory
        with the rest of its metadata: its kind, the libraries it needs, its name and
        length, a few hundred bytes): a cold load reads one file, not two, and parses no
        metadata.  Where the file is not as long as written, ``None`` (:meth:`get` reads
        it); where it holds other bytes, its metadata file is read too, as for code this
        store did not write (rewritten by another worker sharing the directory, or
        corrupt).

        Raises:
            BackendError: the file on disk is corrupt.
        """
        with self._lock:
            code = self._hot.get(digest)
            if code is not None:
                self._hot.move_to_end(digest)
                self.stats["hot"] += 1
                return code
            own = self._meta.get(digest)
            written = self._written.get(digest)
        file = self._file(digest)
        try:
            if own is not None:
                data = nowait.read_cached(file, QUICK_BYTES, own[3])
                if data is None:  # not in the kernel's caches, or not as long as written
                    return None  # (a read that would wait started the disk's: not again)
                if hashlib.sha256(data).hexdigest() == written:
                    code = self._code(*own[:3], data)  # what this store wrote
                    self._remember(digest, code)
                    return code
            # not what this store wrote: both files
            data = nowait.read_cached(file, QUICK_BYTES)
            meta = None if data is None else \
                nowait.read_cached(f"{file}.json", QUICK_BYTES)
        except OSError:  # missing or unreadable: get() says so
            return None
        if data is None or meta is None:
            return None
        code = self._load(digest, (data, meta))
        if code is not None:
            self._remember(digest, code)
        return code

    def _load(self, digest: str, read: tuple[bytes, bytes] | None = None
              ) -> StoredCode | None:
        """The code of ``digest`` from its files (``read``: their bytes, read already)."""
        path = self._path(digest)
        try:
            data, meta_bytes = read or (path.read_bytes(),
                                        path.with_suffix(".json").read_bytes())
            meta = json.loads(meta_bytes)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise BackendError(f"artifact {digest} in {path.parent} is unreadable: {e}") from e
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise BackendError(f"artifact {digest} in {path.parent} is corrupt (its content "
                               "digest does not match)", hint="delete the file; it is "
                                                               "rewritten on the next run")
        return self._code(meta["kind"], tuple(meta.get("requires", ())),
                          str(meta.get("name") or ""), data)

    def _code(self, kind: str, requires: tuple[str, ...], name: str, data: bytes
              ) -> StoredCode:
        """Code loaded from disk (counted cold), its digest checked: a native image
        validated."""
        self.stats["cold"] += 1
        native = validate_elf(name or "?", data) if kind == "native" else None
        return StoredCode(kind, data, requires, native, name)

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
        sha = hashlib.sha256(code.data).hexdigest()
        if self._written.get(digest) == sha and path.exists():
            return  # the same bytes as this store wrote last (a sweep forgets what it deletes)
        meta = json.dumps({"kind": code.kind, "requires": list(code.requires),
                           "sha256": sha, "name": name}).encode()
        for target, content in ((path, code.data), (path.with_suffix(".json"), meta)):
            path.parent.mkdir(parents=True, exist_ok=True)  # (a sweep may have removed it)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.replace(tmp, target)
        with self._lock:
            self._written[digest] = sha
            self._meta[digest] = (code.kind, code.requires, name, len(code.data))
        self.stats["stored"] += 1

    def put(self, digest: str, kind: str, data: bytes, name: str = "") -> StoredCode:
        """Store ``data`` as it is, under ``digest``: code of another ``kind`` than the
        engines run (a worker keeps the source text registered with it as ``source``).

        >>> import tempfile
        >>> from dandelion.runtime.store import ArtifactStore
        >>> store = ArtifactStore(tempfile.mkdtemp())
        >>> _ = store.put("source:ab12", "source", b"x = 1")
        >>> store.drop_hot()
        >>> store.get("source:ab12")
        StoredCode(kind='source', data=<5 bytes>, requires=(), native=None)
        """
        code = StoredCode(kind, data, name=name)
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
