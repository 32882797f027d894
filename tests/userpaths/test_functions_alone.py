"""A ``@dd.compute`` function runs on its own as a worker invokes a registered function: its
call alone (``dandelion.program.call_module``), in a sandbox, cached like any run, returning
what a composition of it would (and what ``Client.invoke`` gives)."""

from __future__ import annotations

import subprocess

import pytest

import dandelion as dd
from dandelion.io import system_HTTPGet
from tests.userpaths.conftest import PROGRAMS, dandelion
from tests.userpaths.programs import alone, failing

FILE = str(PROGRAMS / "alone.py")


def test_dd_run_runs_a_compute_function_with_its_module_helper_and_constant(engine):
    assert dd.run(alone.double, x=5, engine=engine) == 11
    assert dd.run(alone.double, 5, engine=engine) == 11
    assert dd.run(alone.split, n=10, engine=engine) == (3, 1)
    assert dd.run(alone.split, n=10, engine=engine).rest == 1


def test_it_runs_in_a_sandbox_not_in_the_callers_process():
    """On the process engine (the default), not the inline one: only that one sandboxes."""

    @dd.compute
    def pid(x: int) -> int:
        import os

        return os.getpid()

    import os

    assert dd.run(pid, 1, engine="process") != os.getpid()


def test_a_runtimes_run_and_submit_take_it_and_cache_it(engine):
    events: list[dd.Event] = []
    with dd.Runtime(engine=engine, cache="memory", observers=[events.append]) as rt:
        assert rt.run(alone.double, 20) == 41
        assert rt.submit(alone.double, x=20).result(timeout=60) == 41
    cached = [e for e in events if e.kind == "cached"]
    assert [e.hits for e in cached] == [0, 1]  # the second run computed nothing


def test_its_errors_name_the_function_and_show_the_users_traceback(engine):
    with pytest.raises(dd.FunctionError, match="compute function 'guarded'") as e:
        dd.run(failing.guarded, x=5, engine=engine)
    assert 'in check\n    raise ValueError(f"too big: {x}")' in e.value.traceback
    with pytest.raises(dd.InputError, match="function 'double' has no input 'y'"):
        dd.run(alone.double, y=1, engine=engine)


def test_an_io_function_is_refused_with_what_to_do():
    with pytest.raises(dd.CompositionTypeError, match="only as a step of a composition"):
        dd.run(system_HTTPGet, url="http://example.invalid/", engine="inline")


def test_several_outputs_come_back_as_the_server_gives_them(client, engine):
    client.register(alone.split)
    assert client.invoke("split", 10) == dd.run(alone.split, 10, engine=engine)
    # a named tuple, as a composition returns several outputs (the client's is a tuple)
    assert type(dd.run(alone.split, 10, engine=engine)).__name__ == "split_result"


def test_the_command_line_runs_file_colon_function(engine):
    out = dandelion("run", f"{FILE}:double", "-i", "x=4", "--engine", engine)
    assert (out.returncode, out.stdout.strip()) == (0, "9"), out.stderr
    out = dandelion("run", f"{FILE}:split", "-i", "n=17", "--json", "--engine", engine)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['{', '"root":', '4,', '"rest":', '1', '}']
    out = dandelion("check", f"{FILE}:double")
    assert out.stdout.strip() == f"{FILE}:double: ok: function 'double', run alone"


def test_a_file_without_a_composition_says_which_functions_it_has():
    out = dandelion("run", FILE, "-i", "x=1")
    assert out.returncode == 1
    assert "defines no composition; say which function to run" in out.stderr
    assert "compute functions: double, split" in out.stderr
    out = dandelion("run", f"{FILE}:scaled", "-i", "x=1")  # a plain helper is neither
    assert "no composition or function called 'scaled'" in out.stderr


@pytest.mark.ray
def test_ray_runs_it_the_same_way(ray_cluster):
    assert dd.run(alone.split, 10, backend="ray") == (3, 1)


def test_a_script_runs_one(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import dandelion as dd\n\nBASE = 100\n\n\n@dd.compute\n"
                      "def plus(x: int) -> int:\n    return BASE + x\n\n\n"
                      "if __name__ == '__main__':\n    print(dd.run(plus, x=1))\n")
    out = subprocess.run([__import__("sys").executable, str(script)], capture_output=True,
                         text=True, timeout=120)
    assert (out.returncode, out.stdout.strip()) == (0, "101"), out.stderr
