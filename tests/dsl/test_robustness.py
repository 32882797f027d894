"""Any input yields IR or a DslSyntaxError/CompositionError: never another exception."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dandelion.dsl as dsl
from dandelion.errors import CompositionError
from dandelion.ir import Module

HERE = Path(__file__).parent
EXAMPLES = HERE.parents[1] / "examples"
SEEDS = [(HERE / "log_count.dd").read_text()] + \
    [p.read_text() for p in sorted(EXAMPLES.glob("*.d*")) if p.suffix in (".dd", ".dcl")]
PIECES = ["input", "output", "ephemeral", "item", "set[int]", "for", "each", "key", "any",
          "in", "by", "left", "(", ")", ",", ":", "=", "\n", "    ", "#", "\"", "function",
          "->", "composition", "from", "python", "import", "optional", "_", "x", "f", "{",
          "}", ";", "=>", "keyed", "anyEach", "\x00", "é", "\r\n"]


def outcome(text: str | bytes, notation: str) -> None:
    try:
        module = dsl.parse(text, f"fuzz.{notation}")
    except CompositionError as e:
        assert e.span is not None
        assert str(e)
    else:
        assert isinstance(module, Module)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from(["dd", "dcl"]))
def test_random_bytes_give_ir_or_a_dsl_error(data: bytes, notation: str) -> None:
    outcome(data, notation)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    seed = draw(st.sampled_from(range(len(SEEDS))))
    text = SEEDS[seed]
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "swap"]))
        piece = draw(st.sampled_from(PIECES))
        if action == "insert":
            text = text[:pos] + piece + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 12)):]
        elif action == "replace":
            text = text[:pos] + piece + text[pos + len(piece):]
        else:
            other = draw(st.integers(0, len(text)))
            a, b = sorted((pos, other))
            text = text[:a] + text[b:] + text[a:b]
    notation = "dcl" if SEEDS[seed].lstrip().startswith("function") else "dd"
    return text, draw(st.sampled_from([notation, notation, "dd", "dcl"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_programs_give_ir_or_a_dsl_error(case: tuple[str, str]) -> None:
    outcome(*case)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60))
def test_token_soup_gives_ir_or_a_dsl_error(pieces: list[str]) -> None:
    text = " ".join(pieces)
    outcome(text, "dd")
    outcome(text, "dcl")


def big_program(applications: int) -> str:
    lines = ["function step(item[int] x) -> item[int]", "input item[int] s0",
             f"output item[int] s{applications}"]
    lines += [f"ephemeral item[int] s{i}" for i in range(1, applications)]
    lines += [f"s{i + 1} = step(s{i})" for i in range(applications)]
    return "\n".join(lines) + "\n"


def test_a_one_megabyte_program_parses() -> None:
    # Timing is measured in benchmarks/bench_dsl.py; here: it parses, completely.
    text = big_program(24_000)
    assert len(text) > 1_000_000
    module = dsl.parse(text, "big.dd")
    assert len(module.compositions[0].applications) == 24_000


def test_a_one_megabyte_program_with_an_error_reports_it() -> None:
    text = big_program(24_000).replace("s12000 = step(s11999)", "s12000 = step(s11999")
    try:
        dsl.parse(text, "big.dd")
    except CompositionError as e:
        assert e.span is not None and e.span.line == 24_003 + 11_999
        assert e.hint == "'(' is never closed"
    else:
        raise AssertionError("the error was not found")


@st.composite
def rewritten(draw: st.DrawFn) -> tuple[str, str]:
    """A seed program with layout changes that keep it valid more often than not: spaces,
    comment lines, blank lines, and lines swapped (statements may come in any order)."""
    seed = SEEDS[draw(st.sampled_from(range(len(SEEDS))))]
    lines = seed.split("\n")
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["space", "comment", "blank", "swap"]))
        if action == "space":
            lines[i] = lines[i].replace(" ", "   ", 1).replace(",", " , ", 1)
        elif action == "comment":
            lines.insert(i, "# note")
        elif action == "blank":
            lines.insert(i, "")
        elif i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
    notation = "dcl" if seed.lstrip().startswith("function") else "dd"
    return "\n".join(lines), notation


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), rewritten()))
def test_whatever_parses_formats_to_text_with_the_same_ir(case: tuple[str, str]) -> None:
    from dandelion.dsl.fmt import format_text

    text, notation = case
    try:
        module = dsl.parse(text, f"m.{notation}")
    except CompositionError:
        return
    once = format_text(text, f"m.{notation}")
    assert dsl.parse(once, f"m.{notation}") == module
    assert format_text(once, f"m.{notation}") == once
