"""@dd.compute: signatures from annotations, plain Python outside compositions."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import dandelion as dd
from dandelion.ir import DataType


def test_a_compute_function_called_directly_is_plain_python():
    @dd.compute
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add" and add.__doc__ is None


def test_annotations_become_typed_parameters_and_results():
    @dd.compute
    def f(a: bytes, b: list[str], c: dd.Item[float], d: list[dd.Item[dd.Json]],
          e: np.ndarray, g: dict) -> list[bool]:
        return []

    types = [str(p.type) for p in f.spec.params]
    assert types == ["item[bytes]", "set[str]", "item[float]", "set[json]", "item[ndarray]",
                     "item[json]"]
    assert [(r.name, str(r.type)) for r in f.spec.results] == [("result", "set[bool]")]


def test_unannotated_parameters_are_untyped():
    @dd.compute
    def f(x):
        return x

    assert f.spec.params[0].type == DataType("any", False)


def test_named_tuple_results_give_several_named_outputs():
    class Out(NamedTuple):
        head: str
        rest: list[str]

    @dd.compute
    def split(s: str) -> Out:
        first, *rest = s.split()
        return Out(first, rest)

    assert [(r.name, str(r.type)) for r in split.spec.results] == [
        ("head", "item[str]"), ("rest", "set[str]")]


def test_results_keyword_names_a_tuple_annotation():
    @dd.compute(results=("q", "r"))
    def divmod_(a: int, b: int) -> tuple[int, int]:
        return divmod(a, b)

    assert [r.name for r in divmod_.spec.results] == ["q", "r"]
    out = divmod_.artifact.invoke([[dd.Item(7)], [dd.Item(2)]])
    assert out == [(dd.Item(3),), (dd.Item(1),)]


def test_no_return_annotation_of_none_means_no_results():
    @dd.compute
    def sink(x: int) -> None:
        pass

    assert sink.spec.results == ()


@pytest.mark.parametrize("source, message", [
    ("def f(*xs: int) -> int: ...", "plain positional"),
    ("def f(*, x: int) -> int: ...", "plain positional"),
    ("def f(by: int) -> int: ...", "'by'"),
    ("def f(x: set) -> int: ...", "not a Dandelion element type"),
])
def test_bad_signatures_are_rejected_at_definition(source, message):
    ns: dict = {}
    exec(source, ns)
    with pytest.raises(dd.FunctionTypeError, match=message):
        dd.compute(ns["f"])


def test_artifact_checks_values_against_annotations():
    @dd.compute
    def f(x: int) -> str:
        return x  # type: ignore[return-value]

    with pytest.raises(dd.FunctionTypeError, match="result 'result' of 'f'"):
        f.artifact.invoke([[dd.Item(1)]])
    with pytest.raises(dd.FunctionTypeError, match="parameter 'x' of 'f'"):
        f.artifact.invoke([[dd.Item("one")]])


def test_item_parameter_receiving_several_items_fails_clearly():
    @dd.compute
    def f(x: int) -> int:
        return x

    with pytest.raises(dd.FunctionError, match="takes one item but received 2"):
        f.artifact.invoke([[dd.Item(1), dd.Item(2)]])


def test_code_digest_changes_with_the_code():
    @dd.compute
    def a(x: int) -> int:
        return x

    @dd.compute(name="a")
    def b(x: int) -> int:
        return x + 1

    assert a.spec.implementations[0].digest != b.spec.implementations[0].digest
    assert a.spec.implementations[0].digest.startswith("sha256:")


def test_values_without_an_encoding_fail_on_every_engine():
    @dd.compute
    def big(x: int) -> int:
        return 2**70

    @dd.compute
    def doc(x: int) -> dd.Json:
        return {"x": {1, 2}}

    with pytest.raises(dd.EncodingError, match="64 bits"):
        big.artifact.invoke([[dd.Item(1)]])
    with pytest.raises(dd.EncodingError, match="not JSON serializable|set"):
        doc.artifact.invoke([[dd.Item(1)]])


def test_an_array_passes_as_it_is_but_one_of_python_objects_is_refused_as_a_result():
    """Exactly an ``ndarray`` (what a sandbox decodes, what numpy returns) is a plain value:
    passed on without the general checks, but for the one every engine needs of a result —
    that it holds no Python objects (no encoding can carry them)."""

    @dd.compute
    def same(m: np.ndarray) -> np.ndarray:
        return m

    @dd.compute
    def objects(m: np.ndarray) -> np.ndarray:
        return np.array([{1}, "x"], dtype=object)

    @dd.compute
    def several(ms: list[np.ndarray]) -> list[np.ndarray]:
        return ms

    m = np.arange(6).reshape(2, 3)
    ((item,),) = same.artifact.invoke([[dd.Item(m)]])
    assert item.value is m
    assert same.artifact.params[0][1].plain is np.ndarray
    assert several.artifact.params[0][1].plain is None  # a set: checked item by item
    with pytest.raises(dd.EncodingError, match="array of Python objects"):
        objects.artifact.invoke([[dd.Item(m)]])
