"""Local object storage: files under the worker's ``IoConfig.storage_root``.

An object key is a relative path of ``/``-separated names (``logs/2024/a.txt``).  Keys that
are absolute, contain ``..``, ``.``, empty names, backslashes or NUL, or that resolve
through a symbolic link to outside the root are refused: a function cannot read or write
anything but the objects under the root.

=================  ======================================  ===============================
function           takes                                   gives
=================  ======================================  ===============================
``storage_read``   ``keys``: items whose value is a key    ``objects``: the content, named
                                                           after the key
``storage_write``  ``objects``: items named after the      ``keys``: the keys written
                   key, holding the content
``storage_delete`` ``keys``                                ``deleted``: 1 or 0 per key
=================  ======================================  ===============================

A key ``@name/key`` addresses object ``key`` under the root the I/O option ``stores`` names
``name`` (:mod:`dandelion.io.stores`); outputs are named after the key as it was given.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any, Sequence

from dandelion.io.engine import IoEngine, item_like
from dandelion.io.errors import IoError, OutboundPolicyError
from dandelion.io.functions import Items, platform_function
from dandelion.io.stores import address
from dandelion.items import Item

_MAX_KEY = 1024


def object_path(root: str, key: Any) -> str:
    """The file of object ``key`` under ``root``.

    Raises:
        OutboundPolicyError: the key would escape the root.
        IoError: the key is not a valid object key.

    >>> object_path("/srv/objects", "logs/a.txt")
    '/srv/objects/logs/a.txt'
    >>> object_path("/srv/objects", "../etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dandelion.io.errors.OutboundPolicyError: object key '../etc/passwd' may not contain ...
    """
    if isinstance(key, (bytes, bytearray)):
        try:
            key = bytes(key).decode()
        except UnicodeDecodeError:
            raise IoError("an object key is UTF-8 text") from None
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise IoError(f"an object key is a non-empty string of at most {_MAX_KEY} "
                      f"characters, not {key!r:.60}")
    if "\x00" in key or "\\" in key or key.startswith("/"):
        raise OutboundPolicyError(f"object key {key!r:.80} must be a relative path without "
                                  "backslashes or NUL")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise OutboundPolicyError(f"object key {key!r:.80} may not contain '', '.' or '..' "
                                  "path components")
    path = os.path.join(root, *parts)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if not real.startswith(real_root + os.sep):
        raise OutboundPolicyError(f"object key {key!r:.80} resolves outside the storage root")
    return path


def _located(config: Any, root: str | None, key: Any) -> tuple[str, Any]:
    """The root and key within it of ``key`` (``@name/key`` names a store's root)."""
    if isinstance(key, (bytes, bytearray)):
        try:
            key = bytes(key).decode()
        except UnicodeDecodeError:
            raise IoError("an object key is UTF-8 text") from None
    if isinstance(key, str) and key.startswith("@"):
        where, key = address(config, "root", key)
        assert where is not None  # a configured store
        return where, key
    if not root:
        raise IoError("object storage is not configured on this worker",
                      hint="set the I/O option storage_root to a directory")
    return root, key


def _read(config: Any, root: str | None, key: Any) -> bytes | None:
    root, key = _located(config, root, key)
    path = object_path(root, key)
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _write(config: Any, root: str | None, key: str, data: bytes) -> None:
    root, key = _located(config, root, key)
    path = object_path(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    object_path(root, key)  # the directories just made must not lead outside either
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _delete(config: Any, root: str | None, key: Any) -> int:
    root, key = _located(config, root, key)
    path = object_path(root, key)
    try:
        os.unlink(path)
        return 1
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return 0


async def _each(engine: IoEngine, fn: Any, *args: Any) -> Any:
    async with engine.semaphore:
        try:
            return await asyncio.to_thread(fn, *args)
        except IoError:
            raise
        except OSError as e:
            raise IoError(f"object storage: {e.strerror or e}") from None


def _key_text(item: Item[Any]) -> str:
    v = item.value
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


@platform_function("storage_read", params=[("keys", "set[any]")],
                   results=[("objects", "set[bytes]")])
async def storage_read(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """Read every object; a missing object fails the instance."""
    config, items = engine.config, inputs[0]
    root = config.storage_root
    datas = await asyncio.gather(*(_each(engine, _read, config, root, i.value)
                                   for i in items))
    for item, data in zip(items, datas):
        if data is None:
            raise IoError(f"storage_read: no object {_key_text(item)!r}")
    return [tuple(Item(d, key=i.key, name=_key_text(i)) for i, d in zip(items, datas))]


@platform_function("storage_write", params=[("objects", "set[any]")],
                   results=[("keys", "set[str]")])
async def storage_write(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """Write every object under its item name (replacing it atomically)."""
    config, items = engine.config, inputs[0]
    root = config.storage_root
    for item in items:
        if not item.name:
            raise IoError(f"storage_write: object with key {item.key} has no name",
                          hint="name each object after its key: dd.Item(data, name=key)")
        if not isinstance(item.value, (bytes, bytearray, memoryview, str)):
            raise IoError(f"storage_write: object '{item.name}' must be bytes or str")
    def write_all() -> None:  # in item order, so a key written twice ends as the last
        for i in items:
            _write(config, root, i.name, i.value.encode() if isinstance(i.value, str)
                   else bytes(i.value))

    await _each(engine, write_all)
    return [tuple(Item(i.name, key=i.key, name=i.name) for i in items)]


@platform_function("storage_delete", params=[("keys", "set[any]")],
                   results=[("deleted", "set[int]")])
async def storage_delete(engine: IoEngine, inputs: Sequence[Items]) -> list[Items]:
    """Delete every object; each output is 1 if it existed, else 0."""
    config, items = engine.config, inputs[0]
    root = config.storage_root
    counts = await _each(engine, lambda: [_delete(config, root, i.value) for i in items])
    return [tuple(item_like(i, n) for i, n in zip(items, counts))]
