"""The wire format of sets and items: msgpack (binary-safe) or JSON (for convenience).

A request body or response is a map; sets are lists of items; an item is either the full
form ``{"value": V, "key": 0, "name": "", "type": "int"}`` (``key``, ``name`` and
``type`` optional) or a bare ``V`` (key 0, no name).  A map is read as the full form when
it has a ``value`` entry and no entries but ``value``, ``key``, ``name`` and ``type``
(wrap a JSON value of that shape as ``{"value": ...}``).  Responses always use the full
form.

``V`` depends on the declared element type:

===========  ==========================  ==============================================
element      msgpack                     JSON
===========  ==========================  ==============================================
``bytes``    bin                         ``{"base64": "..."}`` or a string (UTF-8)
``any``      bin, or see below           as ``bytes``, or see below
``str``      str                         string
``int``      int (int64)                 number
``float``    float                       number, or ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
``bool``     bool                        ``true`` / ``false``
``json``     any msgpack value           any JSON value
``ndarray``  bin holding ``.npy`` bytes  ``{"base64": "..."}`` of ``.npy`` bytes
===========  ==========================  ==============================================

An item of an untyped (``any``) set says what its value is with ``type`` (one of the
element types above but ``any``), and ``V`` is written as for that type: the client and
the server tag every untyped item they send this way, and a value arrives as what it was
(an int as an int, an array as an array).  Without ``type``, a string or binary ``V`` is
bytes (as its UTF-8 encoding) and any other JSON value is itself.  In a typed set,
``type`` may only repeat the declared element type.

>>> from dandelion.ir import DataType
>>> from dandelion.server.wire import decode_sets, encode_sets
>>> sets = decode_sets({"n": [{"value": 3, "key": 1}]}, {"n": DataType.parse("set[int]")})
>>> sets["n"][0]
Item(value=3, key=1, name='')
>>> encode_sets(sets, {"n": DataType.parse("set[int]")}, binary=False)
{'n': [{'value': 3, 'key': 1, 'name': ''}]}
>>> encode_sets(sets, {"n": DataType.parse("set")}, binary=False)  # untyped: tagged
{'n': [{'value': 3, 'key': 1, 'name': '', 'type': 'int'}]}
>>> decode_sets({"n": [{"value": 3, "type": "int"}, "3"]}, {"n": DataType.parse("set")})
{'n': (Item(value=3, key=0, name=''), Item(value=b'3', key=0, name=''))}
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any, Mapping

from dandelion import constants
from dandelion.codec import (
    INT64_RANGE,
    crossed,
    decode,
    encode,
    infer_element,
    npy_parts,
    python_scalar,
)
from dandelion.errors import DandelionError, EncodingError, InputError
from dandelion.ir.types import DataType, ElementType
from dandelion.items import Item

MSGPACK = "application/msgpack"
JSON = "application/json"
_MSGPACK_TYPES = (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")
_ITEM_KEYS = frozenset({"value", "key", "name", "type"})
#: the element types an untyped item may say it holds (``"type"``)
TAGS = {e.value: e for e in ElementType if e is not ElementType.ANY}
_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_NUMBERS = (ElementType.INT, ElementType.FLOAT, ElementType.BOOL)
_NUMBER_TYPES = (int, float, bool)


class WireError(InputError):
    """A body that is not valid in the wire format (a 400 answer)."""


def is_msgpack(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` or ``Accept`` value names msgpack."""
    return bool(content_type) and any(t in content_type for t in _MSGPACK_TYPES)  # type: ignore


def loads(data: bytes, content_type: str | None) -> Any:
    """Parse a request body.

    Raises:
        WireError: the body is not valid msgpack/JSON.
    """
    if is_msgpack(content_type):
        import msgpack

        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        except msgpack.StackError:
            raise WireError("the body is not valid msgpack: nested too deeply") from None
        except Exception as e:
            raise WireError(f"the body is not valid msgpack: {str(e) or type(e).__name__}"
                            ) from None
    try:
        return json.loads(data or b"null")
    except RecursionError:
        raise WireError("the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(f"the body is not valid JSON: {e}",
                        hint="send JSON, or msgpack with Content-Type: application/msgpack"
                        ) from None


def dumps(value: Any, binary: bool) -> bytes:
    """Serialize a response body."""
    if binary:
        import msgpack

        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def _bytes_in(value: Any, where: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise WireError(f"{where}: invalid base64: {e}") from None
    raise WireError(f"{where}: expected bytes (binary, a string or {{\"base64\": ...}}), "
                    f"got {_kind(value)}")


def binary_field(value: Any, where: str) -> bytes:
    """Binary data of a request field: bin in msgpack, ``{"base64": "..."}`` in JSON.

    Raises:
        WireError: anything else (a plain string is refused: it cannot hold binary data).
    """
    if isinstance(value, str):
        raise WireError(f"{where}: binary data travels as msgpack bin or as "
                        "{\"base64\": \"...\"} in JSON, not as a string",
                        hint=f"send {{\"{where}\": {{\"base64\": \"$(base64 -w0 FILE)\"}}}}")
    return _bytes_in(value, where)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "an integer", float: "a number",
            bytes: "binary data"}.get(type(value), type(value).__name__)


def decode_value(value: Any, element: ElementType, where: str, view: bool = False) -> Any:
    """The Python value of one wire value of ``element``; with ``view``, an ``ndarray`` is a
    read-only view of the wire's bytes (see :func:`decode_sets`).

    Raises:
        WireError: the value does not fit the element type.
    """
    if element is ElementType.ANY and not isinstance(value, (str, bytes, bytearray)) and \
            not (isinstance(value, dict) and set(value) == {"base64"}):
        element = ElementType.JSON  # an untagged untyped value that cannot be bytes
    if element in (ElementType.BYTES, ElementType.ANY):
        return _bytes_in(value, where)
    if element is ElementType.STR:
        if not isinstance(value, str):
            raise WireError(f"{where}: expected a string, got {_kind(value)}")
        return value
    if element is ElementType.INT:
        if not isinstance(value, int) or isinstance(value, bool):
            raise WireError(f"{where}: expected an integer, got {_kind(value)}")
        if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            raise WireError(f"{where}: {value} does not fit in 64 bits")
        return value
    if element is ElementType.FLOAT:
        if isinstance(value, str) and value in _FLOATS:
            return _FLOATS[value]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise WireError(f"{where}: expected a number, got {_kind(value)}")
        return float(value)
    if element is ElementType.BOOL:
        if not isinstance(value, bool):
            raise WireError(f"{where}: expected true or false, got {_kind(value)}")
        return value
    if element is ElementType.JSON:
        try:
            json.dumps(value, allow_nan=False)
        except RecursionError:
            raise WireError(f"{where}: nested too deeply") from None
        except (TypeError, ValueError) as e:
            raise WireError(f"{where}: not a JSON value: {e}") from None
        return value
    if element is ElementType.NDARRAY:
        try:
            return decode(_bytes_in(value, where), ElementType.NDARRAY, view)
        except EncodingError as e:
            raise WireError(f"{where}: {e.message}") from None
    raise WireError(f"{where}: unknown element type {element}")  # pragma: no cover


def encode_value(value: Any, element: ElementType, binary: bool, where: str) -> Any:
    """The wire value of one Python value of ``element``.

    Raises:
        EncodingError: the value cannot be represented as ``element``.
    """
    if element is ElementType.JSON:
        encode(value, element)  # checks it is JSON
        return crossed(value, element)  # as JSON reads it: a tuple a list, np.int64 an int
    if element in _NUMBERS and type(value) not in _NUMBER_TYPES:
        value = python_scalar(value)  # a numpy scalar: the number it stands for
    if element is ElementType.FLOAT and isinstance(value, float) and not math.isfinite(value):
        return value if binary else ("NaN" if math.isnan(value) else
                                     "Infinity" if value > 0 else "-Infinity")
    if element in (ElementType.STR, ElementType.INT, ElementType.FLOAT, ElementType.BOOL):
        encode(value, element)  # checks the type and range
        return value
    data = encode(value, element)
    return data if binary else {"base64": base64.b64encode(data).decode()}


def decode_item(raw: Any, element: ElementType, where: str, view: bool = False) -> Item[Any]:
    """One wire item (full form or bare value) as an :class:`Item` (``view``: see
    :func:`decode_sets`)."""
    key, name, value = 0, "", raw
    if isinstance(raw, dict) and "value" in raw and set(raw) <= _ITEM_KEYS:
        value = raw["value"]
        key = raw.get("key", 0)
        name = raw.get("name", "")
        if not isinstance(key, int) or isinstance(key, bool):
            raise WireError(f"{where}.key: expected a 64-bit integer, got {_kind(key)}")
        if not INT64_RANGE[0] <= key <= INT64_RANGE[1]:
            raise WireError(f"{where}.key: expected a 64-bit integer, got {key}, which is out "
                            f"of range ({INT64_RANGE[0]} to {INT64_RANGE[1]})")
        if not isinstance(name, str):
            raise WireError(f"{where}.name: expected a string, got {_kind(name)}")
        if "type" in raw:
            element = _tagged(raw["type"], element, where)
        where = f"{where}.value"
    return Item(decode_value(value, element, where, view), key=key, name=name)


def decode_sets(data: Any, decls: Mapping[str, DataType], what: str = "inputs",
                view: bool = False, defaults: Mapping[str, str] | None = None
                ) -> dict[str, tuple[Item[Any], ...]]:
    """The sets of a wire map ``name -> list of items``, checked against ``decls``.  One in
    ``defaults`` (:attr:`Program.defaults <dandelion.program.Program.defaults>`) may be left
    out, and then holds its default's items; a function's parameter with a default (whose
    default holds no item) may also be given no item although declared an item: the
    function is then called without it.

    With ``view``, an ``ndarray`` is a read-only view of the wire's bytes, not a writable
    copy: for a runtime whose functions read copies of their inputs anyway
    (:attr:`~dandelion.runtime.backend.Backend.inputs_copied`), where the copy would only
    be copied again.

    Raises:
        WireError: unknown, missing or mistyped sets (every problem is named).
    """
    if not isinstance(data, dict):
        raise WireError(f"'{what}' must be an object mapping each input name to a list of "
                        f"items, got {_kind(data)}")
    unknown = sorted(str(k) for k in data if k not in decls)
    if unknown:
        raise WireError(f"unknown {what}: {', '.join(unknown)}",
                        hint=f"expected: {', '.join(decls) or '(none)'}")
    defaults = defaults or {}
    missing = [n for n in decls if n not in data and n not in defaults]
    if missing:
        raise WireError(f"missing {what}: {', '.join(missing)}",
                        hint="give every input, as a list of items (an empty list for none)")
    sets = {}
    for name, dtype in decls.items():
        if name not in data:  # left out: its default
            sets[name] = constants.read(defaults[name])
            continue
        raw = data[name]
        where = f"{what}.{name}"
        if not isinstance(raw, list):
            raise WireError(f"{where}: a set is a list of items, got {_kind(raw)}",
                            hint=f"write [{json.dumps(raw)[:40]}] for a single item"
                            if not isinstance(raw, (bytes, dict)) else None)
        if not dtype.is_set and len(raw) != 1 and (raw or defaults.get(name) != constants.NONE):
            raise WireError(f"{where} is declared {dtype}: give exactly one item, "
                            f"not {len(raw)}")
        sets[name] = tuple(decode_item(v, dtype.element, f"{where}[{i}]", view)
                           for i, v in enumerate(raw))
    return sets


def _tagged(tag: Any, declared: ElementType, where: str) -> ElementType:
    """The element type an item's ``type`` says, in a set declared ``declared``.

    Raises:
        WireError: no element type of that name, or another than a typed set's.
    """
    element = TAGS.get(tag) if isinstance(tag, str) else None
    if element is None:
        raise WireError(f"{where}.type: expected one of {', '.join(TAGS)}, got "
                        f"{json.dumps(tag) if isinstance(tag, str) else _kind(tag)}")
    if declared is not ElementType.ANY and element is not declared:
        raise WireError(f"{where}.type: the set is declared {declared}, not {element}",
                        hint="leave type out, or give the declared one")
    return element


def encode_sets(sets: Mapping[str, tuple[Item[Any], ...]], decls: Mapping[str, DataType],
                binary: bool, what: str = "output") -> dict[str, list[dict[str, Any]]]:
    """The wire map of ``sets`` (full item form; an untyped item says its ``type``);
    ``what`` the sets are, for errors (``"output"``, ``"input"``).

    Raises:
        EncodingError: an item cannot be represented as its declared element type.
    """
    out = {}
    for name, dtype in decls.items():
        items = []
        for i, item in enumerate(sets.get(name, ())):
            try:
                element = _sent_as(dtype.element, item.value)
                wire = {"value": encode_value(item.value, element, binary, f"{name}[{i}]"),
                        "key": item.key, "name": item.name}
            except DandelionError as e:
                raise EncodingError(f"{what} '{name}' item {i}: {e.message}") from None
            if element is not dtype.element:
                wire["type"] = element.value
            items.append(wire)
        out[name] = items
    return out


def _sent_as(declared: ElementType, value: Any) -> ElementType:
    """The element type an item of a set declared ``declared`` travels as: the declared
    one, or for an untyped set the value's own (said in the item's ``type``).

    Raises:
        EncodingError: an untyped value of no element type.
    """
    return declared if declared is not ElementType.ANY else infer_element(value)


def _bin_header(size: int) -> bytes:
    """msgpack's header of ``size`` bytes of bin, in its shortest form (as ``packb``)."""
    if size < 1 << 8:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 1 << 16:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def pack_outputs(sets: Mapping[str, tuple[Item[Any], ...]], decls: Mapping[str, DataType],
                 more: Mapping[str, Any] | None = None) -> bytes:
    """The msgpack body ``{"outputs": encode_sets(sets, decls, True), **more}``, byte for
    byte as :func:`dumps` writes it, with each ``ndarray``'s data copied once, from the
    array into the body (:func:`dumps` of :func:`encode_sets` copies it twice: into its
    ``.npy`` bytes, then into the body).

    >>> import msgpack, numpy as np
    >>> decls = {"r": DataType.parse("item[ndarray]"), "n": DataType.parse("set[int]")}
    >>> sets = {"r": (Item(np.eye(2)),), "n": (Item(1, key=2, name="a"),)}
    >>> body = pack_outputs(sets, decls, {"logs": []})
    >>> body == dumps({"outputs": encode_sets(sets, decls, True), "logs": []}, True)
    True
    >>> msgpack.unpackb(body)["outputs"]["n"]
    [{'value': 1, 'key': 2, 'name': 'a'}]
    >>> untyped = {"r": DataType.parse("item"), "n": DataType.parse("set")}
    >>> pack_outputs(sets, untyped) == dumps({"outputs": encode_sets(sets, untyped, True)}, True)
    True

    Raises:
        EncodingError: an item cannot be represented as its declared element type.
    """
    return b"".join(packed_outputs(sets, decls, more))


def packed_outputs(sets: Mapping[str, tuple[Item[Any], ...]], decls: Mapping[str, DataType],
                   more: Mapping[str, Any] | None = None) -> list[Any]:
    """The body of :func:`pack_outputs` in its parts (bytes, and each ``ndarray``'s data as
    it is), for a writer that joins them with what goes before them: the HTTP answer's head
    (:class:`~dandelion.server.protocol.Answer`), each array's data copied once in all.

    Raises:
        EncodingError: an item cannot be represented as its declared element type.
    """
    import msgpack

    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    more = more or {}
    parts: list[Any] = [packer.pack_map_header(1 + len(more)), _OUTPUTS,
                        packer.pack_map_header(len(decls))]
    for name, dtype in decls.items():
        items = sets.get(name, ())
        parts += (pack(name), packer.pack_array_header(len(items)))
        declared = dtype.element
        for i, item in enumerate(items):
            try:
                element = _sent_as(declared, item.value)
                parts.append(_ITEM_VALUE if element is declared else _TAGGED_VALUE)
                if element is ElementType.NDARRAY and hasattr(item.value, "dtype"):
                    header, data = npy_parts(item.value)
                    parts += (_bin_header(len(header) + len(data)), header, data)
                else:
                    parts.append(pack(encode_value(item.value, element, True, "")))
            except DandelionError as e:
                raise EncodingError(f"output '{name}' item {i}: {e.message}") from None
            parts += (_ITEM_KEY, pack(item.key), _ITEM_NAME, pack(item.name))
            if element is not declared:
                parts += (_ITEM_TYPE, pack(element.value))
    for key, value in more.items():
        parts += (pack(key), pack(value))
    return parts


#: the fixed parts of a packed response: its one key and each item's keys (an untyped
#: item's map has a fourth, its type)
_OUTPUTS, _ITEM_VALUE, _ITEM_KEY, _ITEM_NAME = (b"\xa7outputs", b"\x83\xa5value", b"\xa3key",
                                                b"\xa4name")
_TAGGED_VALUE, _ITEM_TYPE = b"\x84\xa5value", b"\xa4type"
