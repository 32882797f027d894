"""Values written in a composition's body are constants: ``scale(x, 3.0)`` gives the
function the value, on every engine, through a real server (registered by a client, and
invoked by name, where the server holds the constant in the IR it was given), with
``dandelion run`` and ``dandelion invoke``, and on a real Ray cluster.  A composition's
own input with a default is a constant that a run may replace.  A constant is part of the
composition: another constant is another cache entry; and a value that is not of its
parameter's type is refused where it is written."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

import dandelion as dd
from tests.userpaths.conftest import PROGRAMS, dandelion
from tests.userpaths.programs import constants

VALUES = np.array([4.0, 8.0, 12.0])
#: composition, its inputs, its result
EXPECTED = [
    (constants.tripled, (2.0,), 6.0),
    (constants.each_halved, ([1.0, 3.0],), [0.5, 1.5]),
    (constants.sweep, (2.0,), [2.0, 4.0, 6.0]),
    (constants.content_words, (["the", "cat", "of", "a", "house"],), "cat house"),
    (constants.score, (VALUES,), 7.0),
    (constants.labelled, (1.5,), {"tag": "doubled", "value": 3.0}),
    (constants.stretched, (2.0,), 8.0),
    (constants.stretched, (2.0, 0.5), 1.0),
    (constants.tripled_then_stretched, (1.0,), 12.0),
    (constants.each_stretched, ([1.0, 2.0],), [4.0, 8.0]),
]
IDS = [f"{c.name}{len(a)}" for c, a, _ in EXPECTED]


@pytest.mark.parametrize(("composition", "inputs", "want"), EXPECTED, ids=IDS)
def test_constants_reach_the_function(engine, composition, inputs, want):
    assert dd.run(composition, *inputs, engine=engine, cache=False) == want


def test_the_ir_holds_each_constant_once_per_argument():
    comp = constants.labelled.composition
    held = {d.name: d.value is not None for d in comp.ephemeral}
    assert held == {"scale_factor": True, "tagged_tag": True, "scale_result": False}
    assert [d.value is not None for d in constants.stretched.composition.inputs] == [
        False, True]


def test_another_constant_is_another_cache_entry(engine, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dandelion.function")

    @dd.compute
    def announced(x: float, factor: float) -> float:
        print(f"computing {x} * {factor}")
        return x * factor

    def times(factor):
        @dd.composition(name="times")
        def composition(x: float) -> float:
            return announced(x, factor)
        return composition

    with dd.Runtime(engine=engine, cache=tmp_path / "cache") as rt:
        assert rt.run(times(2.0), 3.0) == 6.0
        assert rt.run(times(2.0), 3.0) == 6.0  # served
        assert rt.run(times(5.0), 3.0) == 15.0
    assert [r.getMessage().split("] ")[-1] for r in caplog.records
            if r.name == "dandelion.function"] == ["computing 3.0 * 2.0", "computing 3.0 * 5.0"]


def test_a_value_of_another_type_is_refused_where_it_is_written():
    with pytest.raises(dd.CompositionTypeError, match="argument 'factor' of 'scale': ") as e:
        @dd.composition
        def wrong(x: float) -> float:
            return constants.scale(x, "three")
    assert e.value.span is not None and e.value.span.file == __file__
    with pytest.raises(dd.CompositionTypeError, match="mixes sets of the composition"):
        @dd.composition
        def mixed(x: float, y: float) -> list[str]:
            return constants.keep([x, y], ["a"])


def test_the_script_runs_as_written():
    out = subprocess.run([sys.executable, str(PROGRAMS / "constants.py")], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["6.0 [0.5, 1.5] [2.0, 4.0, 6.0]", "cat house",
                                       "7.0 {'tag': 'doubled', 'value': 3.0}", "8.0 1.0",
                                       "12.0 [4.0, 8.0]"]


@pytest.mark.parametrize(("target", "args", "want"), [
    ("tripled", ["-i", "x=2"], 6.0),
    ("stretched", ["-i", "x=2"], 8.0),
    ("stretched", ["-i", "x=2", "-i", "factor=0.5"], 1.0),
    ("content_words", ["-i", "words=the", "-i", "words=cat"], "cat"),
])
def test_dandelion_run(engine, target, args, want):
    out = dandelion("run", f"{PROGRAMS / 'constants.py'}:{target}", "--engine", engine, *args,
                    "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == want


def test_dandelion_plan_lists_the_constants():
    out = dandelion("plan", f"{PROGRAMS / 'constants.py'}:labelled")
    assert out.returncode == 0, out.stderr
    assert "  constants: scale_factor: item[float] = 2.0, tagged_tag: item[any] = " \
           "{'name': 'doubled'}\n" in out.stdout
    out = dandelion("plan", f"{PROGRAMS / 'constants.py'}:stretched")
    assert "  inputs:  x: item[float], factor: item[float] = 4.0\n" in out.stdout


def test_through_a_client_of_a_real_server(client):
    for composition, inputs, want in EXPECTED:
        client.register(composition)
        got = client.invoke(composition, *inputs)
        assert got == want, composition.name
        by_name = client.invoke(composition.name, *inputs)  # the IR the server holds
        assert by_name == want, composition.name
    done = client.request("POST", "/v1/compositions/stretched/invoke",
                          {"inputs": {"x": [2.0]}})  # a raw request leaves the default out
    assert done["outputs"]["result"][0]["value"] == 8.0
    described = client.describe("composition", "stretched")["inputs"]
    assert [i.get("defaulted", False) for i in described] == [False, True]


@pytest.mark.ray
@pytest.mark.slow
def test_ray(ray_cluster):
    with dd.Runtime(backend="ray", cache=False) as rt:
        for composition, inputs, want in EXPECTED:
            assert rt.run(composition, *inputs) == want, composition.name
