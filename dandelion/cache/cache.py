"""The :class:`Cache` a runtime uses: a store seen through a namespace, and single-flight.

``dd.Runtime(cache=...)`` and ``dd.run(..., cache=...)`` accept what :func:`open_cache` does:
``True`` (a memory store in front of the disk store), ``False``/``None`` (no cache), a
:class:`~dandelion.cache.store.Store`, a directory, a ``redis://`` URL, ``"memory"``, or a
list of those (a stack, fastest first).

>>> cache = open_cache("memory")
>>> cache.put(b"\\x01" * 32, b"entry")
>>> cache.get_many([b"\\x01" * 32, b"\\x02" * 32])
[b'entry', None]
>>> cache.namespaced("tenant-a").get_many([b"\\x01" * 32])
[None]
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs

from dandelion.cache.disk import DiskStore
from dandelion.cache.flight import SingleFlight
from dandelion.cache.memory import MemoryStore
from dandelion.cache.store import GuardedStore, StackStore, Store
from dandelion.errors import DandelionError

#: A key prefix made for an application: the application, the signature, implementation
#: and artifact it was made for (compared by identity before use), and the prefix
#: (:func:`~dandelion.cache.key.prefix`).
KnownPrefix = tuple[Any, Any, Any, Any, bytes]

#: The namespace of runs that do not name one.
DEFAULT_NAMESPACE = "default"

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class CacheConfigError(DandelionError, ValueError):
    """A cache was configured with something that is not a store, path or URL."""


@attrs.frozen(eq=False)
class Cache:
    """A store, the namespace its keys live in, and the flights in progress.

    Attributes:
        store: where entries are kept (each layer guarded, failures are misses; a plain
            :class:`MemoryStore` cannot fail).
        namespace: keeps tenants apart: entries of one namespace are never seen by another.
        refresh: lookups all miss (everything is recomputed and stored again).
        flights: identical instances in flight (shared by every namespace of one store).
        ids: the content ids one run already knows, by item identity (each value the item
            and its id): given by the whole-run memo, which hashed the run's inputs for its
            key, to the run's lookups, which then need not hash them again, and filled with
            the ids of the outputs they keep, which the memo keeps whole after the run
            (``None``: a run keeps its own).
        prefixes: the key prefixes one run already knows, by application (given by the
            whole-run memo, which made them for its key, to the run's lookups: see
            :meth:`RunCache.lookup <dandelion.cache.run.RunCache.lookup>`; ``None``: none).
            The memo makes them only for a run whose every application is cached, so the
            run's lookups do not ask again whether one is.
        marks: entries that the first :meth:`RunCache.store
            <dandelion.cache.run.RunCache.store>` of the run keeping an entry keeps along
            with its own, in the same call to the store, taking them from this list (the
            whole-run memo's mark that a run of one application was seen: see
            :meth:`RunMemo.knowing <dandelion.runtime.run_memo.RunMemo.knowing>`; ``None``:
            none).
        missed: by application, the storage key of its one instance, which the whole-run
            memo of a plan run as one instance looked up in this run and found nothing
            under (:meth:`RunMemo.knowing <dandelion.runtime.run_memo.RunMemo.knowing>`): the
            run's lookup of it does not look again (``None``: none).
    """

    store: Store
    namespace: str = DEFAULT_NAMESPACE
    refresh: bool = False
    flights: SingleFlight = attrs.field(factory=SingleFlight)
    ids: dict[int, tuple[Any, bytes]] | None = None
    prefixes: Mapping[int, KnownPrefix] | None = None
    marks: list[tuple[str, bytes]] | None = None
    missed: Mapping[int, str] | None = None

    def __attrs_post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace) or self.namespace in (".", ".."):
            raise CacheConfigError(f"cache namespace {self.namespace!r} must be 1 to 128 "
                                   "letters, digits, '_', '.' or '-'")

    def namespaced(self, namespace: str) -> Cache:
        """The same store and flights under another namespace."""
        return attrs.evolve(self, namespace=namespace)

    def knowing(self, ids: dict[int, tuple[Any, bytes]],
                prefixes: Mapping[int, KnownPrefix] | None = None,
                marks: list[tuple[str, bytes]] | None = None,
                missed: Mapping[int, str] | None = None) -> Cache:
        """The same cache, for one run that shares the content ids in ``ids``, the key
        ``prefixes``, the ``marks`` and what it ``missed``.

        Made field by field, without :meth:`__init__`: its namespace is this cache's, checked
        already (:func:`attrs.evolve` took some 15 µs of every run; the constructor, with the
        namespace's check, 10 µs of a real all-miss run of the matrix, against 4 so)."""
        new = _new(Cache)
        _set(new, "store", self.store)
        _set(new, "namespace", self.namespace)
        _set(new, "refresh", self.refresh)
        _set(new, "flights", self.flights)
        _set(new, "ids", ids)
        _set(new, "prefixes", prefixes)
        _set(new, "marks", marks)
        _set(new, "missed", missed)
        return new

    def refreshing(self, refresh: bool = True) -> Cache:
        """The same cache, whose lookups miss (``refresh``) or not."""
        return self if refresh == self.refresh else attrs.evolve(self, refresh=refresh)

    def storage_key(self, key: bytes) -> str:
        """Where the entry of ``key`` is kept in the store; also its flight's key
        (namespaces never wait for each other)."""
        return f"{self.namespace}/{key.hex()}"

    def get_stored(self, keys: Sequence[str]) -> list[bytes | None]:
        """The entries under storage ``keys`` (all ``None`` when refreshing)."""
        if self.refresh:
            return [None] * len(keys)
        return self.store.get_many(keys)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The entries of ``keys`` (all ``None`` when refreshing)."""
        ns = self.namespace + "/"
        return self.get_stored([ns + k.hex() for k in keys])

    def put(self, key: bytes, entry: bytes) -> None:
        """Keep ``entry`` under ``key``."""
        self.store.put(self.storage_key(key), entry)

    def put_many(self, entries: Sequence[tuple[bytes, bytes]]) -> None:
        """Keep each ``(key, entry)``."""
        ns = self.namespace + "/"
        self.store.put_many([(ns + key.hex(), entry) for key, entry in entries])

    def delete(self, key: bytes) -> None:
        """Forget ``key`` (a corrupt entry)."""
        self.store.delete(self.storage_key(key))


_new = object.__new__
_set = object.__setattr__  # (the class is frozen: as attrs sets fields)


def namespace_of(name: str) -> str:
    """A namespace for any name (a tenant's): the name itself where it is a valid namespace,
    else a digest of it (so two names never share a namespace).

    >>> namespace_of("alice"), namespace_of("bob@example.org")[:10]
    ('alice', 'n-3e6f684c')
    """
    if _NAMESPACE.match(name) and name not in (".", "..") and not name.startswith("n-"):
        return name
    return "n-" + hashlib.blake2b(name.encode("utf-8", "surrogatepass"),
                                  digest_size=24).hexdigest()


def open_store(spec: Any) -> Store:
    """A store from a :class:`Store`, ``"memory"``, a ``redis://`` URL, a directory, or a
    list of those (a :class:`StackStore`).

    Raises:
        CacheConfigError: ``spec`` is none of these.
    """
    if isinstance(spec, Store):
        return spec
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise CacheConfigError("a cache stack needs at least one store")
        return StackStore([open_store(s) for s in spec])
    if spec == "memory":
        return MemoryStore()
    if isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://")):
        return _redis(spec)
    if isinstance(spec, (str, os.PathLike)):
        return DiskStore(_directory(spec))
    raise CacheConfigError(f"cannot make a cache store of {spec!r}",
                           hint="pass True, False, a Store, a directory, a redis:// URL, "
                                "'memory', or a list of those")


#: A URL's scheme (``memory:``, ``http://``), not a drive letter (``C:\\``).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")

#: What words a user may mean instead of a directory of that name.
_WORDS = {"refresh": "cache='refresh' is a choice per run: dd.run(..., cache='refresh') or "
                     "Runtime.run(..., cache='refresh')",
          "disk": "pass True (memory in front of the disk store) or DiskStore() for the disk "
                  "store in its default place"}


def _directory(spec: str | os.PathLike[str]) -> Path:
    """The directory a disk store is asked to keep its entries in, made if it is not there,
    as an absolute path.

    A string that names no directory that exists and is no path either (no ``/``: a word
    such as ``"memroy"`` or ``"refresh"``) is refused rather than made a directory of the
    working directory; so is a URL of another scheme.

    Raises:
        CacheConfigError: ``spec`` is not a directory that is or can be made.
    """
    hint = "pass True, False, a Store, a directory, a redis:// URL, 'memory', or a list of those"
    if isinstance(spec, str):
        if not spec.strip():
            raise CacheConfigError("cache='' names no store", hint=hint)
        if _SCHEME.match(spec):
            raise CacheConfigError(f"cache={spec!r}: no store has that URL scheme (a Redis "
                                   "store is redis://HOST:PORT/DB)", hint=hint)
        path = Path(spec).expanduser()
        if os.sep not in spec and "/" not in spec and not spec.startswith((".", "~")) and \
                not path.is_dir():
            raise CacheConfigError(
                f"cache={spec!r} is not 'memory', a redis:// URL or a directory that exists",
                hint=_WORDS.get(spec.lower(), f"for a new directory here, write './{spec}'"))
    else:
        path = Path(spec).expanduser()
    if path.exists() and not path.is_dir():
        raise CacheConfigError(f"cannot keep cached results in {str(path)!r}: a file, not a "
                               "directory", hint="name a directory that can be made and written")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheConfigError(f"cannot keep cached results in {str(path)!r}: {e.strerror}",
                               hint="name a directory that can be made and written") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CacheConfigError(f"cannot keep cached results in {str(path)!r}: not writeable",
                               hint="name a directory that can be made and written")
    return path.absolute()  # the same store if the process changes directory, or on Ray


def _redis(url: str) -> Store:
    """The Redis store at ``url``.

    Raises:
        CacheConfigError: ``url`` cannot be a Redis server's, or the ``redis`` package is
            not installed.
    """
    try:
        from dandelion.cache.redis_store import RedisStore

        return RedisStore(url)
    except ImportError:
        raise CacheConfigError(f"cache={url!r} needs the redis package",
                               hint="pip install redis") from None
    except ValueError as e:
        raise CacheConfigError(f"cache={url!r} is not a Redis URL: {e}",
                               hint="redis://HOST:PORT/DB, rediss://… or unix:///PATH") from None


def _guarded(store: Store) -> Store:
    """``store`` with each layer guarded (:class:`GuardedStore`), but a plain
    :class:`MemoryStore`: a dictionary of this process, which no disk or server can fail
    (a guard would be one more Python call on every lookup and keep of a run's path)."""
    if isinstance(store, StackStore):
        return StackStore([_guarded(s) for s in store.stores])
    if type(store) is MemoryStore or isinstance(store, GuardedStore):
        return store
    return GuardedStore(store)


def open_cache(spec: Any, namespace: str = DEFAULT_NAMESPACE) -> Cache | None:
    """The cache ``spec`` describes (see the module's documentation); ``None`` for none.

    Raises:
        CacheConfigError: ``spec`` describes no store.
    """
    if spec is None or spec is False:
        return None
    if isinstance(spec, Cache):
        return spec
    if spec is True:
        spec = ["memory", DiskStore()]
    return Cache(_guarded(open_store(spec)), namespace)
