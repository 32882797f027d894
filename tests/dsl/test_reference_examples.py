"""The reference system's own ``.dcl`` examples (its parser's test inputs, in
``reference/``, see its README): they are syntactically valid, so they read and format;
``check`` reports what is wrong with their meaning, and unbound functions as warnings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dandelion.dsl.api import read_structure
from dandelion.dsl.fmt import format_text

REFERENCE = {p.stem: p.read_text()
             for p in sorted((Path(__file__).parent / "reference").glob("*.dcl"))}


def dandelion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dandelion", *args], capture_output=True,
                          text=True, timeout=120)


def test_all_the_reference_examples_are_here() -> None:
    assert sorted(REFERENCE) == ["composition", "example_input", "function", "join",
                                 "optional", "sharding", "simple"]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_every_reference_example_reads_and_formats_idempotently(name: str) -> None:
    text, filename = REFERENCE[name], f"{name}.dcl"
    once = format_text(text, filename)
    assert format_text(once, filename) == once
    assert read_structure(once, filename).module == read_structure(text, filename).module


def test_fmt_formats_a_file_whose_only_errors_are_semantic(tmp_path: Path) -> None:
    path = tmp_path / "sharding.dcl"
    path.write_text(REFERENCE["sharding"])  # uses InputC, which it never declares
    out = dandelion("fmt", str(path))
    assert out.returncode == 0, out.stderr
    assert "FunB(A = keyed InputA, B = anyKeyed InputB, C = anyEach InputC) => (InterD = D);" \
        in out.stdout
    assert dandelion("check", str(path)).returncode == 1  # check still reports InputC


def test_fmt_refuses_a_file_it_could_not_write_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "lossy.dd"
    path.write_text("function f(set a) -> set\ninput set xs\noutput set ys\nys = f(b = xs)\n")
    out = dandelion("fmt", str(path))
    assert out.returncode == 1
    assert "'f' has no parameter 'b'" in out.stderr


def test_check_reports_unbound_functions_as_warnings_and_the_structure_as_usual(
        tmp_path: Path) -> None:
    path = tmp_path / "sharding.dcl"
    path.write_text(REFERENCE["sharding"])
    out = dandelion("check", str(path))
    assert out.returncode == 1
    assert "error: set 'InputC' is not declared" in out.stderr
    assert "warning: function 'FunA' is declared but not bound to an implementation" \
        in out.stderr
    assert "has no implementation" not in out.stderr
    fixed = tmp_path / "fixed.dcl"
    fixed.write_text(REFERENCE["sharding"].replace("(InputA, InputB)",
                                                   "(InputA, InputB, InputC)"))
    out = dandelion("check", str(fixed))
    assert out.returncode == 0, out.stderr
    assert "ok: composition 'Test', 3 application(s), 4 warning(s)" in out.stdout
    assert "define @dd.compute FunB in fixed.py next to this file" in out.stderr


def test_a_file_of_declarations_only_checks(tmp_path: Path) -> None:
    path = tmp_path / "decls.dcl"
    path.write_text("function Access(AccessToken) => (HTTPRequest);\n")
    out = dandelion("check", str(path))
    assert out.returncode == 0, out.stderr
    assert "ok: 1 function declaration(s), no composition, 1 warning(s)" in out.stdout


def test_running_needs_the_functions_bound(tmp_path: Path) -> None:
    path = tmp_path / "fixed.dcl"
    path.write_text(REFERENCE["sharding"].replace("(InputA, InputB)",
                                                  "(InputA, InputB, InputC)"))
    out = dandelion("run", str(path), "-i", "InputA=1", "-i", "InputB=2", "-i", "InputC=3")
    assert out.returncode == 1
    assert "function 'FunA' has no implementation" in out.stderr
