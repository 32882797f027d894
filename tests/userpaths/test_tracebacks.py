"""A failing function's own traceback (file:line in the user's code, with source lines where
the caller has the file) reaches the user from every engine, the command line and a real
``dandelion serve`` and Ray; Dandelion's own frames only with ``--debug``."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import dandelion as dd
from tests.userpaths.conftest import PROGRAMS, dandelion
from tests.userpaths.programs import failing

FILE = str(PROGRAMS / "failing.py")
RAISE_LINE = inspect.getsource(failing).splitlines().index(
    '        raise ValueError(f"too big: {x}")') + 1
CALL_LINE = inspect.getsource(failing).splitlines().index("    return check(x) * 2") + 1
FRAMES = (f'  File "{FILE}", line {CALL_LINE}, in guarded\n'
          f'    return check(x) * 2\n'
          f'  File "{FILE}", line {RAISE_LINE}, in check\n'
          f'    raise ValueError(f"too big: {{x}}")\n'
          f'ValueError: too big: 5')


def test_dd_run_shows_the_functions_traceback(engine):
    with pytest.raises(dd.FunctionError) as e:
        dd.run(failing.guard, [1, 5], engine=engine)
    assert e.value.traceback == "Traceback (most recent call last):\n" + FRAMES
    assert str(e.value).endswith(FRAMES)  # shown with the message, as Ray shows a remote one
    assert "dandelion/" not in e.value.traceback  # the user's frames only


def test_the_command_line_shows_it_and_debug_adds_dandelions_frames(engine):
    out = dandelion("run", f"{FILE}:guard", "-i", "xs=1", "-i", "xs=5", "--engine", engine)
    assert out.returncode == 1
    assert "raised ValueError: too big: 5\nTraceback (most recent call last):\n" + FRAMES \
        in out.stderr
    assert "dispatcher.py" not in out.stderr
    debug = dandelion("--debug", "run", f"{FILE}:guard", "-i", "xs=1", "-i", "xs=5",
                      "--engine", engine)
    assert FRAMES in debug.stderr and "dandelion/runtime/dispatcher.py" in debug.stderr


def test_a_real_server_returns_it(client):
    client.register(failing.guard)
    with pytest.raises(dd.FunctionError, match="raised ValueError: too big: 5") as e:
        client.invoke(failing.guard, [1, 5])
    # the worker has not loaded the user's file, the client has: it adds the source lines
    assert e.value.traceback == "Traceback (most recent call last):\n" + FRAMES
    assert e.value.function == "guarded" and e.value.instance == 1


@pytest.mark.ray
@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_ray_shows_it_with_the_drivers_source_lines(ray_cluster, isolation):
    with dd.Runtime(backend="ray", isolation=isolation, cache=False) as rt:
        with pytest.raises(dd.FunctionError) as e:
            rt.run(failing.guard, [1, 5])
    assert e.value.traceback == "Traceback (most recent call last):\n" + FRAMES
    assert str(e.value).endswith(FRAMES)


BOOM = '''\
import dandelion as dd

LIMIT = 3


def inner(x: int) -> int:
    if x > LIMIT:
        raise ValueError(f"{x} is over {LIMIT}")
    return x


def check(x: int) -> int:
    return inner(x) + 0


@dd.compute
def boom_double(x: int) -> int:
    return 2 * check(x)
'''
BOOM_FRAMES = ('  File "boom.py", line 18, in boom_double\n'
               '    return 2 * check(x)\n'
               '  File "boom.py", line 13, in check\n'
               '    return inner(x) + 0\n'
               '  File "boom.py", line 8, in inner\n'
               '    raise ValueError(f"{x} is over {LIMIT}")\n'
               'ValueError: 5 is over 3')


def test_a_source_registered_from_the_command_line_fails_under_its_own_file_name(
        serve, engine, tmp_path):
    # the worker compiled it; its traceback names the file as the user gave it, with its
    # lines, and never the worker's own paths (its artifact store)
    (tmp_path / "boom.py").write_text(BOOM)
    auth = ["--url", serve(engine), "--token", "user-token-0123456789"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dandelion", *args, *auth],
                              capture_output=True, text=True, cwd=tmp_path, timeout=180)

    registered = cli("register", "boom.py")
    assert registered.returncode == 0, registered.stderr
    out = cli("invoke", "boom_double", "-i", "x=5")
    assert out.returncode == 1
    assert "Traceback (most recent call last):\n" + BOOM_FRAMES in out.stderr
    assert "artifacts" not in out.stderr and str(tmp_path) not in out.stderr
    assert cli("invoke", "boom_double", "-i", "x=2").stdout.strip() == "4"


def test_a_source_registered_by_a_client_fails_under_the_name_it_gave(client):
    client.register_source(BOOM, filename="boom.py")
    with pytest.raises(dd.FunctionError, match="raised ValueError: 5 is over 3") as e:
        client.invoke("boom_double", 5)
    assert e.value.traceback == "Traceback (most recent call last):\n" + BOOM_FRAMES
