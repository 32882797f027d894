"""The Sphinx site builds with warnings as errors, and every example in it runs.

``sphinx-build -b doctest`` runs the ``>>>`` blocks of the pages (tutorial, concepts) and of
the docstrings that the API reference pulls in, so a change of behaviour that the docs
describe fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def sphinx(builder: str, out: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("sphinx", reason="needs the docs extra: pip install -e '.[docs]'")
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder,
         "-d", str(out / "doctrees"), str(DOCS), str(out / builder)],
        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    done = sphinx("html", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("index", "idea", "tutorial", "concepts", "examples", "api", "cli"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page


@pytest.mark.slow
def test_docs_examples_run_and_match(tmp_path: Path) -> None:
    done = sphinx("doctest", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    output = (tmp_path / "doctest" / "output.txt").read_text()
    assert " 0 failures in tests" in output
    for page in ("tutorial", "concepts", "api"):  # their examples were collected and run
        assert f"Document: {page}\n" in output, page


def test_cli_reference_covers_every_command_and_option() -> None:
    """docs/cli.rst is written by hand: it must name every subcommand and option of the CLI."""
    import argparse

    from dandelion.cli import build_parser

    text = (DOCS / "cli.rst").read_text()
    parser = build_parser()
    undocumented = [o for a in parser._actions for o in a.option_strings
                    if o not in ("-h", "--help") and f"``{o}" not in text]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                if f"``dandelion {command}``" not in text:
                    undocumented.append(command)
                undocumented += [f"{command} {o}" for a in sub._actions for o in a.option_strings
                                 if o not in ("-h", "--help") and o not in text]
    assert not undocumented, f"docs/cli.rst does not document {undocumented}"


def test_the_code_cites_only_documents_that_exist() -> None:
    """A docstring or page that points the reader to ``NAME.md`` points to a file of this
    repository (DESIGN.md, for one, is not in it)."""
    import re

    root = DOCS.parent
    sources = [p for folder in ("dandelion", "backends", "dsl", "docs", "examples", "tests")
               for p in (root / folder).rglob("*") if p.suffix in (".py", ".rst", ".c", ".h")]
    missing = []
    for path in sources + [root / "README.md"]:
        if path == Path(__file__).resolve():
            continue
        for name in re.findall(r"\b([\w-]+\.md)\b", path.read_text()):
            if not any((folder / name).is_file() for folder in (root, path.parent)):
                missing.append(f"{path.relative_to(root)}: {name}")
    assert not missing, missing
