"""Values on the command line: parsing ``-i NAME=VALUE`` and printing results.

``-i NAME=VALUE`` gives one item of input ``NAME`` (repeat it for more items of a set);
``NAME[KEY]=VALUE`` sets the item's integer key; ``VALUE`` may be ``@FILE`` (the file's
content; ``@-`` for standard input) or ``@DIR`` (one item per file, named after it).
The text is converted to the input's element type.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from dandelion.codec import INT64_RANGE, MAX_JSON_DEPTH, too_deep
from dandelion.errors import InputError
from dandelion.ir.types import ElementType
from dandelion.items import Item
from dandelion.runtime.views import View

_ARG = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(\[(?P<key>-?\d+)\])?=(?P<value>.*)$",
                  re.DOTALL)


def _convert(raw: bytes, element: ElementType, where: str) -> Any:
    try:
        if element in (ElementType.BYTES, ElementType.ANY):
            return raw
        if element is ElementType.NDARRAY and raw.startswith(b"\x93NUMPY"):
            import numpy as np

            return np.load(io.BytesIO(raw), allow_pickle=False)
        text = raw.decode()
        if element is ElementType.STR:
            return text
        if element is ElementType.INT:
            return int(text.strip())
        if element is ElementType.FLOAT:
            return float(text.strip())
        if element is ElementType.BOOL:
            word = text.strip().lower()
            if word not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{text.strip()!r} is not true or false")
            return word in ("true", "1", "yes")
        if element is ElementType.JSON:
            return _json(text)
        if element is ElementType.NDARRAY:
            import numpy as np

            return np.array(_json(text))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{where}: cannot read it as {element}: {e}") from None
    except RecursionError:
        raise InputError(f"{where}: cannot read it as {element}: {_TOO_DEEP}",
                         hint=f"a json item nests at most {MAX_JSON_DEPTH} levels deep"
                         ) from None
    raise InputError(f"{where}: unsupported element type {element}")  # pragma: no cover


_TOO_DEEP = "it is nested too deeply"


def _json(text: str) -> Any:
    """``text`` read as JSON; ``RecursionError`` for a value nested deeper than a json item
    may be, whether or not ``json`` could read it on this stack."""
    value = json.loads(text)
    if too_deep(value, text):
        raise RecursionError(text[:20])
    return value
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, at: int) -> int:
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # ``*`` always matches


def _too_deep_input(text: str) -> str | None:
    """Which input of a JSON object of inputs is nested too deeply for ``json`` to read (the
    object read member by member), if it can be told."""
    decoder = json.JSONDecoder()
    at = _skip_space(text, 0)
    if text[at:at + 1] != "{":
        return None
    at += 1
    try:
        while True:
            at = _skip_space(text, at)
            if text[at:at + 1] != '"':
                return None
            name, at = decoder.raw_decode(text, at)
            at = _skip_space(text, at)
            if text[at:at + 1] != ":":
                return None
            at = _skip_space(text, at + 1)
            try:
                _, at = decoder.raw_decode(text, at)
            except RecursionError:
                return str(name)
            at = _skip_space(text, at)
            if text[at:at + 1] != ",":
                return None
            at += 1
    except ValueError:
        return None


def _read(value: str, where: str) -> list[tuple[str, bytes]]:
    if not value.startswith("@"):
        return [("", value.encode())]
    target = value[1:]
    if target == "-":
        return [("", sys.stdin.buffer.read())]
    path = Path(target)
    if path.is_dir():
        return [(p.name, p.read_bytes()) for p in sorted(path.iterdir()) if p.is_file()]
    try:
        return [(path.name, path.read_bytes())]
    except OSError as e:
        raise InputError(f"{where}: cannot read {target}: {e.strerror}") from None


def parse_inputs(args: Iterable[str], views: Mapping[str, View],
                 json_file: str | None = None) -> dict[str, Any]:
    """Inputs for :meth:`Program.bind` from ``-i`` arguments and an optional JSON file.

    Raises:
        InputError: malformed argument, unknown input, unreadable file or value.
    """
    values: dict[str, list[Item[Any]]] = {}
    if json_file is not None:
        try:
            text = Path(json_file).read_text() if json_file != "-" else sys.stdin.read()
            doc = json.loads(text)
        except (OSError, ValueError) as e:
            raise InputError(f"--inputs {json_file}: {e}") from None
        except RecursionError:
            name = _too_deep_input(text)
            where = f"input '{name}'" if name is not None else "the document"
            raise InputError(f"--inputs {json_file}: {where} is nested too deeply to read",
                             hint=f"a json item nests at most {MAX_JSON_DEPTH} levels deep"
                             ) from None
        if not isinstance(doc, dict):
            raise InputError(f"--inputs {json_file}: expected a JSON object of inputs")
        for name, value in doc.items():
            if too_deep(value):
                raise InputError(f"--inputs {json_file}: input '{name}' is nested too deeply "
                                 "to read",
                                 hint=f"a json item nests at most {MAX_JSON_DEPTH} levels deep")
        for name, value in doc.items():
            view = views.get(name)
            if view is None:
                raise InputError(f"--inputs {json_file}: unknown input '{name}'",
                                 hint=f"inputs: {', '.join(views)}")
            many = value if view.type.is_set and isinstance(value, list) else [value]
            values.setdefault(name, [])  # [] is an empty set, not a missing input
            for v in many:
                if view.type.element is ElementType.BYTES and isinstance(v, str):
                    v = v.encode()
                values.setdefault(name, []).append(Item(v))
    for arg in args:
        m = _ARG.match(arg)
        if m is None:
            raise InputError(f"-i {arg!r}: expected NAME=VALUE, NAME[KEY]=VALUE or NAME=@FILE")
        name = m["name"]
        view = views.get(name)
        if view is None:
            raise InputError(f"-i {arg!r}: unknown input '{name}'",
                             hint=f"inputs: {', '.join(views) or '(none)'}")
        key = int(m["key"]) if m["key"] is not None else 0
        if not INT64_RANGE[0] <= key <= INT64_RANGE[1]:
            raise InputError(f"-i {arg!r}: key {key} is out of range: keys are 64-bit "
                             f"integers ({INT64_RANGE[0]} to {INT64_RANGE[1]})")
        values.setdefault(name, [])  # an empty directory is an empty set
        for item_name, raw in _read(m["value"], f"input '{name}'"):
            value = _convert(raw, view.type.element, f"input '{name}'")
            values.setdefault(name, []).append(Item(value, key=key, name=item_name))
    out: dict[str, Any] = {}
    for name, items in values.items():
        view = views[name]
        if view.type.is_set:
            out[name] = items
        elif len(items) != 1:
            raise InputError(f"input '{name}' takes one item but {len(items)} were given")
        else:
            out[name] = items[0] if view.items or items[0].key or items[0].name \
                else items[0].value
    return out


def to_jsonable(value: Any) -> Any:
    """``value`` as JSON data: bytes as text (or ``{"base64": …}``), arrays as lists."""
    if isinstance(value, Item):
        return {"key": value.key, "name": value.name, "value": to_jsonable(value.value)}
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: to_jsonable(v) for k, v in zip(value._fields, value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def render(value: Any) -> str:
    """A human-readable rendering of a run's result."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return "\n".join(f"{k}: {render(v)}" for k, v in zip(value._fields, value))
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return repr(bytes(value))
    if isinstance(value, list):
        return "\n".join(render(v) for v in value)
    if isinstance(value, Item):
        return f"[key {value.key}{' ' + value.name if value.name else ''}] {render(value.value)}"
    if isinstance(value, (dict,)):
        return json.dumps(value)
    return str(value)
