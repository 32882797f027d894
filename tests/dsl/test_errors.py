"""Malformed programs -> the error kind and position, and how errors are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

import dandelion.dsl as dsl
from dandelion.errors import CompositionError, CompositionTypeError, DslSyntaxError
from tests.dsl import log_count_functions

#: Declarations appended after each ``.dd`` snippet, so positions count from the snippet.
PRELUDE = """
function f(set x) -> set
function g(item[int] a, item[int] b) -> item[int]
function two(set x) -> (set a, set b)
function k(set l, set r) -> set
"""

#: (notation, snippet, exception, code of the first error, its line, its column)
TABLE = [
    # unknown element type 'integer'
    ('dd', 'input item[integer] a',
     DslSyntaxError, 'unknown-type', 1, 12),
    # unexpected 'eech'
    ('dd', 'input set a\n' 'output set y\n' 'y = for eech v in a : f(v)',
     DslSyntaxError, 'syntax', 3, 9),
    # unexpected end of line
    ('dd', 'input set a\n' 'output set y\n' 'y = f(a',
     DslSyntaxError, 'syntax', 3, 8),
    # unexpected ')'
    ('dd', 'input set a\n' 'output set y\n' 'y = f(a))',
     DslSyntaxError, 'syntax', 3, 9),
    # unexpected character '$'
    ('dd', 'input set a\n' 'output set y\n' 'y = f(a) $',
     DslSyntaxError, 'bad-character', 3, 10),
    # unknown statement 'inptu'
    ('dd', 'inptu set a',
     DslSyntaxError, 'syntax', 1, 1),
    # unexpected 'sett'
    ('dd', 'input sett a',
     DslSyntaxError, 'syntax', 1, 7),
    # unexpected '='
    ('dd', 'input set a\n' 'output set y\n' 'y == f(a)',
     DslSyntaxError, 'syntax', 3, 4),
    # unexpected 'f'
    ('dd', 'input set a\n' 'output set y\n' 'y = for each v in a f(v)',
     DslSyntaxError, 'syntax', 3, 21),
    # unexpected end of line
    ('dd', 'input set a\n' 'output set y\n' 'y = for each v in a :',
     DslSyntaxError, 'syntax', 3, 22),
    # unexpected end of line
    ('dd', 'input set a, \n' 'output set y',
     DslSyntaxError, 'syntax', 1, 14),
    # unexpected ')'
    ('dd', 'input set a\n' 'output set y\n' 'y = f(a,)',
     DslSyntaxError, 'syntax', 3, 9),
    # unexpected end of line
    ('dd', 'function h(set x) -> ',
     DslSyntaxError, 'syntax', 1, 22),
    # unexpected end of line
    ('dd', 'from python helpers import',
     DslSyntaxError, 'syntax', 1, 27),
    # unexpected 'cobol'
    ('dd', 'from cobol "x.cbl" import f',
     DslSyntaxError, 'syntax', 1, 6),
    # unexpected end of line
    ('dd', 'composition',
     DslSyntaxError, 'syntax', 1, 12),
    # unexpected 'lft'
    ('dd',
     'input set a\n'
     'output set y\n'
     'y = for each key v in a, each key w in a by v lft w : k(v, w)',
     DslSyntaxError, 'syntax', 3, 47),
    # unexpected '"f"'
    ('dd', 'input set a\n' 'output set y\n' 'y = "f"(a)',
     DslSyntaxError, 'syntax', 3, 5),
    # unexpected 'a'
    ('dd', 'input set a\n' 'output set y\n' 'y = f(optinal a)',
     DslSyntaxError, 'syntax', 3, 15),
    # set 'b' is not declared
    ('dd', 'input set a\n' 'output set y\n' 'y = f(b)',
     CompositionError, 'undefined-set', 3, 7),
    # set 'z' is never produced
    ('dd',
     'input set a\n'
     'output set y\n'
     'ephemeral set z\n'
     'y = for each v in zz : f(v)',
     CompositionError, 'unproduced-set', 3, 15),
    # set 'y' is produced twice
    ('dd', 'input set a\n' 'output set y\n' 'y = f(a)\n' 'y = f(a)',
     CompositionError, 'produced-twice', 4, 1),
    # output 'y' of composition 't' is never produced
    ('dd', 'input set a\n' 'output set y\n' 'yy = f(a)',
     CompositionError, 'unproduced-output', 2, 12),
    # 'f' takes 1 argument(s) but 2 were given
    ('dd', 'input set a\n' 'output set y\n' 'y = f(a, a)',
     CompositionError, 'arity', 3, 10),
    # 'g' is missing argument(s): b
    ('dd', 'input set a\n' 'output set y\n' 'y = g(a)',
     CompositionError, 'arity', 3, 5),
    # 'f' has no parameter 'z'
    ('dd', 'input set a\n' 'output set y\n' 'y = f(z = a)',
     CompositionError, 'unknown-parameter', 3, 7),
    # parameter 'x' of 'f' is given twice
    ('dd', 'input set a\n' 'output set y\n' 'y = f(x = a, x = a)',
     CompositionError, 'duplicate-argument', 3, 14),
    # positional argument after a named one
    ('dd', 'input set a\n' 'output set y\n' 'y = f(x = a, a)',
     DslSyntaxError, 'syntax', 3, 14),
    # 'f' has 1 result(s) (result) but 2 target(s) are assigned
    ('dd', 'input set a\n' 'output set y\n' 'y, z = f(a)',
     CompositionError, 'arity', 3, 1),
    # 'two' has 2 result(s) (a, b) but 1 target(s) are assigned
    ('dd', 'input set a\n' 'output set y\n' 'y = two(a)',
     CompositionError, 'arity', 3, 1),
    # loop variable 'w' is not passed to 'f'
    ('dd',
     'input set a\n'
     'output set y\n'
     'y = for each v in a, each w in a : f(v)',
     CompositionError, 'unused-variable', 3, 22),
    # loop variable 'v' is bound twice
    ('dd',
     'input set a\n'
     'output set y\n'
     'y = for each v in a, each v in a : k(v, v)',
     CompositionError, 'duplicate-variable', 3, 22),
    # join over 'l', which is not a keyed input (its mode is 'each')
    ('dd',
     'input set a\n'
     'output set y\n'
     'y = for each v in a, each w in a by v inner w : k(v, w)',
     CompositionError, 'join-not-keyed', 3, 34),
    # 'q' in the join is not a loop variable
    ('dd',
     'input set a\n'
     'output set y\n'
     'y = for each key v in a, each key w in a by v inner q : k(v, w)',
     CompositionError, 'bad-join', 3, 42),
    # 'a' holds str but parameter 'a' of 'g' expects int
    ('dd', 'input item[str] a\n' 'output item[int] y\n' 'y = g(a, a)',
     CompositionTypeError, 'type-mismatch', 3, 7),
    # parameter 'a' of 'g' takes one item but 'a' is a whole set
    ('dd', 'input set[int] a\n' 'output item[int] y\n' 'y = g(a, a)',
     CompositionTypeError, 'shape-mismatch', 3, 7),
    # 'y' is declared as one item but 'g' produces one item per instance
    ('dd',
     'input item[int] a\n'
     'output item[int] y\n'
     'y = for each v in a : g(v, a)',
     CompositionTypeError, 'shape-mismatch', 3, 1),
    # set 'a' is declared twice in composition 't'
    ('dd', 'input set a\n' 'output set y\n' 'input set a\n' 'y = f(a)',
     CompositionError, 'duplicate-set', 3, 11),
    # sets depend on each other in a cycle: y -> z -> y
    ('dd',
     'input set a\n'
     'output set y\n'
     'ephemeral set z\n'
     'y = f(z)\n'
     'z = f(y)',
     CompositionError, 'cycle', 4, 5),
    # input 'a' cannot be assigned
    ('dd', 'input set a\n' 'output set y\n' 'a = f(a)\n' 'y = f(a)',
     CompositionError, 'assign-input', 3, 1),
    # compositions call each other in a cycle: c2 -> c2
    ('dd',
     'input set a\n'
     'output set y\n'
     'y = f(a)\n'
     'composition c2\n'
     'input set p\n'
     'output set q\n'
     'q = c2(p)',
     CompositionError, 'recursive-composition', 4, 13),
    # set 'e' is never produced
    ('dd', 'input set a\n' 'output set y\n' 'ephemeral set e\n' 'y = f(a)',
     CompositionError, 'unproduced-set', 3, 15),
    # function 'f' is declared twice
    ('dd',
     'function f(set x) -> set\n'
     'input set a\n'
     'output set y\n'
     'y = f(a)',
     CompositionError, 'duplicate-name', 5, 10),
    # input 'backend' of composition 't' uses a reserved name
    ('dd', 'input set backend\n' 'output set y\n' 'y = f(backend)',
     CompositionError, 'reserved-name', 1, 11),
    # unknown sharding mode 'eech'
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(x = eech a) => (b = y);\n'
     '}',
     DslSyntaxError, 'unknown-keyword', 3, 8),
    # unknown keyword 'optionl'
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(x = optionl each a) => (b = y);\n'
     '}',
     DslSyntaxError, 'unknown-keyword', 3, 8),
    # unexpected '}'
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(x = each a) => (b = y)\n'
     '}',
     DslSyntaxError, 'syntax', 4, 1),
    # function 'G' is not declared or bound
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' G(x = each a) => (b = y);\n'
     '}',
     CompositionError, 'unknown-function', 3, 2),
    # set 'aa' is not declared
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(x = each aa) => (b = y);\n'
     '}',
     CompositionError, 'undefined-set', 3, 13),
    # set 'b' is produced twice
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(x = each a) => (b = y);\n'
     ' F(x = all a) => (b = y);\n'
     '}',
     CompositionError, 'produced-twice', 4, 19),
    # 'F' has no parameter 'z'
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(z = each a) => (b = y);\n'
     '}',
     CompositionError, 'unknown-parameter', 3, 13),
    # 'F' has no result 'yy'
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(x = each a) => (b = yy);\n'
     '}',
     CompositionError, 'unknown-result', 3, 20),
    # join over 'l', which is not a keyed input (its mode is 'each')
    ('dcl',
     'function F (l, r) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(l = each a, r = keyed a) => (b = y) by l inner r;\n'
     '}',
     CompositionError, 'join-not-keyed', 3, 40),
    # unknown join kind 'innr'
    ('dcl',
     'function F (l, r) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(l = keyed a, r = keyed a) => (b = y) by l innr r;\n'
     '}',
     DslSyntaxError, 'unknown-keyword', 3, 46),
    # unexpected 'functoin'
    ('dcl', 'functoin F (x) => (y);',
     DslSyntaxError, 'syntax', 1, 1),
    # unexpected end of file
    ('dcl', 'function F (x) => (y)',
     DslSyntaxError, 'unexpected-end', 1, 22),
    # unexpected ')'
    ('dcl', 'function F (x,) => (y);',
     DslSyntaxError, 'syntax', 1, 15),
    # function 'F' is not declared or bound
    ('dcl', 'composition C (a) => (b) {\n' ' F(x = each a) => (b = y);\n' '}',
     CompositionError, 'unknown-function', 2, 2),
    # unexpected end of file
    ('dcl',
     'function F (x) => (y);\n'
     'composition C (a) => (b) {\n'
     ' F(x = each a) => (b = y);\n'
     '',
     DslSyntaxError, 'unexpected-end', 3, 27),]


def first_error(exc: CompositionError) -> tuple[str, int, int]:
    errors = [d for d in exc.diagnostics if d.is_error]
    first = min(errors, key=lambda d: (d.span.line, d.span.column))
    return first.code, first.span.line, first.span.column


@pytest.mark.parametrize(("notation", "snippet", "kind", "code", "line", "column"), TABLE)
def test_malformed_snippet_is_reported_at_its_position(
        notation: str, snippet: str, kind: type[Exception], code: str, line: int,
        column: int) -> None:
    text = snippet + (PRELUDE if notation == "dd" else "")
    with pytest.raises(CompositionError) as info:
        dsl.parse(text, f"t.{notation}")
    assert type(info.value) is kind
    assert first_error(info.value) == (code, line, column)
    assert (info.value.span.line, info.value.span.column) == (line, column)
    assert str(info.value).startswith(f"t.{notation}:{line}:{column}: error: ")


def test_table_has_at_least_forty_rows() -> None:
    assert len(TABLE) >= 40


LOAD_TABLE = [
    # a call of a name nothing binds
    ("input set a\noutput set y\ny = fx(a)\n", "unknown-function", 3, 5),
    # a declaration that disagrees with the bound implementation
    ("function sumSet(set[str] partialSums) -> item[int]\n"
     "input set[int] a\noutput item[int] y\ny = sumSet(a)\n", "signature-mismatch", 1, 26),
    ("function sumSet(set[int] parts) -> item[int]\n"
     "input set[int] a\noutput item[int] y\ny = sumSet(a)\n", "signature-mismatch", 1, 10),
    # bindings that do not resolve
    ('from python "no_such_helpers.py" import f\ninput set a\noutput set y\ny = f(a)\n',
     "import-failed", 1, 1),
    ("from python tests.dsl.log_count_functions import sumSett\n"
     "input set[int] a\noutput item[int] y\ny = sumSett(a)\n", "unknown-import", 1, 50),
    ('from native "missing.elf" import f\nfunction f(set x) -> set\n'
     "input set a\noutput set y\ny = f(a)\n", "unbound-function", 1, 1),
    # a declared function without implementation
    ("function h(set x) -> set\ninput set a\noutput set y\ny = h(a)\n", "unbound-function", 1, 10),
]


@pytest.mark.parametrize(("text", "code", "line", "column"), LOAD_TABLE)
def test_binding_problem_is_reported_at_its_position(text: str, code: str, line: int,
                                                     column: int) -> None:
    with pytest.raises(CompositionError) as info:
        dsl.loads(text, "b.dd", functions={"sumSet": log_count_functions.sumSet})
    assert first_error(info.value) == (code, line, column)


def test_message_quotes_the_line_with_a_caret_under_the_name() -> None:
    text = Path(__file__).with_name("log_count.dd").read_text().replace(
        "for each log in logSet", "for each log in logSets")
    with pytest.raises(CompositionError) as info:
        dsl.loads(text, "log_count.dd", functions=log_count_functions)
    assert str(info.value).splitlines() == [
        "log_count.dd:8:31: error: set 'logSets' is not declared (did you mean 'logSet'?)",
        "    partialSums = for each log in logSets :",
        "                                  ^^^^^^^",
    ]
    assert info.value.span.line == 8 and info.value.span.column == 31
    assert info.value.hint == "did you mean 'logSet'?"


def test_every_error_of_a_file_is_reported() -> None:
    text = ("input sett a\n"                        # syntax
            "output set y\n"
            "y = for eech v in a : f(v)\n"          # syntax
            "z = f(a b)\n"                          # syntax
            "function f(set x) -> set\n")
    with pytest.raises(DslSyntaxError) as info:
        dsl.parse(text, "many.dd")
    lines = [d.span.line for d in info.value.diagnostics if d.is_error]
    assert lines == [1, 3, 4]
    assert str(info.value).endswith("3 errors")


def test_every_semantic_error_of_a_file_is_reported() -> None:
    text = ("input set a\noutput set y, w\n"
            "y = f(b)\n"           # undeclared set
            "w = f(z = a)\n"       # unknown parameter
            "function f(set x) -> set\n")
    with pytest.raises(CompositionError) as info:
        dsl.parse(text, "sem.dd")
    codes = [(d.code, d.span.line) for d in info.value.diagnostics if d.is_error]
    assert ("undefined-set", 3) in codes and ("unknown-parameter", 4) in codes


def test_syntax_errors_are_syntax_errors_and_composition_errors() -> None:
    with pytest.raises(SyntaxError):
        dsl.parse("input input", "x.dd")
    with pytest.raises(ValueError):
        dsl.parse("input input", "x.dd")


def test_type_errors_are_type_errors() -> None:
    with pytest.raises(CompositionTypeError):
        dsl.parse("input item[str] a\noutput item[int] y\ny = g(a, a)\n" + PRELUDE, "t.dd")
