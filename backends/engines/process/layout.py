"""The byte layout of a memory context, shared by the worker, Python sandboxes and the C SDK.

A context is one shared-memory file (a memfd) mapped by the worker and by the sandbox.  All
integers are little-endian; offsets are from the start of the context::

    0    header (128 bytes)
           0  magic        8s   b"DDCTX01\\0" (protocol.CONTEXT_MAGIC)
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

Element codes (:data:`ELEMENT_CODES`, the ``EL_*`` of :mod:`.protocol`): 0 means "as
declared", then bytes, str, int, float, bool, json, ndarray.  Item data is the
:mod:`dandelion.codec` encoding of the value.
Large values (``bytes``, ``ndarray``) are written straight into the context (one copy in)
and read back from it once (one copy out); inside a Python sandbox an ``ndarray`` input is a
view of the context, not a copy.

Contexts are written and read in C (``_sandboxc``, with the structs of ``dandelion.h``, the
same the C SDK uses): :func:`write_inputs` in the worker, :func:`read_items` on both sides,
:func:`add_output` in a sandbox.  This module prepares values for them and decodes what C
leaves to Python (``json`` and ``ndarray`` items).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dandelion.backends.engines.process import _sandboxc
from dandelion.backends.engines.process.protocol import (
    EL_ANY,
    EL_BOOL,
    EL_BYTES,
    EL_FLOAT,
    EL_INT,
    EL_JSON,
    EL_NDARRAY,
    EL_STR,
)
from dandelion.codec import decode, decode_npy, encode, infer_element, npy_parts
from dandelion.errors import EncodingError
from dandelion.ir.types import ElementType
from dandelion.items import Item

if TYPE_CHECKING:  # pragma: no cover - a sandbox loads no IR
    from dandelion.ir.nodes import FunctionSpec

ELEMENT_CODES: dict[ElementType, int] = {
    ElementType.ANY: EL_ANY, ElementType.BYTES: EL_BYTES, ElementType.STR: EL_STR,
    ElementType.INT: EL_INT, ElementType.FLOAT: EL_FLOAT, ElementType.BOOL: EL_BOOL,
    ElementType.JSON: EL_JSON, ElementType.NDARRAY: EL_NDARRAY,
}
CODE_ELEMENTS = {v: k for k, v in ELEMENT_CODES.items()}


class ContextFull(Exception):
    """The context has no room left for an output (or for the inputs)."""

    def __init__(self, needed: int, left: int) -> None:
        super().__init__(f"needs {needed} bytes, {left} left")
        self.needed = needed
        self.left = left


def _encode(declared: int, value: Any) -> tuple[int, Any]:
    """What C leaves to Python: the element code and encoding of a ``json`` or ``ndarray``
    value, or of an untyped one that is not a scalar or bytes (the ``.npy`` header and a
    view of an array's data, so that writing it into a context is its only copy)."""
    element = CODE_ELEMENTS[declared]
    if element is ElementType.ANY:
        element = infer_element(value)
    if element is ElementType.NDARRAY and type(value).__name__ == "ndarray":
        return EL_NDARRAY, npy_parts(value)  # a subclass (np.matrix, ...) takes the general path
    return ELEMENT_CODES[element], encode(value, element)


def _encoding_error(error: Exception, declared: int, items: Iterable[Item[Any]]
                    ) -> EncodingError:
    """The error that says which item could not be encoded and why."""
    for item in items:
        code, value = _encode(declared, item.value) \
            if declared in (EL_ANY, EL_JSON, EL_NDARRAY) else (declared, item.value)
        if code not in (EL_JSON, EL_NDARRAY):
            encode(value, CODE_ELEMENTS[code])  # raises the EncodingError that says why
    return EncodingError(str(error))


def invocation(spec: FunctionSpec, inputs: Sequence[Sequence[Item[Any]]]
               ) -> tuple[list[tuple[str, int, Sequence[Item[Any]]]], list[tuple[str, int]]]:
    """One invocation of ``spec`` on ``inputs`` as :func:`write_inputs` takes it: per
    parameter its name, element code and items (none for an input not given), and per
    result its name and element code."""
    sets = [(p.name, ELEMENT_CODES[p.type.element], inputs[i] if i < len(inputs) else ())
            for i, p in enumerate(spec.params)]
    return sets, [(r.name, ELEMENT_CODES[r.type.element]) for r in spec.results]


def write_inputs(buf: Any, sets: list[tuple[str, int, Sequence[Item[Any]]]],
                 results: list[tuple[str, int]], output_limit: int) -> int:
    """Lay out the inputs in ``buf``: per set its name, element code and items; per result
    its name and element code.

    Returns the context's capacity (inputs, then ``output_limit`` bytes, rounded to pages),
    or, when ``buf`` is too small for it, the capacity needed, negated (nothing written).

    Raises:
        EncodingError: a value cannot be encoded as its element type.
    """
    try:
        return int(_sandboxc.write_inputs(buf, sets, results, output_limit, _encode))
    except (TypeError, OverflowError, ValueError) as e:
        for _name, declared, items in sets:
            _encoding_error(e, declared, items)
        raise EncodingError(str(e)) from None


def _decode(code: int, data: memoryview) -> Any:
    return decode_npy(data, False) if code == EL_NDARRAY else decode(data, ElementType.JSON)


def _decode_copy(code: int, data: memoryview) -> Any:
    return decode_npy(data, True) if code == EL_NDARRAY else decode(data, ElementType.JSON)


def read_items(buf: Any, capacity: int, outputs: bool, declared: bytes | None, copy: bool
               ) -> tuple[tuple[Item[Any], ...], ...]:
    """The inputs (inside a sandbox) or the outputs (in the worker, which knows the
    ``capacity`` it laid out; everything in the context is untrusted there) of a context,
    per set; ``declared`` holds each set's element code (inputs: ``None`` reads them from
    the input set table, as the worker wrote it).

    An ``ndarray`` is a view of the context unless ``copy``; everything else is a copy.

    Raises:
        EncodingError: the context is malformed.
    """
    try:
        return _sandboxc.read_items(buf, capacity, outputs, declared,  # type: ignore[no-any-return]
                                    _decode_copy if copy else _decode, Item, copy)
    except ValueError as e:
        raise EncodingError(str(e)) from None


def add_outputs(buf: Any, result: int, declared: int, items: Sequence[Item[Any]]) -> None:
    """Append the items of result ``result`` (inside a sandbox): data into the heap,
    entries at the end.

    Raises:
        ContextFull: one does not fit (those before it stay).
        EncodingError: a value cannot be encoded as element ``declared``.
    """
    try:
        full = _sandboxc.add_outputs(buf, result, declared, items, _encode)
    except (TypeError, OverflowError) as e:
        raise _encoding_error(e, declared, items) from None
    if full is not None:
        raise ContextFull(*full)
