"""The formatter: canonical, idempotent, converting between notations through the IR."""

from __future__ import annotations

from pathlib import Path

import pytest

import dandelion.dsl as dsl
from dandelion.cli import main as cli_main
from dandelion.dsl.fmt import format_text, main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PROGRAMS = [
    Path(__file__).with_name("log_count.dd").read_text(),
    # every construct of the notation, written untidily
    "function pair(set l,set r)->set\n"
    "function two(set x) -> ( set a , set b )\n"
    "io function get(set r)->set\n"
    "composition inner\n"
    "input set p\noutput set q\nq = get(p)\n"
    "composition main\n"
    "  input set a,b\n  output set y ,z\n  ephemeral set e\n"
    "  e = for each key u in a,each key w in b by u full w :pair(u,optional w)\n"
    "  y, _ = two(e)\n"
    "  z = for any key g in e : inner(g)\n",
    "input set[int] xs\noutput set[int] ys\n"
    "ys = for any v in xs, each w in xs : pair(l = v, r = w)\nfunction pair(set l, set r) -> set\n",
]


@pytest.mark.parametrize("text", PROGRAMS)
def test_formatting_is_idempotent_and_keeps_the_ir(text: str) -> None:
    once = format_text(text, "p.dd")
    assert format_text(once, "p.dd") == once
    assert dsl.parse(once, "p.dd") == dsl.parse(text, "p.dd")


#: .dcl has no types, shapes or I/O kinds: programs whose IR it can express exactly.
DCL_EXPRESSIBLE = [PROGRAMS[1].replace("io function", "function")]


@pytest.mark.parametrize("text", DCL_EXPRESSIBLE)
def test_dd_to_dcl_and_back_keeps_the_ir_of_untyped_programs(text: str) -> None:
    module = dsl.parse(text, "p.dd")
    dcl = format_text(text, "p.dd", to="dcl")
    assert dsl.parse(dcl, "p.dcl") == dsl.parse(format_text(text, "p.dd"), "p.dd") == module
    back = format_text(dcl, "p.dcl", to="dd")
    assert dsl.parse(back, "p.dd").compositions == module.compositions


def test_comments_stay_with_the_statement_that_follows_them() -> None:
    text = ("# header\ninput set a\n# what y is\noutput set y\n\n"
            "#  compute it\ny = for each v in a :\n    f(v)\n# trailing\n")
    assert format_text(text, "c.dd") == text


def test_canonical_form_of_a_messy_file() -> None:
    messy = "input   set  a\noutput set y\ny=for each v in a:f( v )\n"
    assert format_text(messy, "m.dd") == ("input set a\noutput set y\n\n"
                                          "y = for each v in a :\n    f(v)\n")


def test_fmt_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.dd"
    path.write_text("input   set  a\noutput set y\ny=f(a)\n")
    assert main([str(path), "--check"]) == 1
    assert main([str(path), "-w"]) == 0
    assert main([str(path), "--check"]) == 0
    assert main([str(path), "--to", "dcl", "-w"]) == 0
    assert (tmp_path / "m.dcl").read_text() == (
        "function f (arg0) => (result);\n"
        "composition m (a) => (y) {\n    f(arg0 = all a) => (y = result);\n}\n")
    capsys.readouterr()
    assert cli_main(["fmt", str(tmp_path / "m.dcl"), "--to", "dd"]) == 0
    assert "y = f(a)" in capsys.readouterr().out


def test_fmt_reports_errors_and_exits_non_zero(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.dd"
    path.write_text("input sett a\n")
    assert main([str(path)]) == 1
    err = capsys.readouterr().err
    assert "bad.dd:1:7: error: unexpected 'sett' (did you mean 'set'?)" in err
    assert "^^^^" in err


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.dcl")), ids=lambda p: p.name)
def test_dcl_examples_convert_to_dd_and_back(path: Path) -> None:
    dd_text = format_text(path.read_text(), str(path), to="dd")
    assert format_text(dd_text, path.stem + ".dd", to="dcl") == path.read_text()


def test_dcl_comments_are_kept_too() -> None:
    text = ("// fetch\nfunction HTTP (requests) => (headers, bodies);\n"
            "composition Fetch (urls) => (pages) {\n    # fan out\n"
            "    HTTP(requests = each urls) => (pages = bodies);\n}\n// end\n")
    assert format_text(text, "f.dcl") == text


def test_comments_after_code_stay_on_their_statement() -> None:
    text = ("input set a, b  # the inputs\noutput set y # result\n\n"
            "y = for each v in a :  # loop\n    f(v, b)\n")
    assert format_text(text, "e.dd") == (
        "input set a, b  # the inputs\noutput set y  # result\n\n"
        "y = for each v in a :  # loop\n    f(v, b)\n")
    moved = format_text("input set a\noutput set y\ny = f(\n  a  # odd place\n)\n", "e.dd")
    assert "# odd place" in moved
    assert format_text(moved, "e.dd") == moved
