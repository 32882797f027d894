"""One IR from three front ends: every example's decorator, .dd and .dcl versions agree."""

from __future__ import annotations

from pathlib import Path

import pytest

import dandelion as dd
import dandelion.dsl as dsl
from dandelion.ir import from_json, to_json
from dandelion.loading import import_file
from tests.dsl import log_count_functions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: (example file stem, composition)
CASES = [("wordcount", "word_count"), ("matmul", "matmul"), ("matmul", "matmul_many"),
         ("keyed_join", "order_report")]


def decorated(stem: str, name: str) -> dd.program.Program:  # type: ignore[name-defined]
    module = import_file(EXAMPLES / f"{stem}.py")
    return getattr(module, name).program


@pytest.mark.parametrize(("stem", "name"), CASES)
def test_dd_twin_lowers_to_the_decorator_ir(stem: str, name: str) -> None:
    expected = decorated(stem, name)
    program = dsl.load(EXAMPLES / f"{stem}.dd", entry=name)
    assert program.module == expected.module
    assert program.entry == expected.entry
    assert set(program.artifacts) == set(expected.artifacts)


@pytest.mark.parametrize(("stem", "name"), CASES)
def test_dcl_twin_lowers_to_the_decorator_ir(stem: str, name: str) -> None:
    expected = decorated(stem, name)
    functions = import_file(EXAMPLES / f"{stem}.py")
    program = dsl.load(EXAMPLES / f"{stem}.dcl", functions=functions, entry=name)
    assert program.module == expected.module


@pytest.mark.parametrize(("stem", "name"), CASES)
def test_ir_survives_json_exactly(stem: str, name: str) -> None:
    module = dsl.load(EXAMPLES / f"{stem}.dd", entry=name).module
    assert from_json(to_json(module)) == module
    assert to_json(from_json(to_json(module))) == to_json(module)


def test_dd_twin_runs_like_the_decorator_version() -> None:
    pages = [b"the quick brown fox", b"", b"jumps  over\nthe lazy dog"]
    program = dsl.load(EXAMPLES / "wordcount.dd")
    assert dd.run(program, pages, engine="inline") == \
        dd.run(decorated("wordcount", "word_count"), pages, engine="inline") == 9


def test_keyed_join_dd_keeps_customers_without_orders() -> None:
    ns = import_file(EXAMPLES / "keyed_join.py")
    report = dd.run(dsl.load(EXAMPLES / "keyed_join.dd"), ns.CUSTOMERS, ns.ORDERS,
                    engine="inline")
    # A program read from text has no Python annotations: outputs come back as values.
    assert [(r["customer"], r["orders"], r["spent"]) for r in report] == [
        ("ada", 2, 35), ("grace", 0, 0), ("edsger", 1, 12)]


def test_founding_example_runs_as_written_once_functions_are_bound() -> None:
    path = Path(__file__).with_name("log_count.dd")
    program = dsl.load(path, functions=log_count_functions)
    assert program.module == log_count_functions.log_count.program.module
    assert dd.run(program, eventPattern="ERROR", serverList="alpha,beta,gamma",
                  engine="inline") == 3
    assert dd.run(program, eventPattern="ok", serverList="beta", engine="inline") == 2


@pytest.mark.parametrize("stem", ["wordcount", "matmul", "keyed_join"])
def test_examples_are_in_canonical_form(stem: str) -> None:
    from dandelion.dsl.fmt import format_text

    for suffix in (".dd", ".dcl"):
        path = EXAMPLES / f"{stem}{suffix}"
        text = path.read_text()
        assert format_text(text, str(path)) == text


@pytest.mark.parametrize(("stem", "name"), CASES)
def test_dcl_twin_binds_the_python_file_next_to_it(stem: str, name: str) -> None:
    program = dsl.load(EXAMPLES / f"{stem}.dcl", entry=name)
    assert program.module == decorated(stem, name).module


@pytest.mark.parametrize("suffix", [".dd", ".dcl"])
def test_the_cli_runs_dsl_files(suffix: str, capsys: pytest.CaptureFixture[str]) -> None:
    from dandelion.cli import main

    page = EXAMPLES / "wordcount.py"
    words = len(page.read_bytes().decode().split())
    assert main(["run", str(EXAMPLES / f"wordcount{suffix}"), "-q", "-i", f"pages=@{page}"]) == 0
    assert capsys.readouterr().out.strip() == str(words)
    assert main(["check", str(EXAMPLES / f"keyed_join{suffix}")]) == 0
