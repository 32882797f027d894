"""Shared fixtures.

``runtime`` is parametrized over every backend/engine combination this machine can run, so
the conformance suite (``tests/conformance``) defines the semantics once and checks it on
each; combinations that need something absent are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Iterator

import pytest

import dandelion as dd


def _needs(module: str) -> str | None:
    return None if importlib.util.find_spec(module) else f"{module} is not installed"


#: id -> (Runtime keyword arguments, reason to skip or None, extra marks)
RUNTIMES: dict[str, tuple[dict[str, Any], str | None, tuple[Any, ...]]] = {
    "local-inline": ({"backend": "local", "engine": "inline", "workers": 2}, None, ()),
    "local-process": ({"backend": "local", "engine": "process", "workers": 2},
                      None if sys.platform.startswith("linux") else "the process engine "
                      "needs Linux (seccomp)", ()),
}


def _params() -> list[Any]:
    out = []
    for name, (options, skip, marks) in RUNTIMES.items():
        all_marks = list(marks)
        if skip:
            all_marks.append(pytest.mark.skip(reason=skip))
        out.append(pytest.param(options, id=name, marks=all_marks))
    return out


@pytest.fixture(scope="session", params=_params())
def runtime(request: pytest.FixtureRequest) -> Iterator[dd.Runtime]:
    """A runtime of each backend/engine combination, shared by the session."""
    options = dict(request.param)
    rt = dd.Runtime(**options)
    try:
        yield rt
    finally:
        rt.close()
