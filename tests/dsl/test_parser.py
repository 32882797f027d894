"""Text -> syntax tree: statements, continuation lines, positions."""

from __future__ import annotations

from pathlib import Path

from dandelion.dsl import ast
from dandelion.dsl.diagnostics import Report, Source
from dandelion.dsl.parser import parse_ast
from dandelion.ir import ShardingMode, Span

FOUNDING = Path(__file__).with_name("log_count.dd").read_text()


def tree(text: str, notation: str = "dd") -> ast.FileAst:
    report = Report(Source(text, f"t.{notation}"))
    result = parse_ast(text, f"t.{notation}", notation, report)
    assert not report.found, report.rendered()
    assert result is not None
    return result


def test_founding_example_reads_as_one_implicit_composition() -> None:
    comp, = tree(FOUNDING).compositions
    assert comp.implicit and comp.name == ""
    assert [(d.role, d.name, d.type.shape) for d in comp.decls] == [
        ("input", "eventPattern", "item"), ("input", "serverList", "item"),
        ("output", "totalSum", "item"), ("ephemeral", "requestSet", "set"),
        ("ephemeral", "logSet", "set"), ("ephemeral", "partialSums", "set")]
    loop = comp.applications[1]
    assert isinstance(loop, ast.Application)
    assert loop.generators == (ast.Generator(ShardingMode.EACH, "getRequest", "requestSet"),)
    assert loop.function == "system_HTTPGet"


def test_nodes_carry_their_positions() -> None:
    comp, = tree(FOUNDING).compositions
    app = comp.applications[2]
    assert isinstance(app, ast.Application)
    assert app.span == Span("t.dd", 8, 1, 9, 36)
    assert app.function_span == Span("t.dd", 9, 5, 9, 17)
    assert app.generators[0].source_span == Span("t.dd", 8, 31, 8, 37)
    assert comp.decls[1].span == Span("t.dd", 1, 26, 1, 36)


def test_statements_continue_after_colon_comma_and_inside_parentheses() -> None:
    comp, = tree("input set a,\n   b\noutput set y\n"
                 "y = for each key u in a,\n  each key w in b\n  by u inner w\n  :\n"
                 "  pair(\n    u,\n    w\n  )\n").compositions
    assert [d.name for d in comp.decls] == ["a", "b", "y"]
    app = comp.applications[0]
    assert isinstance(app, ast.Application) and app.join is not None
    assert app.join.names == ("u", "w") and app.join.kinds == ("inner",)


def test_comments_and_blank_lines_are_ignored() -> None:
    plain = tree("input set a\noutput set y\ny = f(a)\n")
    noisy = tree("# c\n\ninput set a # the input\n\n\n# more\noutput set y\n"
                 "y = f(a)  # call\n# end")
    assert plain == noisy


def test_headers_split_compositions_and_bindings_are_module_level() -> None:
    got = tree('composition a\ninput set x\nfrom python "h.py" import f as g, k\n'
               "composition b\noutput set y\nfunction f(set x) -> set\n")
    assert [c.name for c in got.compositions] == ["a", "b"]
    assert got.bindings == (ast.Binding("python", "h.py", True, (
        ast.ImportName("f", "g"), ast.ImportName("k", "k"))),)
    assert [f.name for f in got.functions] == ["f"]


def test_function_declarations() -> None:
    got = tree("function f(item[int] a, set b, c) -> (item[str] x, set y)\n"
               "io function g() -> item[bytes]\ncacheable io function h(set q)\n").functions
    f, g, h = got
    assert [(p.name, p.type) for p in f.params] == [
        ("a", ast.TypeRef("item", "int")), ("b", ast.TypeRef("set", None)), ("c", None)]
    assert [r.name for r in f.results] == ["x", "y"]
    assert g.io and not g.cacheable and g.results[0].name == "result"
    assert h.io and h.cacheable and h.results == ()


def test_dcl_reads_the_reference_grammar() -> None:
    got = tree("function F (a, b) => ();\ncomposition C () => () { }\n"
               "composition D (x) => (y) { F(a = optional anyEach x) => (y = r) by a cross b; }",
               "dcl")
    assert [c.name for c in got.compositions] == ["C", "D"]
    app = got.compositions[1].applications[0]
    assert isinstance(app, ast.DclApplication)
    assert app.args == (ast.DclArg("a", "x", ShardingMode.ANY_EACH, True),)
    assert app.outputs == (ast.DclOut("y", "r"),)
