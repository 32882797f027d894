"""Named stores: which Redis server or storage root a key-value or object key addresses.

A worker's I/O options name its default Redis server (``redis_url``) and storage root
(``storage_root``); ``stores`` names more of them (``name -> redis:// URL or directory``).
A key ``@name/rest`` addresses key (or object) ``rest`` of store ``name``; any other key
addresses the default.  Only configured stores can be addressed, so a compute function that
returns keys can never make an I/O function reach another server or directory.  Placement
reads the same addresses to run an I/O function near its storage
(:mod:`dandelion.planner.topology`).

>>> from dandelion.io import IoConfig
>>> from dandelion.io.stores import address
>>> config = IoConfig(stores={"n1": "/srv/n1", "c1": "redis://10.0.0.2:6379/0"})
>>> address(config, "redis", "@c1/user:7")
('redis://10.0.0.2:6379/0', 'user:7')
>>> address(config, "root", "@n1/logs/a.txt")
('/srv/n1', 'logs/a.txt')
>>> address(config, "redis", "user:7")
('redis://127.0.0.1:6379/0', 'user:7')
"""

from __future__ import annotations

from dandelion.io.errors import IoError

#: The first character of a key that names its store.
PREFIX = "@"
#: The kinds of store: a Redis server (``redis://`` URL) or a storage root (a directory).
KINDS = ("redis", "root")


def kind_of(location: str) -> str:
    """``redis`` for a ``redis://``/``rediss://``/``unix://`` URL, else ``root``."""
    return "redis" if location.startswith(("redis://", "rediss://", "unix://")) else "root"


def address(config: object, kind: str, key: str) -> tuple[str | None, str]:
    """The store (a Redis URL or a root directory, ``None`` where none is configured) that
    ``key`` addresses, and the key within it.

    Raises:
        IoError: ``key`` names a store that is not configured, or one of the other kind.
    """
    default = getattr(config, "redis_url" if kind == "redis" else "storage_root")
    if not key.startswith(PREFIX):
        return default, key
    name, sep, rest = key[1:].partition("/")
    stores = getattr(config, "stores", {}) or {}
    location = stores.get(name)
    if not sep or not rest or location is None:
        known = ", ".join(sorted(stores)) or "none"
        raise IoError(f"key {key!r:.80} names no configured store '{name}'",
                      hint=f"write '@store/key' with a store of the I/O option stores "
                           f"(configured: {known})")
    if kind_of(location) != kind:
        raise IoError(f"key {key!r:.80} names store '{name}' ({location}), which is not a "
                      f"{'Redis server' if kind == 'redis' else 'storage root'}")
    return location, rest


#: The I/O functions whose requests address storage, by entry: the kind of store.
ADDRESSED = {"kv_get": "redis", "kv_set": "redis", "kv_delete": "redis",
             "storage_read": "root", "storage_write": "root", "storage_delete": "root",
             "http": "http", "HTTP": "http", "system_HTTPGet": "http"}


def target(entry: str, config: object, item: object) -> tuple[str, str] | None:
    """Where one request item of the I/O function ``entry`` goes: ``(kind, location)``
    (``redis`` and a URL, ``root`` and a directory, ``http`` and ``host:port``), or ``None``
    where it cannot be told (another function, a malformed request, no store configured).

    >>> from dandelion.io import IoConfig
    >>> from dandelion.items import Item
    >>> from dandelion.io.stores import target
    >>> config = IoConfig(stores={"n1": "/srv/n1"})
    >>> target("storage_read", config, Item("@n1/a")), target("http", config, Item("http://h:81/x"))
    (('root', '/srv/n1'), ('http', 'h:81'))
    """
    kind = ADDRESSED.get(entry)
    if kind is None:
        return None
    value = getattr(item, "name", None) if entry in ("kv_set", "storage_write") else None
    value = value or getattr(item, "value", None)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    if kind == "http":
        from dandelion.io.values import HttpRequest

        try:
            url = HttpRequest.from_item_value(value).url
        except (ValueError, TypeError):
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return kind, f"{parts.hostname}:{port}"
    try:
        location, _ = address(config, kind, value)
    except IoError:
        return None
    return (kind, location) if location else None
