"""Encoding of item values to bytes and back, per element type.

Sandboxes, the wire format, caches and native functions see items as bytes; this module is
the one place that says how each element type is laid out:

===========  ==============================================================
``bytes``    as is
``str``      UTF-8
``int``      8 bytes, little-endian two's complement (int64)
``float``    8 bytes, little-endian IEEE 754 double
``bool``     one byte, 0 or 1
``json``     UTF-8 JSON text
``ndarray``  NumPy ``.npy`` format (no pickles)
``any``      bytes as is; other values cannot be encoded untyped
===========  ==============================================================

>>> decode(encode(-5, ElementType.INT), ElementType.INT)
-5
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any

from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType

#: The smallest and largest value an ``int`` item holds (int64).
INT64_RANGE = (-(2**63), 2**63 - 1)

#: The deepest nesting of lists and objects a ``json`` item holds.  Deeper values are refused
#: here, on every engine alike, well before Python's recursion limit, which ``json``, ``repr``
#: and pickling (Ray's cloudpickle takes two frames a level) run into at a depth that depends
#: on the caller's stack and the Python version.
MAX_JSON_DEPTH = 256


def _fail(value: Any, element: ElementType, why: str, hint: str | None = None
          ) -> EncodingError:
    try:
        shown = repr(value)
    except RecursionError:
        shown = f"a {type(value).__name__}"
    shown = shown if len(shown) < 60 else shown[:57] + "..."
    return EncodingError(f"cannot encode {shown} as {element}: {why}", hint=hint)


_TOO_DEEP = f"nested more than {MAX_JSON_DEPTH} levels deep"
_FLATTEN = "flatten the value, or pass it as str or bytes and parse it inside the function"


def _too_deep(value: Any) -> bool:
    """Whether lists and objects nest in ``value`` more than :data:`MAX_JSON_DEPTH` deep
    (iteratively, so that any depth can be measured)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                if depth >= MAX_JSON_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def too_deep(value: Any, text: str | bytes | None = None) -> bool:
    """Whether ``value`` (read from ``text``, when given: a cheap bound first) nests lists and
    objects more than :data:`MAX_JSON_DEPTH` deep.

    >>> too_deep([[1]]), too_deep("[" * 300 + "]" * 300, None)
    (False, False)
    >>> import json; too_deep(json.loads("[" * 300 + "]" * 300))
    True
    """
    if text is not None and not _many_brackets(text):
        return False
    return isinstance(value, (dict, list, tuple)) and _too_deep(value)


def _many_brackets(text: str | bytes) -> bool:
    """A cheap bound: no more openings than the limit means no deeper nesting."""
    opening = ("[", "{") if isinstance(text, str) else (b"[", b"{")
    return text.count(opening[0]) + text.count(opening[1]) > MAX_JSON_DEPTH  # type: ignore[arg-type]


def encode(value: Any, element: ElementType) -> bytes:
    """The bytes of ``value`` as element type ``element``.

    Raises:
        EncodingError: the value does not fit the element type.
    """
    if element in (ElementType.BYTES, ElementType.ANY):
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if element is ElementType.ANY:
            raise _fail(value, element, "an untyped set holds bytes; annotate the function "
                        "with the value's type")
        raise _fail(value, element, f"expected bytes, got {type(value).__name__}")
    if element is ElementType.STR:
        if not isinstance(value, str):
            raise _fail(value, element, f"expected str, got {type(value).__name__}")
        return value.encode("utf-8", "surrogatepass")
    if element is ElementType.INT:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(value, element, f"expected int, got {type(value).__name__}")
        try:
            return struct.pack("<q", value)
        except struct.error:
            raise _fail(value, element, "does not fit in 64 bits") from None
    if element is ElementType.FLOAT:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _fail(value, element, f"expected float, got {type(value).__name__}")
        return struct.pack("<d", value)
    if element is ElementType.BOOL:
        if not isinstance(value, bool):
            raise _fail(value, element, f"expected bool, got {type(value).__name__}")
        return b"\x01" if value else b"\x00"
    if element is ElementType.JSON:
        try:
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise _fail(value, element, str(e)) from None
        except RecursionError:
            raise _fail(value, element, _TOO_DEEP, _FLATTEN) from None
        if _many_brackets(text) and isinstance(value, (dict, list, tuple)) and _too_deep(value):
            raise _fail(value, element, _TOO_DEEP, _FLATTEN)
        return text.encode()
    if element is ElementType.NDARRAY:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy is an optional dependency
            raise _fail(value, element, "numpy is not installed") from None
        if not isinstance(value, np.ndarray) or value.dtype.hasobject:
            raise _fail(value, element, "expected a numpy array without Python objects")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return buf.getvalue()
    raise _fail(value, element, "unknown element type")  # pragma: no cover


def decode(data: bytes | bytearray | memoryview, element: ElementType) -> Any:
    """The value that :func:`encode` turned into ``data``.

    Raises:
        EncodingError: ``data`` is not a valid encoding of ``element``.
    """
    try:
        if element in (ElementType.BYTES, ElementType.ANY):
            return bytes(data)
        if element is ElementType.STR:
            return bytes(data).decode("utf-8", "surrogatepass")
        if element is ElementType.INT:
            return struct.unpack("<q", data)[0]
        if element is ElementType.FLOAT:
            result = struct.unpack("<d", data)[0]
            return result if not math.isnan(result) else math.nan
        if element is ElementType.BOOL:
            if bytes(data) not in (b"\x00", b"\x01"):
                raise ValueError("a bool is one byte, 0 or 1")
            return data[0] == 1
        if element is ElementType.JSON:
            raw = bytes(data)
            value = json.loads(raw)
            if _many_brackets(raw) and isinstance(value, (dict, list)) and _too_deep(value):
                raise ValueError(_TOO_DEEP)
            return value
        if element is ElementType.NDARRAY:
            import numpy as np

            return np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise EncodingError(f"{len(data)} bytes are not a valid {element}: {e}") from None
    except RecursionError:
        raise EncodingError(f"{len(data)} bytes are not a valid {element}: {_TOO_DEEP}"
                            ) from None
    raise EncodingError(f"unknown element type {element!r}")  # pragma: no cover
