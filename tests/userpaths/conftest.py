"""Fixtures for user programs: the engines a user picks, and a real ``dandelion serve``
per engine, started as a user starts it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import dandelion as dd
from tests.io.servers import start_serve

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "programs"
ENGINES = ["inline", "process"]


@pytest.fixture(scope="session", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each engine a user can run on this machine."""
    if request.param == "process" and not sys.platform.startswith("linux"):
        pytest.skip("the process engine needs Linux (seccomp)")
    return str(request.param)


def dandelion(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    """The command line, run as a user runs it."""
    return subprocess.run([sys.executable, "-m", "dandelion", *args], capture_output=True,
                          input=stdin.decode() if stdin else None, text=True, cwd=ROOT,
                          timeout=180, env=env)


@pytest.fixture(scope="session")
def serve(tmp_path_factory: Any) -> Iterator[Any]:
    """Start (once per engine) a real ``dandelion serve``; returns its URL."""
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def start(engine: str) -> str:
        if engine in started:
            return started[engine][1]
        state = tmp_path_factory.mktemp(f"serve-{engine}")
        tokens = state / "tokens.json"
        tokens.write_text(json.dumps({"user": "user-token-0123456789"}))
        log = open(state / "serve.log", "wb")
        proc, url = start_serve("--workers", "2", "--engine", engine, "--tokens", str(tokens),
                                "--state-dir", str(state), stdout=log, cwd=ROOT)
        started[engine] = (proc, url)
        return url

    yield start
    for proc, _url in started.values():
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def client(serve: Any, engine: str) -> Iterator[dd.Client]:
    """A client of a real ``dandelion serve`` running ``engine``."""
    with dd.Client(serve(engine), "user-token-0123456789") as c:
        yield c
