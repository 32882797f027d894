"""Default parameter values: a call that leaves a parameter with a default out gets the
default, as a Python call does, whether the function runs alone (``dd.run``, ``dandelion
run``, a client of a real server) or in a composition that does not pass it (Python, and
the DSL twins), on every engine and on a real Ray cluster; and a composition's own input
with a default may be left out by its caller.  A default takes part in the function's
identity: another default is another cache entry."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

import dandelion as dd
from dandelion.errors import CompositionTypeError, InputError
from tests.userpaths.conftest import PROGRAMS, dandelion
from tests.userpaths.programs import defaults

M = np.array([[1.0, 3.0], [3.0, 1.0]])


def test_a_function_run_alone_leaves_out_what_has_a_default(engine):
    with dd.Runtime(engine=engine, cache=False) as rt:
        assert rt.run(defaults.scale, 3.0) == 6.0
        assert rt.run(defaults.scale, 3.0, 3.0) == 9.0
        assert rt.run(defaults.scale, 3.0, shift=1.0) == 7.0  # factor left out, shift given
        assert rt.run(defaults.scale, x=3.0, factor=1.0, shift=1.0) == 4.0
        assert np.array_equal(rt.run(defaults.normalised, M), M / M.sum(axis=0))
        assert np.array_equal(rt.run(defaults.normalised, M, 1), M / M.sum(axis=1)[:, None])
        assert rt.run(defaults.greeting, "ada") == "hello, ada!"
        assert rt.run(defaults.greeting, "ada", "hi") == "hi, ada!"


def test_a_composition_leaves_out_what_has_a_default(engine):
    with dd.Runtime(engine=engine, cache=False) as rt:
        assert rt.run(defaults.doubled, 3.0) == 6.0
        assert rt.run(defaults.shifted, 3.0, 0.5) == 6.5
        assert rt.run(defaults.limited, [1.0, 2.0, 4.0]) == [2.0, 4.0, 5.0]


def test_a_composition_input_with_a_default_may_be_left_out(engine):
    with dd.Runtime(engine=engine, cache=False) as rt:
        assert rt.run(defaults.stretched, 3.0) == 9.0
        assert rt.run(defaults.stretched, 3.0, 4.0) == 12.0
        assert rt.run(defaults.stretched, x=3.0, factor=1.0) == 3.0


def test_an_optional_annotation_with_a_default_of_none(engine):
    """``limit: int | None = None``: an int, or left out (or given None, which an int input
    cannot hold: the same, as in Python); a composition passes its own such input on, and
    the empty set it holds when left out gives the function its default."""
    with dd.Runtime(engine=engine, cache=False) as rt:
        assert rt.run(defaults.head, [1, 2, 3]) == [1, 2, 3]
        assert rt.run(defaults.head, [1, 2, 3], 2) == [1, 2]
        assert rt.run(defaults.head, [1, 2, 3], None) == [1, 2, 3]
        assert rt.run(defaults.firsts, [1, 2, 3]) == [1, 2, 3]
        assert rt.run(defaults.firsts, [1, 2, 3], 1) == [1]
        assert rt.run(defaults.greeting, "ada", None) == "None, ada!"  # untyped: None itself
    assert [(p.name, str(p.type), p.defaulted) for p in defaults.head.spec.params] == [
        ("xs", "set[int]", False), ("limit", "item[int]", True)]


def test_a_parameter_without_a_default_is_still_required(engine):
    with pytest.raises(InputError, match="missing input.*x") as info:
        dd.run(defaults.scale, factor=2.0, engine=engine)
    assert "factor" not in str(info.value).split("missing")[1]
    with pytest.raises(CompositionTypeError, match=r"'scale' is missing argument\(s\): x$"):
        @dd.composition
        def no_x(factor: float) -> float:
            return defaults.scale(factor=factor)


def test_the_ir_says_which_parameters_have_a_default():
    spec = defaults.scale.spec
    assert [(p.name, p.defaulted) for p in spec.params] == [
        ("x", False), ("factor", True), ("shift", True)]
    app = defaults.doubled.program.composition.applications[0]
    assert [a.param for a in app.arguments] == ["x"]  # left out: not bound at all


def test_another_default_is_another_cache_entry(engine, tmp_path, caplog):
    """Same name, same body, another default: the run computes again (it prints)."""
    caplog.set_level(logging.INFO, logger="dandelion.function")

    def make(greet):
        @dd.compute(name="greeting")
        def greeting(name, greet=greet):
            print(f"greeting {name} with {greet}")
            return f"{greet}, {name}!"
        return greeting

    with dd.Runtime(engine=engine, cache=tmp_path / "cache") as rt:
        assert rt.run(make("hello"), "ada") == "hello, ada!"
        assert rt.run(make("hello"), "ada") == "hello, ada!"  # served
        assert rt.run(make("howdy"), "ada") == "howdy, ada!"
    assert [r.getMessage().split("] ")[-1] for r in caplog.records
            if r.name == "dandelion.function"] == ["greeting ada with hello",
                                                   "greeting ada with howdy"]


def test_the_script_runs_as_written():
    out = subprocess.run([sys.executable, str(PROGRAMS / "defaults.py")], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["6.0 9.0 7.0", "6.0 6.5 [2.0, 4.0, 5.0]",
                                       "hello, ada! hi, ada!", "9.0 12.0"]


@pytest.mark.parametrize(("target", "args", "want"), [
    ("scale", ["-i", "x=3"], 6.0),
    ("scale", ["-i", "x=3", "-i", "shift=1"], 7.0),
    ("scale", ["-i", "x=3", "-i", "factor=4"], 12.0),
    ("stretched", ["-i", "x=3"], 9.0),
    ("stretched", ["-i", "x=3", "-i", "factor=4"], 12.0),
])
def test_dandelion_run_leaves_out_what_has_a_default(engine, target, args, want):
    out = dandelion("run", f"{PROGRAMS / 'defaults.py'}:{target}", "--engine", engine, *args,
                    "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == want


@pytest.mark.parametrize("target", ["defaults.py:limited", "defaults.dd", "defaults.dcl"])
def test_the_dsl_twins_leave_out_what_has_a_default(engine, target):
    """The .dd calls ``scale(x)`` by position, the .dcl names only ``x``: the same IR."""
    out = dandelion("run", str(PROGRAMS / target), "--engine", engine, "-i", "xs=1", "-i",
                    "xs=2", "-i", "xs=4", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [2.0, 4.0, 5.0]


def test_the_dd_and_dcl_twins_lower_to_one_ir():
    from dandelion.ir.serialize import content_hash
    from dandelion.loading import load_program

    dd_ir, dcl_ir = (load_program(str(PROGRAMS / f"defaults.{notation}"), runnable=True)
                     for notation in ("dd", "dcl"))
    assert content_hash(dd_ir.composition) == content_hash(dcl_ir.composition)
    assert dd_ir.module.functions == defaults.limited.program.module.functions


def test_dandelion_run_still_asks_for_what_has_no_default():
    out = dandelion("run", f"{PROGRAMS / 'defaults.py'}:scale", "-i", "factor=4")
    assert out.returncode == 2, out.stderr
    assert "missing input(s): x\n" in out.stderr


def test_through_a_client_of_a_real_server(client):
    client.register(defaults.scale)
    client.register(defaults.greeting)
    assert client.invoke(defaults.scale, 3.0) == 6.0
    assert client.invoke(defaults.scale, 3.0, shift=1.0) == 7.0
    assert client.invoke(defaults.scale, 3.0, 4.0) == 12.0
    with pytest.raises(InputError, match=r"^function 'scale' is missing input\(s\): x$"):
        client.invoke(defaults.scale, factor=4.0)
    assert client.invoke(defaults.greeting, "ada") == "hello, ada!"
    client.register(defaults.limited)
    assert client.invoke(defaults.limited, [1.0, 2.0, 4.0]) == [2.0, 4.0, 5.0]
    # a request that says nothing of a parameter with a default, as the server describes it
    described = client.describe("function", "scale")["params"]
    assert [p.get("defaulted", False) for p in described] == [False, True, True]
    done = client.request("POST", "/v1/functions/scale/invoke", {"inputs": {"x": [3.0]}})
    assert done["outputs"]["result"][0]["value"] == 6.0
    assert client.invoke("scale", 3.0) == 6.0  # (by name: the server's description)
    client.register(defaults.firsts)
    assert client.invoke(defaults.firsts, [1, 2, 3]) == [1, 2, 3]
    assert client.invoke("firsts", [1, 2, 3], 2) == [1, 2]
    client.register(defaults.stretched)  # its default in the IR: by name too
    assert client.invoke(defaults.stretched, 3.0) == 9.0


@pytest.mark.ray
@pytest.mark.slow
def test_ray(ray_cluster):
    with dd.Runtime(backend="ray", cache=False) as rt:
        assert rt.run(defaults.scale, 3.0) == 6.0
        assert rt.run(defaults.scale, 3.0, shift=1.0) == 7.0
        assert rt.run(defaults.limited, [1.0, 2.0, 4.0]) == [2.0, 4.0, 5.0]
        assert rt.run(defaults.stretched, 3.0) == 9.0
