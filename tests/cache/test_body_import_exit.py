"""Keying a function that imports, in its body, a user module that exits when imported does
not end the caller's program: the module is left to the function's run to report."""

from __future__ import annotations

from dandelion.cache.identity import python_identity


def test_a_module_that_exits_on_import_does_not_end_the_caller(load, tmp_path):
    (tmp_path / "quitter_mod.py").write_text("import sys\nsys.exit('no')\n")
    mod = load("""
        import dandelion as dd

        @dd.compute
        def f(x: int) -> int:
            import quitter_mod  # noqa: F401
            return x
    """, "exits_in_body")
    assert len(python_identity(mod.f.fn)) == 32  # raised SystemExit before
