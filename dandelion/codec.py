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

import ast
import functools
import json
import math
import re
import struct
import sys
from typing import Any, Sequence

from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType

#: The smallest and largest value an ``int`` item holds (int64).
INT64_RANGE = (-(2**63), 2**63 - 1)

#: The deepest nesting of lists and objects a ``json`` item holds.  Deeper values are refused
#: here, on every engine alike, well before Python's recursion limit, which ``json``, ``repr``
#: and pickling (Ray's cloudpickle takes two frames a level) run into at a depth that depends
#: on the caller's stack and the Python version.
MAX_JSON_DEPTH = 256


def ndarray_class() -> Any:
    """numpy's ``ndarray`` class, or ``None`` while numpy is not imported.

    Never imports numpy, and never fails on a numpy that another thread is importing right
    now (a Ray node worker unpickles one function, importing numpy, while it reads another's
    types or keys its inputs): such a numpy has no ``ndarray`` yet, and no array exists.

    >>> import numpy
    >>> from dandelion.codec import ndarray_class
    >>> ndarray_class() is numpy.ndarray
    True
    """
    return getattr(sys.modules.get("numpy"), "ndarray", None)


def python_scalar(value: Any) -> Any:
    """The Python ``int``, ``float`` or ``bool`` that a numpy scalar of those kinds stands
    for (what ``m.sum()``, ``m.mean()`` or ``(m > 0).any()`` return), else ``value``
    itself.  Never imports numpy.

    >>> import numpy as np
    >>> from dandelion.codec import python_scalar
    >>> python_scalar(np.int64(3)), python_scalar(np.float32(0.5)), python_scalar(np.bool_(1))
    (3, 0.5, True)
    >>> python_scalar("a"), python_scalar(np.arange(2)).tolist()
    ('a', [0, 1])
    >>> python_scalar(np.longdouble(1.5))  # no Python number holds it
    np.longdouble('1.5')
    """
    np: Any = sys.modules.get("numpy")
    number = getattr(np, "number", None)
    if number is not None and (isinstance(value, number) and not
                               isinstance(value, np.complexfloating) or
                               isinstance(value, np.bool_)):
        scalar = value.item()
        if type(scalar) in _SCALARS:  # (a longdouble's item is a longdouble)
            return scalar
    return value


def _json_default(value: Any) -> Any:
    """What ``json.dumps`` writes for a value it has no rule for: a numpy scalar as the
    Python number it stands for (``{"max": m.max()}``)."""
    scalar = python_scalar(value)
    if scalar is value:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return scalar


def _fail(value: Any, element: ElementType, why: str, hint: str | None = None
          ) -> EncodingError:
    try:
        shown = repr(value)
    except RecursionError:
        shown = f"a {type(value).__name__}"
    shown = shown if len(shown) < 60 else shown[:57] + "..."
    return EncodingError(f"cannot encode {shown} as {element}: {why}", hint=hint)


_TOO_DEEP = f"nested more than {MAX_JSON_DEPTH} levels deep"
#: The hint where raw bytes reach a typed parameter (a .npy file given to an untyped input)
RAW_BYTES_HINT = ("bytes reach a function's typed parameter as they are, e.g. a file given "
                  "to an untyped composition input (dandelion run ... -i NAME=@FILE.npy): "
                  "declare the input's type (NAME: np.ndarray) so that the file is decoded, "
                  "or pass a value of that type (np.load(FILE))")
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

    >>> import json
    >>> from dandelion.codec import too_deep
    >>> too_deep([[1]]), too_deep("[" * 300 + "]" * 300, None)
    (False, False)
    >>> too_deep(json.loads("[" * 300 + "]" * 300))
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
    if element in (ElementType.INT, ElementType.FLOAT, ElementType.BOOL) and \
            type(value) not in _SCALARS:
        value = python_scalar(value)
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
            text = json.dumps(value, allow_nan=False, separators=(",", ":"),
                              default=_json_default)
        except (TypeError, ValueError) as e:
            raise _fail(value, element, str(e)) from None
        except RecursionError:
            raise _fail(value, element, _TOO_DEEP, _FLATTEN) from None
        if _many_brackets(text) and isinstance(value, (dict, list, tuple)) and _too_deep(value):
            raise _fail(value, element, _TOO_DEEP, _FLATTEN)
        return text.encode()
    if element is ElementType.NDARRAY:
        try:
            import numpy  # noqa: F401
        except ImportError:  # pragma: no cover - numpy is an optional dependency
            raise _fail(value, element, "numpy is not installed") from None
        header, data = npy_parts(value)
        return header + data
    raise _fail(value, element, "unknown element type")  # pragma: no cover


def decode(data: bytes | bytearray | memoryview, element: ElementType, view: bool = False
           ) -> Any:
    """The value that :func:`encode` turned into ``data``.

    With ``view``, an ``ndarray`` is a view of ``data`` instead of a copy (read-only where
    ``data`` is: the ``bytes`` of a request body), which keeps ``data`` alive.

    >>> import numpy as np
    >>> data = encode(np.arange(3), ElementType.NDARRAY)
    >>> a = decode(data, ElementType.NDARRAY, view=True)
    >>> a.tolist(), a.flags.writeable, decode(data, ElementType.NDARRAY).flags.writeable
    ([0, 1, 2], False, True)

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
            try:
                return decode_npy(memoryview(data), not view)
            except EncodingError as e:
                raise ValueError(e.message) from None
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise EncodingError(f"{len(data)} bytes are not a valid {element}: {e}") from None
    except RecursionError:
        raise EncodingError(f"{len(data)} bytes are not a valid {element}: {_TOO_DEEP}"
                            ) from None
    raise EncodingError(f"unknown element type {element!r}")  # pragma: no cover


def infer_element(value: Any) -> ElementType:
    """The element type a value of an untyped (``any``) declaration travels as.

    Raises:
        EncodingError: a value of no element type.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ElementType.BYTES
    if isinstance(value, str):
        return ElementType.STR
    if isinstance(value, bool):
        return ElementType.BOOL
    if isinstance(value, int):
        return ElementType.INT
    if isinstance(value, float):
        return ElementType.FLOAT
    if type(value).__name__ == "ndarray":
        return ElementType.NDARRAY
    scalar = python_scalar(value)
    if scalar is not value:  # np.int64, np.float32, np.bool_
        return infer_element(scalar)
    if value is None or isinstance(value, (dict, list, tuple)):
        return ElementType.JSON
    if isinstance(value, (set, frozenset)):
        raise EncodingError(f"a {type(value).__name__} cannot cross a sandbox boundary",
                            hint="a set has no order and no JSON form: give or return a list "
                                 "(sorted(...)), or declare list[T] (a set of items)")
    raise EncodingError(f"a {type(value).__name__} cannot cross a sandbox boundary untyped",
                        hint="annotate the parameter or result with its type (bytes, str, "
                             "int, float, bool, dict, numpy.ndarray)")


#: the Python type each scalar element type decodes to (a value of it crosses unchanged)
EXACT: dict[ElementType, type] = {
    ElementType.INT: int, ElementType.FLOAT: float, ElementType.STR: str,
    ElementType.BYTES: bytes, ElementType.BOOL: bool}
_JSON_LEAVES = frozenset({int, float, str, bool, type(None)})
#: the Python scalar classes (a numpy scalar is not one of them: :func:`python_scalar`)
_SCALARS = frozenset({int, float, bool})


def crossed(value: Any, element: ElementType) -> Any:
    """``value`` as a function in a sandbox receives it, sent as ``element`` (``any``: as
    :func:`infer_element` says): ``decode(encode(value, element), element)``, or ``value``
    itself where that is already what it is (an ``int`` as an ``int``, a list of plain JSON
    values, a C-ordered ``ndarray``), or where it cannot be encoded (left to the function).

    An engine that calls a function in the caller's process (``inline``) hands it its
    inputs, and the caller its outputs, through this, so that a function sees the same
    values on every engine, and a result kept under its inputs' encoding (the cache's key)
    is the result of each value that encodes alike:

    >>> crossed((1, 2), ElementType.JSON), crossed(3, ElementType.FLOAT)
    ([1, 2], 3.0)
    >>> crossed(bytearray(b"ab"), ElementType.ANY), crossed({1: "a"}, ElementType.JSON)
    (b'ab', {'1': 'a'})
    """
    kind = type(value)
    try:
        if element is ElementType.ANY:
            element = infer_element(value)
        exact = EXACT.get(element)
        if exact is not None:
            if kind is exact:
                return value
        elif element is ElementType.JSON:
            if _plain_json(value):
                return value
        elif element is ElementType.NDARRAY:
            if kind is ndarray_class() and value.flags.c_contiguous:
                return value
        return decode(encode(value, element), element)
    except EncodingError:
        return value


def _plain_json(value: Any) -> bool:
    """Whether ``value`` is what JSON decodes to: lists, dicts with ``str`` keys, and
    ``int``, ``float``, ``str``, ``bool`` and ``None``, of exactly those types."""
    kind = type(value)
    if kind in _JSON_LEAVES:
        return True
    if kind is list:
        return set(map(type, value)) <= _JSON_LEAVES or all(map(_plain_json, value))
    if kind is dict:
        return all(type(k) is str for k in value) and \
            (set(map(type, value.values())) <= _JSON_LEAVES or
             all(map(_plain_json, value.values())))
    return False


def npy_parts(value: Any) -> tuple[bytes, memoryview]:
    """The ``.npy`` header of an array and a view of its data, in C order: the one ``.npy``
    encoding of Dandelion (what crosses a sandbox, what :func:`encode` writes, what the
    result cache hashes).

    Raises:
        EncodingError: ``value`` is not an ndarray, or holds Python objects.
    """
    import numpy as np

    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
        raise _fail(value, ElementType.NDARRAY, "expected a numpy array without Python objects",
                    RAW_BYTES_HINT if isinstance(value, (bytes, bytearray, memoryview)) else None)
    arr = value if type(value) is np.ndarray and value.flags.c_contiguous \
        else np.ascontiguousarray(value)
    dtype = arr.dtype
    # a plain type in native byte order: its str is its descr (a record dtype's is a list)
    descr: Any = dtype.str if dtype.isbuiltin == 1 else np.lib.format.dtype_to_descr(dtype)
    header = _npy_header(descr, arr.shape) if type(descr) is str else \
        npy_header(descr, arr.shape)
    flat: Any = arr.reshape(-1).view(np.uint8)
    return header, memoryview(flat)


def npy_header(descr: Any, shape: Sequence[int]) -> bytes:
    """A ``.npy`` version 1.0 header (magic, length, dict, padding to 64 bytes)."""
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    total = 10 + len(text) + 1
    text += " " * ((-total) % 64) + "\n"
    raw = text.encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw


#: the headers of the arrays seen last (a plain dtype and a shape: often the same each run)
_npy_header = functools.lru_cache(maxsize=256)(npy_header)


_SIMPLE_NPY = re.compile(r"\{'descr': '([<>|=][a-zA-Z]\d*)', 'fortran_order': (True|False), "
                         r"'shape': \(([\d, ]*)\), \}\s*$")


def _npy_meta(header: bytes) -> tuple[Any, tuple[int, ...], str, int]:
    """The dtype, shape, order and element count a ``.npy`` header's text says.

    Raises:
        EncodingError: the header is malformed, or describes Python objects.
    """
    import numpy as np

    text = header.decode("latin1")
    try:
        simple = _SIMPLE_NPY.match(text)
        if simple:  # the header numpy and the C SDK write: no need for a Python parser
            dtype = np.dtype(simple.group(1))
            shape = tuple(int(n) for n in simple.group(3).replace(",", " ").split())
            order = "F" if simple.group(2) == "True" else "C"
        else:
            meta = ast.literal_eval(text)
            dtype = np.lib.format.descr_to_dtype(meta["descr"])
            shape = tuple(int(n) for n in meta["shape"])
            order = "F" if meta["fortran_order"] else "C"
    except Exception as e:  # malformed header from an untrusted producer
        raise EncodingError(f"malformed .npy header: {e}") from None
    if dtype.hasobject:
        raise EncodingError("an ndarray of Python objects cannot be decoded")
    count = 1
    for n in shape:
        if n < 0:
            raise EncodingError("negative dimension in .npy header")
        count *= n
    return dtype, shape, order, count


#: the headers read last (up to :data:`_KEPT_HEADER` bytes each: the same shapes arrive
#: again and again, and a header is parsed in Python)
_kept_npy_meta = functools.lru_cache(maxsize=256)(_npy_meta)
_KEPT_HEADER = 512


def decode_npy(data: memoryview, copy: bool) -> Any:
    """The array whose ``.npy`` encoding is ``data``: a view of it, or a copy.

    Raises:
        EncodingError: ``data`` is not a ``.npy`` encoding Dandelion reads (no pickles).
    """
    import numpy as np

    raw = bytes(data[:12])
    if len(raw) < 10 or raw[:6] != b"\x93NUMPY":
        raise EncodingError("an ndarray item does not start with the .npy magic")
    major = raw[6]
    if major == 1:
        hlen, start = struct.unpack("<H", raw[8:10])[0], 10
    elif major in (2, 3) and len(raw) >= 12:
        hlen, start = struct.unpack("<I", raw[8:12])[0], 12
    else:
        raise EncodingError(f"unsupported .npy version {major}")
    if start + hlen > len(data):
        raise EncodingError("truncated .npy header")
    header = bytes(data[start:start + hlen])
    dtype, shape, order, count = (_kept_npy_meta if hlen <= _KEPT_HEADER else _npy_meta)(header)
    offset = start + hlen
    if offset + count * dtype.itemsize > len(data):
        raise EncodingError(f"the .npy data is shorter than its shape {shape} needs")
    flat: Any = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    arr = flat.reshape(shape, order=order)
    return arr.copy() if copy else arr
