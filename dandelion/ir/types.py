"""Element and data types of the IR.

An *element type* says what one item holds (``bytes``, ``int``, ``json`` …); a
:class:`DataType` adds the shape: a single ``item`` or a ``set`` of items.  ``any`` is the
element type of an untyped declaration (a DSL ``set`` without brackets) and is compatible
with every other element type.

>>> DataType.parse("set[int]")
DataType(element='int', is_set=True)
>>> str(DataType(ElementType.BYTES, is_set=False))
'item[bytes]'
"""

from __future__ import annotations

import enum

import attrs


class NamedEnum(str, enum.Enum):
    """An enum of strings that prints and shows as its value (``each``, not
    ``ShardingMode.EACH``), as the IR's JSON and the DSL spell it.

    >>> str(ElementType.INT), repr(ElementType.INT)
    ('int', "'int'")
    """

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


class ElementType(NamedEnum):
    """What the bytes of one item mean."""

    BYTES = "bytes"
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    JSON = "json"
    NDARRAY = "ndarray"
    ANY = "any"

    def compatible(self, other: ElementType) -> bool:
        """Whether a value of ``self`` may flow where ``other`` is expected."""
        return self is other or ElementType.ANY in (self, other)


def _element(value: ElementType | str) -> ElementType:
    return value if isinstance(value, ElementType) else ElementType(value)


@attrs.frozen
class DataType:
    """The type of a set in a composition: element type plus shape.

    Attributes:
        element: the element type of every item.
        is_set: ``True`` for a set of any size, ``False`` for exactly one item.
    """

    element: ElementType = attrs.field(converter=_element, default=ElementType.ANY)
    is_set: bool = True

    def __str__(self) -> str:
        return f"{'set' if self.is_set else 'item'}[{self.element}]"

    @classmethod
    def parse(cls, text: str) -> DataType:
        """Parse ``set[int]``, ``item[bytes]``, ``set`` or ``item``."""
        text = text.strip()
        shape, _, rest = text.partition("[")
        if shape not in ("set", "item"):
            raise ValueError(f"not a data type: {text!r} (expected set[T] or item[T])")
        element = rest.rstrip("]") if rest else "any"
        return cls(ElementType(element), is_set=shape == "set")

    def compatible(self, other: DataType) -> bool:
        """Whether data of this type may be bound where ``other`` is declared."""
        return self.element.compatible(other.element)
