"""Between items and Python values: how a Python function sees its parameters and results.

A :class:`View` remembers, for one parameter or result, the IR :class:`DataType`, whether
the Python code sees :class:`~dandelion.Item` objects or bare values, and the annotation
itself (for run-time checks with typeguard).  :func:`to_python` and :func:`from_python`
convert with it, in every engine and sandbox that runs Python code; the front end makes
views from annotations (:func:`dandelion.authoring.annotations.view_of`).
"""

from __future__ import annotations

import collections.abc
import functools
import typing
from typing import Any, Sequence

import attrs

from dandelion.codec import (
    INT64_RANGE,
    RAW_BYTES_HINT,
    infer_element,
    ndarray_class,
    python_scalar,
)
from dandelion.errors import EncodingError, FunctionError, FunctionTypeError
from dandelion.ir.types import DataType, ElementType
from dandelion.items import Item

SETS = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
_PLAIN = (int, float, str, bytes, bool)


@attrs.frozen
class View:
    """How Python code sees one parameter or result."""

    type: DataType
    items: bool = False
    annotation: Any = Any
    #: The annotation of one value (without ``list`` or ``Item``).
    element_annotation: Any = attrs.field(init=False, eq=False, repr=False)
    #: The value class of ``element_annotation`` (e.g. ``dd.HttpRequest``), else ``None``.
    value_class: Any = attrs.field(init=False, eq=False, repr=False)
    #: For one plain value (``int``, ``float``, ``str``, ``bytes``, ``bool`` or numpy's
    #: ``ndarray``; not a set, not an item), its class: a value of exactly that class needs
    #: no further checks — but for an ``int`` result, its range, and for an ``ndarray``
    #: result, that it holds no Python objects (:attr:`array`).
    plain: Any = attrs.field(init=False, eq=False, repr=False)
    #: Whether :attr:`plain` is numpy's ``ndarray``.
    array: bool = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # worked out once: every invocation of the function needs them
        element = _element_annotation(self.annotation)
        object.__setattr__(self, "element_annotation", element)
        object.__setattr__(self, "value_class", value_class(element))
        ndarray = ndarray_class()
        array = ndarray is not None and element is ndarray
        object.__setattr__(self, "plain", element if (element in _PLAIN or array)
                           and not self.items and not self.type.is_set else None)
        object.__setattr__(self, "array", array and self.plain is not None)

    def __reduce__(self) -> tuple[Any, ...]:
        # Sandboxes unpickle the views of every function they run: as plain arguments, and
        # common views come from a cache filled before the sandbox was forked.
        return shared_view, (self.type.element.value, self.type.is_set, self.items, self.annotation)


@functools.lru_cache(maxsize=256)
def _cached_view(element: str, is_set: bool, items: bool, annotation: Any) -> View:
    return View(DataType(ElementType(element), is_set), items, annotation)


def shared_view(element: str, is_set: bool, items: bool, annotation: Any) -> View:
    """The :class:`View` of these fields, shared between equal views (the common ones are
    made once, in a sandbox's zygote)."""
    try:
        return _cached_view(element, is_set, items, annotation)
    except TypeError:  # an unhashable annotation
        return View(DataType(ElementType(element), is_set), items, annotation)


def _element_annotation(annotation: Any) -> Any:
    if annotation in (list, tuple):  # a set of untyped values (``-> list``)
        return Any
    origin = typing.get_origin(annotation)
    if origin in SETS:
        args = typing.get_args(annotation)
        annotation = args[0] if args else Any
        origin = typing.get_origin(annotation)
    if annotation is Item or origin is Item:
        args = typing.get_args(annotation)
        annotation = args[0] if args else Any
    return annotation


def value_class(annotation: Any) -> Any:
    """``annotation`` if it is a value class (e.g. ``dd.HttpRequest``), else ``None``.

    A value class declares ``__dandelion_element__`` (the element type its items hold),
    ``from_item_value(value)`` and ``to_item_value()``: items carry the encoded form, so
    sandboxes and the wire see plain data, and Python code sees the typed object.
    """
    return annotation if isinstance(annotation, type) and hasattr(
        annotation, "__dandelion_element__") else None


def _check(value: Any, annotation: Any, what: str, inbound: bool = True) -> None:
    """Check ``value`` against ``annotation``; ``inbound``: it comes in (a parameter or
    an input), where bytes may be a file given to an untyped input (said in the hint)."""
    if annotation in (Any, object) or isinstance(annotation, typing.TypeVar):
        return
    if type(annotation) is type and isinstance(value, annotation):
        return  # the common case, without typeguard's machinery
    from typeguard import TypeCheckError, check_type

    try:
        check_type(value, annotation)
    except TypeCheckError as e:
        raw = inbound and isinstance(value, (bytes, bytearray, memoryview))
        raise FunctionTypeError(f"{what}: {e}", hint=RAW_BYTES_HINT if raw else None) from None


def to_python(items: Sequence[Item[Any]], view: View, what: str) -> Any:
    """The Python argument for a parameter that receives ``items``.

    Raises:
        FunctionError: an item parameter got more than one item.
        FunctionTypeError: a value does not match the annotation.
    """
    element = view.element_annotation
    value_class = view.value_class
    if value_class is not None:
        items = [item if isinstance(item.value, value_class) else
                 attrs.evolve(item, value=_from_item_value(value_class, item.value, what))
                 for item in items]
    for item in items:
        _check(item.value, element, what)
    if view.type.is_set:
        return list(items) if view.items else [item.value for item in items]
    if len(items) > 1:
        raise FunctionError(f"{what} takes one item but received {len(items)}",
                            hint="annotate it list[...] or shard its input with 'each'")
    if not items:
        return None
    return items[0] if view.items else items[0].value


def _check_encodable(value: Any, element: ElementType, what: str) -> None:
    """Reject what passes the type check but has no encoding (so every engine agrees)."""
    if element is ElementType.ANY and type(value) not in _PLAIN:
        try:
            element = infer_element(value)  # a value of no element type: refused here
        except EncodingError as e:
            raise EncodingError(f"{what}: {e.message}", hint=e.hint) from None
    if element is ElementType.INT and isinstance(value, int):
        if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            raise EncodingError(f"{what}: {value} does not fit in 64 bits")
    elif element is ElementType.JSON:
        from dandelion.codec import encode

        try:
            encode(value, element)
        except EncodingError as e:
            raise EncodingError(f"{what}: {e.message}", hint=e.hint) from None
    elif element is ElementType.NDARRAY and getattr(getattr(value, "dtype", None), "hasobject",
                                                    False):
        raise EncodingError(f"{what}: an array of Python objects (dtype "
                            f"{value.dtype}) cannot cross a sandbox boundary",
                            hint="convert it to a numeric, bool or string dtype, or pass "
                                 "the objects as a list (dd.Json)")


def from_python(value: Any, view: View, what: str, returned: bool = True
                ) -> tuple[Item[Any], ...]:
    """The items of a returned value (``returned``; else an input given to a run); bare
    values get key 0 and no name.

    Raises:
        FunctionTypeError: the value does not match the declared result.
    """
    if view.type.is_set:
        if value is None:
            return ()
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, collections.abc.Iterable):
            raise FunctionTypeError(f"{what} must be a list, got {type(value).__name__}")
        values = list(value)
    else:
        values = [value]
    element = view.element_annotation
    kind = view.type.element
    value_class = view.value_class
    out = []
    for v in values:
        item = v if isinstance(v, Item) else Item(v)
        if type(item.value) not in _PLAIN and kind is not ElementType.NDARRAY:
            scalar = python_scalar(item.value)  # m.sum() for an int result: an int
            if scalar is not item.value:
                item = attrs.evolve(item, value=scalar)
        _check(item.value, element, what, inbound=not returned)
        if value_class is not None:
            item = attrs.evolve(item, value=item.value.to_item_value())
        _check_encodable(item.value, kind, what)
        out.append(item)
    return tuple(out)


def _from_item_value(value_class: Any, value: Any, what: str) -> Any:
    try:
        return value_class.from_item_value(value)
    except (ValueError, TypeError) as e:
        raise FunctionTypeError(f"{what}: not a {value_class.__name__}: {e}") from None
