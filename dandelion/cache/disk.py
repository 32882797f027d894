"""An on-disk cache store: one file per entry, content-checked, bounded, LRU eviction.

Files live at ``<root>/<namespace>/<first two hex digits>/<key>``; each holds a magic, the
digest of its payload and the payload.  Writes go to a temporary file renamed into place
(atomic: readers see the whole entry or none), and a read checks the digest, so a truncated
or corrupt file is a miss and is removed.  When the store grows past ``max_bytes``, the
entries used least recently (by modification time, which a hit refreshes) are removed.

>>> import tempfile
>>> store = DiskStore(tempfile.mkdtemp())
>>> store.put("ns/00ff", b"entry")
>>> store.get("ns/00ff"), store.get("ns/0000")
(b'entry', None)
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from dandelion.cache import hashing
from dandelion.cache.store import Store

MAGIC = b"DDCD1\0\0\0"
_HEAD = len(MAGIC) + 32

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
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.max_bytes = max_bytes
        self._bytes: int | None = None  # this process's estimate, from a scan
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        namespace, _, digest = key.rpartition("/")
        return self.root / namespace / digest[:2] / digest

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        payload = data[_HEAD:]
        if data[:len(MAGIC)] != MAGIC or hashing.digest(payload) != data[len(MAGIC):_HEAD]:
            self._remove(path)  # truncated or corrupt: a miss, and gone
            return None
        try:
            os.utime(path)  # recently used
        except OSError:
            pass
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
        """(modification time, size, path) of every entry file."""
        out = []
        top = self.root / namespace if namespace else self.root
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                if name.startswith(".tmp-"):
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
        if namespace:
            shutil.rmtree(self.root / namespace, ignore_errors=True)
        with self._lock:
            self._bytes = None
        return len(entries)

    def info(self) -> dict[str, Any]:
        entries = self._entries()
        return {"kind": self.kind, "location": str(self.root), "entries": len(entries),
                "bytes": sum(size for _, size, _ in entries), "max_bytes": self.max_bytes}

    def reopener(self) -> Callable[[], Store] | None:
        return functools.partial(DiskStore, str(self.root), self.max_bytes)
