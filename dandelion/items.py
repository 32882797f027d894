"""Items: values with an integer key and a name, the unit of data in a set."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import attrs

T = TypeVar("T")


@attrs.frozen(slots=True)
class Item(Generic[T]):
    """One item of a set: a value, an integer key and a name.

    Keys drive ``keyed`` sharding and joins; names travel with the data (an HTTP response
    carries the name of its request).  Annotate a parameter or result ``dd.Item[T]`` (or
    ``list[dd.Item[T]]``) to see and set them; plain ``T`` sees only values.

    >>> Item(b"page", key=3, name="a.txt")
    Item(value=b'page', key=3, name='a.txt')
    """

    value: T
    key: int = attrs.field(default=0)
    name: str = attrs.field(default="")

    @key.validator
    def _check_key(self, _attribute: Any, key: int) -> None:
        if not isinstance(key, int) or isinstance(key, bool):
            raise TypeError(f"item key must be an int, not {type(key).__name__}")

    @name.validator
    def _check_name(self, _attribute: Any, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"item name must be a str, not {type(name).__name__}")


def as_item(value: Any) -> Item[Any]:
    """``value`` as an :class:`Item` (key 0, no name) unless it already is one."""
    return value if isinstance(value, Item) else Item(value)
