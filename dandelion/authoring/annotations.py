"""From Python annotations to IR data types, and between items and Python values.

A :class:`View` remembers, for one parameter or result, the IR :class:`DataType`, whether
the Python code sees :class:`~dandelion.Item` objects or bare values, and the annotation
itself (for run-time checks with typeguard); views and the conversions live in
:mod:`dandelion.runtime.views`, which every sandbox has loaded, and :func:`view_of` makes them.

========================================  ======================  ============
annotation                                data type               sees items
========================================  ======================  ============
``bytes`` ``str`` ``int`` ``float``        ``item[bytes]`` …       no
``bool``
``dict``, ``dd.Json``                     ``item[json]``          no
``numpy.ndarray``                         ``item[ndarray]``       no
``list[T]``                               ``set[T]``              no
``dd.Item[T]`` / ``list[dd.Item[T]]``     ``item[T]`` / ``set[T]`` yes
none, ``Any``, ``object``                 ``item[any]``           no
========================================  ======================  ============
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from dandelion.errors import FunctionTypeError
from dandelion.ir.types import DataType, ElementType
from dandelion.items import Item
from dandelion.runtime.views import SETS, value_class
from dandelion.runtime.views import View as View  # public here too (dd.authoring.View)

#: A JSON value: use it to annotate parameters that hold JSON documents.
Json = Union[dict, list, str, int, float, bool, None]  # type: ignore[type-arg]

_SCALARS = {bytes: ElementType.BYTES, str: ElementType.STR, int: ElementType.INT,
            float: ElementType.FLOAT, bool: ElementType.BOOL, dict: ElementType.JSON}


def _element_of(annotation: Any, where: str) -> ElementType:
    if annotation in (Any, object, None, typing.Any) or annotation is typing.TypeVar:
        return ElementType.ANY
    if value_class(annotation) is not None:
        return ElementType(annotation.__dandelion_element__)
    if annotation is Json:
        return ElementType.JSON
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = typing.get_origin(annotation)
    if origin is dict:
        return ElementType.JSON
    module = getattr(annotation, "__module__", "")
    if getattr(annotation, "__name__", "") == "ndarray" and module.startswith("numpy"):
        return ElementType.NDARRAY
    if origin is not None and getattr(origin, "__name__", "") == "ndarray":
        return ElementType.NDARRAY
    raise FunctionTypeError(f"{where}: annotation {annotation!r} is not a Dandelion element "
                            "type", hint="use bytes, str, int, float, bool, dict/dd.Json, "
                            "numpy.ndarray, dd.Item[T] or list[T]")


def optional_of(annotation: Any) -> Any:
    """``T`` for ``T | None`` (``Optional[T]``), the annotation of a parameter that may be
    left out; ``None`` for any other annotation.

    >>> optional_of(int | None), optional_of(typing.Optional[str]), optional_of(int)
    (<class 'int'>, <class 'str'>, None)
    """
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and len(typing.get_args(annotation)) == 2 else None


def view_of(annotation: Any, where: str) -> View:
    """The :class:`View` for an annotation; ``where`` names it in errors."""
    if annotation is None or annotation is type(None):
        raise FunctionTypeError(f"{where}: None is not a data type")
    is_set = False
    inner = annotation
    origin = typing.get_origin(inner)
    if origin in SETS:
        is_set = True
        args = typing.get_args(inner)
        inner = args[0] if args else Any
        origin = typing.get_origin(inner)
    elif inner in (list, tuple):
        return View(DataType(ElementType.ANY, True), False, annotation)
    items = inner is Item or origin is Item
    if items:
        args = typing.get_args(inner)
        inner = args[0] if args else Any
    return View(DataType(_element_of(inner, where), is_set), items, annotation)
