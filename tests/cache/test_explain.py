"""``dandelion plan --explain`` says which cacheable Python functions cannot be keyed (they
reach a value with no canonical hash), and why, before anything runs."""

from __future__ import annotations

import textwrap

import pytest

from dandelion.cli import main

PROGRAM = """
    import threading

    import dandelion as dd

    LOCK = threading.Lock()

    @dd.compute
    def square(x: int) -> int:
        return x * x

    @dd.compute
    def guarded(x: int) -> int:
        with LOCK:
            return x + 1

    @dd.compute(cacheable=False)
    def stamp(x: int) -> int:
        return x

    @dd.composition
    def both(x: int) -> tuple[int, int, int]:
        return square(x), guarded(x), stamp(x)
"""


def test_plan_explain_names_what_keeps_a_function_from_being_cached(tmp_path, capsys):
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent(PROGRAM))
    assert main(["plan", str(program), "--explain"]) == 0
    out = capsys.readouterr().out
    # before: the plan said "'guarded' is cacheable", and nothing more
    assert "[0] square: keyed by its Python code and what it reaches" in out
    assert "[1] guarded: not cached when it runs: guarded -> LOCK: a lock cannot be hashed" \
        in out
    assert "[2] stamp:" not in out.partition("cache keys")[2]  # declared not cacheable
    assert "'stamp' is not cacheable: declared cacheable=False" in out


def test_plan_explain_says_a_native_function_is_keyed_by_its_image(tmp_path, capsys):
    import shutil

    from dandelion.sdk import build

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    (tmp_path / "one.c").write_text(
        "#include <dandelion.h>\nint dandelion_main(void) { return 0; }\n")
    build([tmp_path / "one.c"], tmp_path / "one.elf")
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import dandelion as dd

        @dd.compute(native="one.elf")
        def one(x: int) -> int:
            return x
    """))
    assert main(["plan", f"{tmp_path / 'prog.py'}:one", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "[0] one: keyed by its native image's digest where that runs" in out
    assert "[0] one: keyed by its Python code and what it reaches" in out
