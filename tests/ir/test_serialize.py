"""The IR round-trips through versioned JSON exactly; the schema validates it."""

from __future__ import annotations

import json

import jsonschema
import pytest

from dandelion.errors import CompositionError
from dandelion.ir import (
    Application,
    Argument,
    Composition,
    DataType,
    FunctionSpec,
    Implementation,
    Join,
    Module,
    Output,
    Param,
    SetDecl,
    Span,
    content_hash,
    from_json,
    json_schema,
    to_json,
)
from tests.conformance import funcs


def sample() -> Module:
    spec = FunctionSpec("g", [Param("a", DataType("str")), Param("b", DataType("json", False))],
                        [Param("r", DataType("int", False))], kind="io",
                        implementations=[Implementation("builtin", "", "http")],
                        cacheable=False, span=Span("x.py", 3))
    c = Composition("c", [SetDecl("s", DataType("str")), SetDecl("t", DataType("json"))],
                    [SetDecl("o", DataType("int"))], [],
                    [Application("g", [Argument("a", "s", "keyed", True, Span("f.dd", 1, 2)),
                                       Argument("b", "t", "any_keyed")], [Output("r", "o")],
                                 join=Join(["a", "b"], ["full"]))])
    return Module([spec], [c])


@pytest.mark.parametrize("module", [sample(), funcs.JOINS["left"].module,
                                    funcs.nested_each.module, funcs.extremes.module])
def test_ir_to_json_to_ir_is_exact(module):
    text = to_json(module)
    back = from_json(text)
    assert back == module
    assert to_json(back) == text


def test_spans_survive_the_round_trip():
    back = from_json(to_json(sample()))
    assert back.compositions[0].applications[0].arguments[0].span == Span("f.dd", 1, 2)


def test_documents_validate_against_the_published_schema():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for m in (sample(), funcs.nested_all.module):
        jsonschema.validate(json.loads(to_json(m)), schema)


def test_content_hash_ignores_spans_and_sees_changes():
    m = sample()
    import attrs

    moved = attrs.evolve(m, functions=[attrs.evolve(m.functions[0], span=Span("y.py", 9))])
    assert content_hash(m) == content_hash(moved)
    renamed = attrs.evolve(m, functions=[attrs.evolve(m.functions[0], name="h")])
    assert content_hash(m) != content_hash(renamed)


@pytest.mark.parametrize("text, message", [
    ("{", "malformed"),
    ('{"format": "other"}', "not a Dandelion IR"),
    ('{"format": "dandelion-ir", "version": 99}', "version 99"),
    ('{"format": "dandelion-ir", "version": 1, "functions": [{"name": 3}]}', "should be str"),
    ('{"format": "dandelion-ir", "version": 1, "functions": [{"name": "f", "kind": "x"}]}',
     "not one of"),
    ('{"format": "dandelion-ir", "version": 1, "bogus": []}', "unknown field"),
    pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="nested-100000"),
])
def test_bad_documents_raise_composition_errors(text, message):
    with pytest.raises(CompositionError, match=message):
        from_json(text)


def test_a_parameter_with_a_default_round_trips_and_others_keep_their_json():
    """``defaulted`` enters a document only where true: a function without defaults is
    written (and hashed) as it was before the field existed."""
    plain = FunctionSpec("f", [Param("x", DataType("int", False))])
    with_default = FunctionSpec("f", [Param("x", DataType("int", False), defaulted=True)])
    assert "defaulted" not in to_json(Module([plain]))
    assert json.loads(to_json(Module([with_default])))["functions"][0]["params"][0][
        "defaulted"] is True
    assert from_json(to_json(Module([with_default]))) == Module([with_default])
    assert content_hash(plain) != content_hash(with_default)
    assert content_hash(plain) == content_hash(from_json(to_json(Module([plain]))).functions[0])
    jsonschema.validate(json.loads(to_json(Module([with_default]))), json_schema())


def test_a_constant_set_round_trips_and_enters_the_content_hash():
    from dandelion.constants import write

    one, two = (SetDecl("k", DataType("int"), value=write([n], DataType("int"), "k"))
                for n in (1, 2))
    plain = SetDecl("k", DataType("int"))
    for decl in (one, plain):
        module = Module([], [Composition("c", [], [], [decl], [])])
        assert from_json(to_json(module)) == module
        jsonschema.validate(json.loads(to_json(module)), json_schema())
    assert "value" not in to_json(Module([], [Composition("c", [], [], [plain], [])]))
    assert len({content_hash(d) for d in (one, two, plain)}) == 3
