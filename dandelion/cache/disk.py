"""An on-disk cache store: one file per entry, content-checked, bounded, LRU eviction.

Files live at ``<root>/<namespace>/<first two hex digits>/<key>``; each holds a magic, the
digest of its payload and the payload.  Writes go to a temporary file renamed into place
(atomic: readers see the whole entry or none), and a read checks the digest, so a truncated
or corrupt file is a miss and is removed.  When the store grows past ``max_bytes``, the
entries used least recently (by modification time, which a hit refreshes) are removed.

Leases (:meth:`~dandelion.cache.store.Store.lease`), for nodes that share the directory, are
files ``.lease-<key>`` beside the entry, created with ``O_EXCL`` and holding the holder's
token; the holder renews one by touching it, and one not touched for ``lease_seconds`` (its
holder died) is broken by the next taker.  Two takers breaking the same dead lease at once
may both compute the entry, which is harmless: they keep the same bytes.  Expiry compares
modification times with this machine's clock, so the nodes' clocks must agree to well under
``lease_seconds``.

>>> import tempfile
>>> store = DiskStore(tempfile.mkdtemp())
>>> store.put("ns/00ff", b"entry")
>>> store.get("ns/00ff"), store.get("ns/0000")
(b'entry', None)
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from dandelion.cache import hashing
from dandelion.cache.store import Store

MAGIC = b"DDCD1\0\0\0"
_HEAD = len(MAGIC) + 32

#: whether a file's times can be set through its descriptor (not on Windows)
_UTIME_FD = os.utime in os.supports_fd

def _hex(name: str) -> bool:
    """Whether ``name`` is a key's digest in lower-case hex."""
    return bool(name) and name.strip("0123456789abcdef") == ""


def _one_name(namespace: str) -> bool:
    """Whether ``namespace`` names one directory below the root (not ``..``, no ``/``)."""
    return namespace not in ("", ".", "..") and "/" not in namespace and \
        os.sep not in namespace and (os.altsep is None or os.altsep not in namespace)


#: The default bound of a disk store.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024 * 1024


def default_cache_dir() -> Path:
    """``$DANDELION_CACHE_DIR``, else the platform's user cache directory + ``dandelion``
    (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows)."""
    explicit = os.environ.get("DANDELION_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dandelion"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "dandelion" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dandelion"


class DiskStore(Store):
    """Entries as files under ``root`` (default :func:`default_cache_dir`), at most
    ``max_bytes`` of them."""

    kind = "disk"

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, lease_seconds: float = 10.0) -> None:
        # absolute: the same directory after the process changes its working directory,
        # and in a process that reopens the store from this one's description
        self.root = (Path(root).expanduser() if root is not None else
                     default_cache_dir()).absolute()
        self._root = str(self.root)
        self.max_bytes = max_bytes
        self.lease_seconds = lease_seconds
        self._bytes: int | None = None  # this process's estimate, from a scan
        self._lock = threading.Lock()

    def _file(self, key: str) -> str:
        namespace, _, digest = key.rpartition("/")
        return os.path.join(self._root, namespace, digest[:2], digest)

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def get(self, key: str) -> bytes | None:
        # one unbuffered open file: the head and the payload each read once into bytes of
        # their own (no copy of the payload out of the whole file), its time of use set
        path = self._file(key)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            return None
        with f:
            head = f.read(_HEAD)
            payload = f.read()
            whole = head[:len(MAGIC)] == MAGIC and hashing.digest(payload) == head[len(MAGIC):]
            if whole:
                try:  # recently used
                    os.utime(f.fileno() if _UTIME_FD else path)
                except OSError:
                    pass
        if not whole:  # truncated or corrupt: a miss, and gone
            self._remove(Path(path))
            return None
        return payload

    def put(self, key: str, value: bytes) -> None:
        if len(value) + _HEAD > self.max_bytes:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC)
                f.write(hashing.digest(value))
                f.write(value)
            os.replace(tmp, path)
        except BaseException:
            self._remove(Path(tmp))
            raise
        with self._lock:
            if self._bytes is None:
                self._bytes = self._scan_bytes()
            else:
                self._bytes += len(value) + _HEAD
            over = self._bytes > self.max_bytes
        if over:
            self._evict()

    def _entries(self, namespace: str | None = None) -> list[tuple[float, int, Path]]:
        """(modification time, size, path) of every entry file: a file named by a key in
        hex, at ``<root>/<namespace>/<its first two digits>/``.  Nothing else under the root
        is an entry (the root may be a directory of the user's, ``cache="."``), so nothing
        else is counted, evicted or cleared; nor is anything outside it (``namespace`` must
        be one plain name)."""
        if namespace is not None and not _one_name(namespace):
            return []
        out = []
        top = os.path.join(self._root, namespace) if namespace else self._root
        for dirpath, _dirs, files in os.walk(top):
            shard = os.path.relpath(dirpath, self._root).split(os.sep)
            if len(shard) != 2:
                continue
            for name in files:
                if name[:2] != shard[1] or not _hex(name):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                out.append((st.st_mtime, st.st_size, path))
        return out

    def _scan_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> None:
        """Remove least recently used entries until the store holds 90 % of its bound."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        target = self.max_bytes * 9 // 10
        for _, size, path in entries:
            if total <= target:
                break
            self._remove(path)
            total -= size
        with self._lock:
            self._bytes = total

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def delete(self, key: str) -> None:
        self._remove(self._path(key))

    def clear(self, namespace: str | None = None) -> int:
        entries = self._entries(namespace)
        for _, _, path in entries:
            self._remove(path)
        if namespace and _one_name(namespace):  # its directories, where left empty
            for dirpath, _dirs, _files in os.walk(self.root / namespace, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
        with self._lock:
            self._bytes = None
        return len(entries)

    def info(self) -> dict[str, Any]:
        entries = self._entries()
        return {"kind": self.kind, "location": str(self.root), "entries": len(entries),
                "bytes": sum(size for _, size, _ in entries), "max_bytes": self.max_bytes}

    def _lease_path(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(".lease-" + path.name)

    def lease(self, keys: Sequence[str], holder: str) -> list[bool] | None:
        return [self._take(self._lease_path(key), holder) for key in keys]

    def _take(self, path: Path, holder: str) -> bool:
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            except FileExistsError:
                try:
                    if time.time() - path.stat().st_mtime <= self.lease_seconds:
                        return False  # held
                except FileNotFoundError:
                    continue  # released meanwhile
                self._remove(path)  # not renewed in time: its holder died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(holder)
            return True
        return False

    def _held(self, key: str, holder: str) -> Path | None:
        path = self._lease_path(key)
        try:
            return path if path.read_text() == holder else None
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def renew(self, keys: Sequence[str], holder: str) -> None:
        for key in keys:
            path = self._held(key, holder)
            if path is not None:
                try:
                    os.utime(path)
                except FileNotFoundError:  # broken by a taker: it was not renewed in time
                    pass

    def release(self, keys: Sequence[str], holder: str) -> None:
        for key in keys:
            path = self._held(key, holder)
            if path is not None:
                self._remove(path)

    def reopener(self) -> Callable[[], Store] | None:
        return functools.partial(DiskStore, str(self.root), self.max_bytes,
                                 self.lease_seconds)
