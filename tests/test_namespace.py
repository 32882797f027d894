"""``import dandelion as dd``: the namespace is exactly the public API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dandelion as dd

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_dir_of_dd_is_the_public_api() -> None:
    import dandelion.cli  # noqa: F401  (binds a submodule on the package)

    # dd.all is public but left out of ``import *``, where it would hide the builtin all
    assert dir(dd) == sorted([*dd.__all__, "all"])
    for name in dir(dd):
        assert getattr(dd, name) is not None


def test_no_helper_of_the_package_leaks_into_the_namespace() -> None:
    code = "import dandelion as dd; print(sorted(n for n in vars(dd) if not n.startswith('_')))"
    names = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)
    # what a fresh import binds: the public API and the submodules it imported
    assert set(names) <= set(dd.__all__) | {"errors", "items"}
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(names)


def test_every_documented_name_of_dd_exists() -> None:
    documented = set(re.findall(r"auto(?:function|class|data):: dandelion\.(\w+)\n",
                                (DOCS / "api.rst").read_text()))
    assert documented and documented <= set(dir(dd))
