"""Sets whose items are fixed when a composition is written: constants and default inputs.

A value written in a composition's body (``scale(x, 3.0)``) is a *constant*: an ephemeral
set of the composition that no function produces and whose items the IR holds
(:attr:`SetDecl.value <dandelion.ir.SetDecl>`); a ``@dd.composition``'s parameter with a
default value (``factor: float = 3.0``) is a direct input that holds such items too, which
a run that leaves the input out gets.  The IR is plain data, so the items are held as text:
a JSON list with, per item, its element type, its bytes as they cross a sandbox
(:func:`~dandelion.codec.encode`, base64) and, where it has them, its key and name.  Being
part of the IR, a constant is part of the composition's content hash, and so of every cache
key that depends on it (``docs/caching.rst``).

>>> from dandelion.constants import read, write
>>> from dandelion.ir import DataType
>>> text = write(3.0, DataType.parse("item[float]"), "argument 'factor' of 'scale'")
>>> text
'[{"data": "AAAAAAAACEA=", "key": 0, "type": "float"}]'
>>> read(text)
(Item(value=3.0, key=0, name=''),)
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from typing import Any

from dandelion.codec import decode, encode, infer_element
from dandelion.errors import CompositionError, DandelionError, EncodingError
from dandelion.ir.types import DataType, ElementType
from dandelion.items import Item

#: the text of no items: what a function's parameter with a default gets when a run leaves
#: it out (the sandbox then calls the function without it, and its default applies)
NONE = "[]"

#: element types whose decoded values cannot be changed in place: their items are decoded
#: once and shared by every run (a list, a dict or an array is decoded for each run, so
#: that a function that changes its input in place, on an engine that runs it in this
#: process, changes its own copy)
_IMMUTABLE = frozenset({ElementType.INT, ElementType.FLOAT, ElementType.BOOL, ElementType.STR,
                        ElementType.BYTES})


def write(value: Any, type: DataType, where: str) -> str:
    """The text that holds ``value`` as the items of a set of ``type`` (one item for an
    ``item`` type; for a ``set`` type, one per element of a list or tuple, or one
    :class:`~dandelion.items.Item` each).

    Raises:
        EncodingError: the value is not one of the type (``where`` names it).
    """
    from dandelion.runtime.views import View, from_python

    out = []
    try:
        for item in from_python(value, View(type), where, returned=False):
            element = type.element if type.element is not ElementType.ANY else \
                infer_element(item.value)
            entry: dict[str, Any] = {"type": element.value, "data": base64.b64encode(
                encode(item.value, element)).decode()}
            if item.key is not None:
                entry["key"] = item.key
            if item.name:
                entry["name"] = item.name
            out.append(entry)
    except DandelionError as e:
        message = e.message if e.message.startswith(where) else f"{where}: {e.message}"
        raise EncodingError(message, hint=e.hint) from None
    return json.dumps(out, sort_keys=True)


def read(text: str) -> tuple[Item[Any], ...]:
    """The items that :func:`write` held as ``text``.

    Raises:
        CompositionError: ``text`` is not such a list (a hand-written IR document).
    """
    shared, fresh = _parsed(text)
    if not fresh:
        return shared
    return tuple(_item(entry) for entry in fresh)


def check(text: str, where: str) -> str | None:
    """Why ``text`` holds no items :func:`read` can read (``None``: it does); for
    :mod:`dandelion.ir.verify`."""
    try:
        read(text)
    except CompositionError as e:
        return f"{where}: {e.message}"
    return None


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> tuple[tuple[Item[Any], ...], tuple[dict[str, Any], ...]]:
    """``text``'s items decoded once where none can change (else none, and its entries to
    decode for each run)."""
    try:
        entries = json.loads(text)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("not a list of objects")
        parsed = tuple(_entry(e) for e in entries)
        items = tuple(_item(e) for e in parsed)
    except (ValueError, TypeError, KeyError, binascii.Error, DandelionError) as e:
        raise CompositionError(f"the items of a constant set are malformed: {e}") from None
    if all(ElementType(e["type"]) in _IMMUTABLE for e in parsed):
        return items, ()
    return (), parsed


def _entry(entry: dict[str, Any]) -> dict[str, Any]:
    unknown = set(entry) - {"type", "data", "key", "name"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    key, name = entry.get("key"), entry.get("name", "")
    if key is not None and (not isinstance(key, int) or isinstance(key, bool)):
        raise ValueError("a key is an integer")
    if not isinstance(name, str):
        raise ValueError("a name is a string")
    return {"type": ElementType(entry["type"]).value,
            "data": base64.b64decode(entry["data"], validate=True), "key": key, "name": name}


def _item(entry: dict[str, Any]) -> Item[Any]:
    return Item(decode(entry["data"], ElementType(entry["type"])), key=entry["key"],
                name=entry["name"])
