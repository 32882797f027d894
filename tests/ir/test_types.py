from __future__ import annotations

import pytest

from dandelion.ir import DataType, ElementType


@pytest.mark.parametrize("text", ["set[int]", "item[bytes]", "set[any]", "item[ndarray]"])
def test_data_types_parse_and_print_back(text):
    assert str(DataType.parse(text)) == text


def test_untyped_shapes_mean_any():
    assert DataType.parse("set") == DataType(ElementType.ANY, True)


def test_any_is_compatible_with_everything_else_is_exact():
    assert ElementType.ANY.compatible(ElementType.INT)
    assert ElementType.INT.compatible(ElementType.ANY)
    assert not ElementType.INT.compatible(ElementType.STR)


def test_garbage_is_rejected():
    with pytest.raises(ValueError):
        DataType.parse("list[int]")
