"""User programs, written the way people write them, through every entry point on every engine.

The programs in ``programs/`` import libraries at module level (numpy, json, re, math,
statistics, colorsys, collections, dataclasses), read module constants, call helpers that call
helpers, use a closure, a dataclass and NamedTuple results, print, and raise from a helper.
Each runs as a script, with ``dandelion run`` (the ``.py`` and its ``.dd`` and ``.dcl``
twins), in-process with ``dd.run``, with ``dd.Client`` against a real server, with
``dandelion register`` / ``invoke`` against a real ``dandelion serve``, and on a real Ray
cluster — on each engine.

A suite that tests what we built imports inside test functions; these tests load the
programs from files, as a user's script or module is loaded, so nothing they name is
importable inside a sandbox unless the platform ships or preloads it.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

import dandelion as dd
from dandelion.server import Server, ServerConfig

PROGRAMS = Path(__file__).parent / "programs"
ENGINES = ["inline", "process"]
PAGES = ["The cat sat on the mat", "A dog and a cat", "cat cat dog of the bird"]
_counter = itertools.count()


def load(name: str) -> ModuleType:
    """Import ``programs/<name>.py`` the way a user's own module is imported: from its file,
    under a name no sandbox could import."""
    module_name = f"user_{name}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, PROGRAMS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pagestats() -> ModuleType:
    return load("pagestats")


@pytest.fixture(scope="module")
def overlimit() -> ModuleType:
    return load("overlimit")


def values(report: Any) -> list[Any]:
    """A result's values in output order, whatever the entry point returned."""
    if isinstance(report, dict):
        return list(report.values())
    return list(report)


def dandelion(*args: str, cwd: Path = PROGRAMS, timeout: float = 180) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dandelion", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def page_args() -> list[str]:
    return [arg for page in PAGES for arg in ("-i", f"pages={page}")]


# -- a script ------------------------------------------------------------------------------

def test_the_script_runs_on_the_default_engine(pagestats):
    out = subprocess.run([sys.executable, "pagestats.py"], capture_output=True, text=True,
                         cwd=PROGRAMS, timeout=180)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    assert printed == pagestats.expected(PAGES)._asdict()


def test_a_raising_script_says_what_the_function_raised():
    out = subprocess.run([sys.executable, "overlimit.py"], capture_output=True, text=True,
                         cwd=PROGRAMS, timeout=180)
    assert out.returncode != 0
    assert "16 is over the limit of 10" in out.stderr
    assert "root" in out.stderr


# -- in-process dd.run ---------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_dd_run(pagestats, engine, caplog):
    with caplog.at_level(logging.INFO, logger="dandelion.function"):
        result = dd.run(pagestats.page_stats, PAGES, engine=engine, cache=False)
    assert tuple(result) == tuple(pagestats.expected(PAGES))
    assert result.top == pagestats.expected(PAGES).top
    printed = sorted(r.getMessage() for r in caplog.records if r.name == "dandelion.function")
    assert printed == sorted(f"[page_length, instance {i}] page of "
                             f"{len(pagestats.words(p))} words" for i, p in enumerate(PAGES))


@pytest.mark.parametrize("engine", ENGINES)
def test_dd_run_names_the_function_and_its_error(overlimit, engine):
    assert dd.run(overlimit.roots, [4, 9], engine=engine) == [2.0, 3.0]
    with pytest.raises(dd.FunctionError, match="16 is over the limit of 10") as e:
        dd.run(overlimit.roots, [4, 16], engine=engine, cache=False)
    assert e.value.function == "root"
    assert "line 12, in checked_root" in str(e.value)
    assert "root of 16" in e.value.logs


# -- the command line: the .py and its .dd twin --------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)  # (what functions print goes to stderr)
@pytest.mark.parametrize("target", ["pagestats.py:page_stats", "pagestats.dd",
                                    "pagestats.dcl"])
def test_dandelion_run(pagestats, engine, target):
    out = dandelion("run", target, *page_args(), "--engine", engine, "--json", "-q")
    assert out.returncode == 0, out.stderr
    assert values(json.loads(out.stdout)) == values(pagestats.expected(PAGES)._asdict())


@pytest.mark.parametrize("engine", ENGINES)
def test_dandelion_run_reports_a_raising_function(engine):
    out = dandelion("run", "overlimit.py", "-i", "xs=4", "-i", "xs=16", "--engine", engine,
                    "-q", "--no-cache")
    assert out.returncode == 1
    assert "16 is over the limit of 10" in out.stderr and "'root'" in out.stderr
    # the user's own frames, file:line, and what the failing instance printed
    assert f'File "{PROGRAMS / "overlimit.py"}", line 12, in checked_root' in out.stderr
    assert "[root, instance 1] root of 16" in out.stderr
    assert "dispatcher.py" not in out.stderr  # Dandelion's frames only with --debug


# -- dd.Client against a real server --------------------------------------------------------

@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Server]:
    config = ServerConfig(port=0, workers=2, engine=request.param, timeout=60.0,
                          state_dir=str(tmp_path_factory.mktemp("state")))
    with Server(config).start_in_thread() as s:
        yield s


def test_client_register_and_invoke(server, pagestats):
    with dd.Client(server.url) as client:
        client.register(pagestats.page_stats)
        result = client.invoke(pagestats.page_stats, PAGES)
        assert values(result) == values(pagestats.expected(PAGES))
        assert client.invoke("page_stats", pages=PAGES[:1]) is not None


def test_client_reports_a_raising_function(server, overlimit):
    with dd.Client(server.url) as client:
        client.register(overlimit.roots)
        assert client.invoke(overlimit.roots, [9]) == [3.0]
        with pytest.raises(dd.FunctionError, match="16 is over the limit of 10") as e:
            client.invoke(overlimit.roots, [4, 16])
        assert e.value.function == "root"


# -- dandelion register / invoke against dandelion serve -----------------------------------

TOKEN = "user-token-0123456789"  # the tenant of conftest's ``serve``


@pytest.fixture(scope="module")
def served(serve: Any) -> str:
    """A real ``dandelion serve`` on the default engine (conftest's ``serve``)."""
    return str(serve("process"))


def test_dandelion_register_and_invoke(served, pagestats):
    out = dandelion("register", "pagestats.py", "--url", served, "--token", TOKEN)
    assert out.returncode == 0, out.stderr
    assert "registered composition page_stats" in out.stdout
    out = dandelion("invoke", "page_stats", *page_args(), "--json", "--url", served,
                    "--token", TOKEN)
    assert out.returncode == 0, out.stderr
    assert values(json.loads(out.stdout)) == values(pagestats.expected(PAGES)._asdict())


def test_dandelion_invoke_reports_a_raising_function(served):
    assert dandelion("register", "overlimit.py", "--url", served, "--token", TOKEN
                     ).returncode == 0
    out = dandelion("invoke", "roots", "-i", "xs=4", "-i", "xs=16", "--url", served,
                    "--token", TOKEN)
    assert out.returncode == 1
    assert "16 is over the limit of 10" in out.stderr


# -- a real Ray cluster ---------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_ray(ray_cluster, pagestats, overlimit, isolation):
    with dd.Runtime(backend="ray", isolation=isolation) as rt:
        assert tuple(rt.run(pagestats.page_stats, PAGES)) == tuple(pagestats.expected(PAGES))
        with pytest.raises(dd.FunctionError, match="16 is over the limit of 10"):
            rt.run(overlimit.roots, [4, 16])
