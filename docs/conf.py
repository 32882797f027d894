"""Sphinx configuration of the Dandelion documentation.

Build it with warnings as errors (``tox -e docs``, or by hand)::

    sphinx-build -W -b html docs docs/_build/html
    sphinx-build -W -b doctest docs docs/_build/doctest

The package is imported from the installed distribution (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dandelion

HERE = Path(__file__).resolve().parent

project = "Dandelion"
author = "The Dandelion developers"
copyright = "2026, The Dandelion developers"
release = dandelion.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Every ``>>>`` block runs under ``-b doctest``: the pages' own and the docstrings autodoc pulls in.
doctest_global_setup = "import dandelion as dd"

html_theme = "alabaster"
html_title = f"Dandelion {release}"
html_theme_options = {"description": "Serverless compositions of pure functions"}

# -- Feature pages -----------------------------------------------------------------------------
# Pages such as dsl.rst, isolation.rst, serve.rst or ray.rst are written as the features land.
# ``index.rst`` holds the marker below; it becomes a toctree of the feature pages that exist, so
# the build is -W clean before and after each page arrives, and no page is left out of the tree.

CORE_PAGES = ("index", "idea", "tutorial", "concepts", "examples", "api", "cli",
              "architecture")
FEATURE_ORDER = ("dsl", "isolation", "serve", "ray")
MARKER = ".. feature-pages::"


def feature_pages() -> list[str]:
    """The top-level pages that are not core pages: known features first, then the rest."""
    found = {p.stem for p in HERE.glob("*.rst")} - set(CORE_PAGES)
    return [p for p in FEATURE_ORDER if p in found] + sorted(found - set(FEATURE_ORDER))


def insert_feature_pages(app: Any, docname: str, source: list[str]) -> None:
    """Replace the marker in ``index`` by a toctree of the feature pages."""
    if docname != "index" or MARKER not in source[0]:
        return
    pages = feature_pages()
    tree = ""
    if pages:
        entries = "".join(f"   {page}\n" for page in pages)
        tree = f".. toctree::\n   :maxdepth: 2\n   :caption: Features\n\n{entries}"
    source[0] = source[0].replace(MARKER, tree)


def setup(app: Any) -> None:
    app.connect("source-read", insert_feature_pages)
