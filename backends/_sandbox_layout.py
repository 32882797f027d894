"""The byte layout of a memory context, shared by the worker, Python sandboxes and the C SDK.

A context is one shared-memory file (a memfd) mapped by the worker and by the sandbox.  All
integers are little-endian; offsets are from the start of the context::

    0    header (128 bytes)
           0  magic        8s   b"DDCTX01\\0"
           8  capacity     u64  size of the context in bytes
          16  n_in_sets    u32  number of input sets (one per parameter)
          20  n_in_items   u32  number of input items, all sets together
          24  in_sets      u64  offset of the input set table
          32  in_items     u64  offset of the input item table
          40  n_out_sets   u32  number of output sets (one per declared result)
          44  n_out_items  u32  number of output items written so far
          48  out_sets     u64  offset of the output set table
          56  heap_cur     u64  first free byte of the heap (grows up, 16-byte aligned)
          64  heap_end     u64  end of the heap = start of the output item table
    set table: one 32-byte entry per set
           0  name_off u64, 8 name_len u32, 12 element u32, 16 first_item u32,
          20  n_items u32, 24 reserved u64
    item table: one 48-byte entry per item
           0  data_off u64, 8 data_len u64, 16 key i64, 24 name_off u64, 32 name_len u32,
          36  element u32, 40 set u32, 44 reserved u32
    names and item data, then the heap
    output item table: grows *down* from ``capacity``; output ``i`` is at
          ``capacity - 48 * (i + 1)``; its data and name live in the heap.

Element codes (:data:`ELEMENT_CODES`): 0 means "as declared", then bytes, str, int, float,
bool, json, ndarray.  Item data is the :mod:`dandelion.codec` encoding of the value.
Large values (``bytes``, ``ndarray``) are written straight into the context (one copy in)
and read back from it once (one copy out); inside a Python sandbox an ``ndarray`` input is a
view of the context, not a copy.
"""

from __future__ import annotations

import ast
import re
import struct
from collections.abc import Sequence
from typing import Any

from dandelion.codec import decode, encode
from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType

MAGIC = b"DDCTX01\0"
HEADER = struct.Struct("<8sQIIQQIIQQQ")
HEADER_SIZE = 128
SET = struct.Struct("<QIIIIQ")
ITEM = struct.Struct("<QQqQIIII")
ALIGN = 16

ELEMENT_CODES: dict[ElementType, int] = {
    ElementType.ANY: 0, ElementType.BYTES: 1, ElementType.STR: 2, ElementType.INT: 3,
    ElementType.FLOAT: 4, ElementType.BOOL: 5, ElementType.JSON: 6, ElementType.NDARRAY: 7,
}
CODE_ELEMENTS = {v: k for k, v in ELEMENT_CODES.items()}


class ContextFull(Exception):
    """The context has no room left for an output (or for the inputs)."""

    def __init__(self, needed: int, left: int) -> None:
        super().__init__(f"needs {needed} bytes, {left} left")
        self.needed = needed
        self.left = left


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def infer_element(value: Any) -> ElementType:
    """The element type a value of an untyped (``any``) declaration travels as."""
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
    if value is None or isinstance(value, (dict, list, tuple)):
        return ElementType.JSON
    raise EncodingError(f"a {type(value).__name__} cannot cross a sandbox boundary untyped",
                        hint="annotate the parameter or result with its type (bytes, str, "
                             "int, float, bool, dict, numpy.ndarray)")


def encode_parts(value: Any, element: ElementType) -> tuple[ElementType, list[Any]]:
    """The element type used and the buffers whose concatenation encodes ``value``.

    ``bytes`` and C-contiguous arrays are returned as views, so that writing them into a
    context is their only copy.
    """
    if element is ElementType.ANY:
        element = infer_element(value)
    if element is ElementType.BYTES and isinstance(value, (bytes, bytearray, memoryview)):
        return element, [value]
    if element is ElementType.NDARRAY and type(value).__name__ == "ndarray":
        import numpy as np

        if value.dtype.hasobject:
            raise EncodingError("an ndarray of Python objects cannot be encoded")
        arr = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        header = npy_header(np.lib.format.dtype_to_descr(arr.dtype), arr.shape)
        flat: Any = arr.reshape(-1).view(np.uint8)
        return element, [header, memoryview(flat)]
    return element, [encode(value, element)]


def npy_header(descr: Any, shape: Sequence[int]) -> bytes:
    """A ``.npy`` version 1.0 header (magic, length, dict, padding to 64 bytes)."""
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    total = 10 + len(text) + 1
    text += " " * ((-total) % 64) + "\n"
    raw = text.encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw


def decode_view(data: memoryview, element: ElementType, copy: bool) -> Any:
    """The value encoded in ``data``; an ``ndarray`` is a view of it unless ``copy``."""
    if element is ElementType.NDARRAY:
        return _decode_npy(data, copy)
    if element in (ElementType.BYTES, ElementType.ANY):
        return bytes(data)
    return decode(data, element)


_SIMPLE_NPY = re.compile(r"\{'descr': '([<>|=][a-zA-Z]\d*)', 'fortran_order': (True|False), "
                         r"'shape': \(([\d, ]*)\), \}\s*$")


def _decode_npy(data: memoryview, copy: bool) -> Any:
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
    text = bytes(data[start:start + hlen]).decode("latin1")
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
    offset = start + hlen
    if offset + count * dtype.itemsize > len(data):
        raise EncodingError(f"the .npy data is shorter than its shape {shape} needs")
    flat: Any = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    arr = flat.reshape(shape, order=order)
    return arr.copy() if copy else arr


class Writer:
    """Lays out inputs and appends outputs in a context buffer (``mmap`` or bytearray)."""

    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.mv = memoryview(buf)

    def header(self) -> tuple[Any, ...]:
        return HEADER.unpack_from(self.buf, 0)

    def needed(self, sets: Sequence[tuple[str, Sequence[tuple[ElementType, list[Any], int,
                                                               str]]]]) -> int:
        """Bytes the inputs need (tables, names, data), before any output."""
        n_items = sum(len(items) for _, items in sets)
        size = _align(HEADER_SIZE + SET.size * len(sets) + ITEM.size * n_items)
        for name, items in sets:
            size += _align(len(name.encode()))
            for _, parts, _, iname in items:
                size += _align(sum(memoryview(p).nbytes for p in parts))
                size += _align(len(iname.encode()))
        return size

    def write_inputs(self, capacity: int,
                     sets: Sequence[tuple[str, Sequence[tuple[ElementType, list[Any], int,
                                                              str]]]],
                     results: Sequence[tuple[str, ElementType]]) -> int:
        """Write the inputs (per set: name and encoded items) and the result set table.

        Each item is ``(element, parts, key, name)`` as from :func:`encode_parts`.  Returns
        the offset of the heap.
        """
        n_items = sum(len(items) for _, items in sets)
        in_sets = HEADER_SIZE
        out_sets = in_sets + SET.size * len(sets)
        in_items = out_sets + SET.size * len(results)
        cur = _align(in_items + ITEM.size * n_items)
        mv = self.mv
        item_index = 0

        def put(data: Any) -> tuple[int, int]:
            nonlocal cur
            view = memoryview(data).cast("B")
            n = view.nbytes
            if cur + n > capacity:
                raise ContextFull(cur + n, capacity - cur)
            mv[cur:cur + n] = view
            off = cur
            cur = _align(cur + n)
            return off, n

        for s, (name, items) in enumerate(sets):
            name_off, name_len = put(name.encode())
            SET.pack_into(mv, in_sets + SET.size * s, name_off, name_len, 0, item_index,
                          len(items), 0)
            for element, parts, key, iname in items:
                start = cur
                total = 0
                for p in parts:
                    off, n = put(p)
                    cur = off + n  # parts are contiguous: no alignment between them
                    total += n
                cur = _align(cur)
                inm_off, inm_len = put(iname.encode()) if iname else (0, 0)
                ITEM.pack_into(mv, in_items + ITEM.size * item_index, start, total, key,
                               inm_off, inm_len, ELEMENT_CODES[element], s, 0)
                item_index += 1
        for r, (name, element) in enumerate(results):
            name_off, name_len = put(name.encode())
            SET.pack_into(mv, out_sets + SET.size * r, name_off, name_len,
                          ELEMENT_CODES[element], 0, 0, 0)
        HEADER.pack_into(mv, 0, MAGIC, capacity, len(sets), n_items, in_sets, in_items,
                         len(results), 0, out_sets, cur, capacity)
        return cur

    def read_items(self, table: int, count: int, capacity: int, from_end: bool = False
                   ) -> list[tuple[int, memoryview, int, str, int]]:
        """Item entries as ``(set, data view, key, name, element code)``, bounds-checked."""
        out = []
        mv = self.mv
        for i in range(count):
            at = capacity - ITEM.size * (i + 1) if from_end else table + ITEM.size * i
            if at < HEADER_SIZE or at + ITEM.size > capacity:
                raise EncodingError("item table outside the context")
            d_off, d_len, key, n_off, n_len, elem, s, _ = ITEM.unpack_from(mv, at)
            if d_off + d_len > capacity or n_off + n_len > capacity:
                raise EncodingError(f"item {i} points outside the context")
            if elem not in CODE_ELEMENTS:
                raise EncodingError(f"item {i} has unknown element code {elem}")
            name = bytes(mv[n_off:n_off + n_len]).decode("utf-8", "replace") if n_len else ""
            out.append((s, mv[d_off:d_off + d_len], key, name, elem))
        return out

    def inputs(self) -> list[list[tuple[memoryview, int, str, int]]]:
        """The input items per set (inside a sandbox)."""
        (_, capacity, n_sets, n_items, in_sets, in_items, *_rest) = self.header()
        sets: list[list[tuple[memoryview, int, str, int]]] = [[] for _ in range(n_sets)]
        for s, data, key, name, elem in self.read_items(in_items, n_items, capacity):
            sets[s].append((data, key, name, elem))
        return sets

    def add_output(self, set_index: int, element: ElementType, parts: list[Any], key: int,
                   name: str) -> None:
        """Append one output item (inside a sandbox): data into the heap, entry at the end."""
        (magic, capacity, n_in_sets, n_in_items, in_sets, in_items, n_out_sets, n_out,
         out_sets, cur, end) = self.header()
        size = sum(memoryview(p).nbytes for p in parts)
        name_b = name.encode()
        need = _align(size) + _align(len(name_b)) + ITEM.size
        if cur + need > end:
            raise ContextFull(need, end - cur)
        mv = self.mv
        start = cur
        for p in parts:
            view = memoryview(p).cast("B")
            mv[cur:cur + view.nbytes] = view
            cur += view.nbytes
        cur = _align(cur)
        name_off = cur if name_b else 0
        mv[cur:cur + len(name_b)] = name_b
        cur = _align(cur + len(name_b))
        end -= ITEM.size
        ITEM.pack_into(mv, end, start, size, key, name_off, len(name_b),
                       ELEMENT_CODES[element], set_index, 0)
        HEADER.pack_into(mv, 0, magic, capacity, n_in_sets, n_in_items, in_sets, in_items,
                         n_out_sets, n_out + 1, out_sets, cur, end)

    def outputs(self, n_results: int, capacity: int
                ) -> list[list[tuple[memoryview, int, str, int]]]:
        """The output items per result (in the worker, which knows the ``capacity`` it laid
        out; everything in the context is untrusted here)."""
        (magic, claimed, *_mid, n_out_sets, n_out, _os, _cur, _end) = self.header()
        if magic != MAGIC or claimed != capacity:
            raise EncodingError("the sandbox overwrote the context header")
        if n_out * ITEM.size > capacity - HEADER_SIZE:
            raise EncodingError(f"the context claims {n_out} output items, more than fit")
        sets: list[list[tuple[memoryview, int, str, int]]] = [[] for _ in range(n_results)]
        for s, data, key, name, elem in self.read_items(0, n_out, capacity, from_end=True):
            if s >= n_results:
                raise EncodingError(f"an output item names result {s}, but the function "
                                    f"declares {n_results}")
            sets[s].append((data, key, name, elem))
        return sets
