"""Libraries imported at module level (numpy, colorsys, json, re, math, collections,
dataclasses, statistics; aliases, submodules, ``from`` imports, reached through helpers) work
in every entry point on every engine: the sandbox preloads them."""

from __future__ import annotations

import json

import pytest

import dandelion as dd
from tests.userpaths.conftest import PROGRAMS, dandelion
from tests.userpaths.programs import libraries

CASES = sorted(libraries.CASES)


def expected(case: str) -> object:
    value, fn = libraries.CASES[case]
    return fn.fn(value)  # the plain Python function, called directly


@pytest.mark.parametrize("case", CASES)
def test_dd_run(engine, case):
    value, _fn = libraries.CASES[case]
    assert dd.run(getattr(libraries, case), value, engine=engine) == expected(case)


@pytest.mark.parametrize("case", ["mean_of", "hue_of", "norm_of"])
def test_command_line(engine, case):
    value, _fn = libraries.CASES[case]
    items = [f"xs={v}" if case != "hue_of" else f"rgb={v}" for v in value]
    out = dandelion("run", f"{PROGRAMS / 'libraries.py'}:{case}", "--engine", engine,
                    *(a for item in items for a in ("-i", item)), "--json", "-q")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == pytest.approx(expected(case))
@pytest.mark.parametrize("case", CASES)
def test_client_against_dandelion_serve(client, case):
    composition = getattr(libraries, case)
    client.register(composition)
    value, _fn = libraries.CASES[case]
    assert client.invoke(composition, value) == expected(case)
