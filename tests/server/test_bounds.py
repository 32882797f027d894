"""Nothing a long-running worker keeps grows without bound: jobs (number and age), plans of
directly invoked functions (an LRU), registered code on disk (swept once nothing uses it)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import dandelion as dd
from dandelion.client import ServerError
from dandelion.server import Server, ServerConfig
from tests.server.conftest import Raw

VERSION = '''
import dandelion as dd

@dd.compute
def scale(x: int) -> int:
    return x * {factor}
'''
FUNCTIONS = "import dandelion as dd\n" + "".join(
    f"@dd.compute\ndef f{i}(x: int) -> int:\n    return x + {i}\n" for i in range(3))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    config = ServerConfig(port=0, workers=1, state_dir=str(tmp_path), max_jobs=2,
                          job_ttl=30.0, plan_cache=2, code_ttl=60.0)
    with Server(config).start_in_thread() as s:
        yield s


def retained(server: Server, what: str) -> float:
    text = Raw(server.url)("GET", "/metrics").body.decode()
    found = re.search(rf'dandelion_retained{{what="{what}"}} (\S+)', text)
    assert found, text
    return float(found.group(1))


def test_the_plans_of_invoked_functions_are_an_lru(server: Server) -> None:
    with dd.Client(server.url) as client:
        client.register_source(FUNCTIONS)
        for i in range(3):
            assert client.invoke(client.function(f"f{i}"), 1) == 1 + i
            assert retained(server, "plans") == min(i + 1, 2)
        assert client.invoke(client.function("f0"), 1) == 1  # planned again, still 2
        assert retained(server, "plans") == 2


def test_jobs_are_bounded_in_number_and_age(server: Server) -> None:
    with dd.Client(server.url) as client:
        client.register_source(FUNCTIONS)
        f0 = client.function("f0")
        ids = []
        for x in range(3):
            job = client.submit(f0, x)
            assert job.result(timeout=30) == x
            ids.append(job.id)
        assert [j["id"] for j in client.jobs()] == ids[1:]  # the oldest was forgotten
        assert retained(server, "jobs") == 2
        with pytest.raises(ServerError, match="no job"):
            client.job(ids[0])
        assert server.frontend is not None
        swept = server.frontend.service.sweep(now=time.time() + 31)
        assert swept["jobs"] == 2 and client.jobs() == []


def test_code_nothing_uses_is_swept_after_its_ttl(server: Server, tmp_path: Path) -> None:
    assert server.frontend is not None
    service = server.frontend.service

    with dd.Client(server.url) as client:
        client.register_source(VERSION.format(factor=2))
        first = _names(tmp_path / "artifacts" / "source")
        client.register_dsl("composition scaled\n    input item[int] x\n"
                            "    output item[int] r\n\n    r = scale(x)\n")
        assert client.invoke("scaled", 5) == 10
        client.register_source(VERSION.format(factor=3))  # scaled keeps the first version
        assert client.invoke(client.function("scale"), 5) == 15
        code_files = _files(tmp_path / "artifacts" / "sha256")
        assert code_files  # the process engine keeps the code it ran in the worker's store

        later = time.time() + 61
        assert service.sweep(now=later)["code"] == 0  # both versions are in use
        assert client.invoke("scaled", 5) == 10
        client.delete("composition", "scaled")
        assert service.sweep(now=time.time() + 30)["code"] == 0  # not old enough yet
        assert service.sweep(now=later)["code"] >= 2  # the source and the engine's copy
        sources = _names(tmp_path / "artifacts" / "source")
        assert first[0] not in sources and len(sources) == 1
        assert len(_files(tmp_path / "artifacts" / "sha256")) < len(code_files)
        assert client.invoke(client.function("scale"), 5) == 15


def _files(root: Path) -> list[Any]:
    return [p for p in root.rglob("*") if p.is_file()]


def _names(root: Path) -> list[str]:
    """The digests of the code stored under ``root``."""
    return sorted(p.name for p in _files(root) if not p.suffix)


SLOW = '''
import time
import dandelion as dd

@dd.compute
def slow(x: int) -> int:
    time.sleep(x)
    return x
'''


def test_an_overloaded_worker_refuses_at_once_instead_of_queueing_without_bound(
        tmp_path: Path) -> None:
    import threading

    config = ServerConfig(port=0, engine="inline", workers=1, invocations=1, max_waiting=1,
                          state_dir=str(tmp_path))
    with Server(config).start_in_thread() as server, dd.Client(server.url) as client:
        client.register_source(SLOW)
        slow = client.function("slow")
        results: list[Any] = []
        runs = [threading.Thread(target=lambda: results.append(
            dd.Client(server.url).invoke(slow, 1))) for _ in range(2)]
        for t in runs:  # one runs, one waits
            t.start()
            time.sleep(0.3)
        start = time.monotonic()
        answer = Raw(server.url)("POST", "/v1/functions/slow/invoke", {"inputs": {"x": [0]}})
        assert time.monotonic() - start < 0.5  # refused at once, not after the others
        assert answer.status == 503 and answer.headers["retry-after"] == "1"
        assert answer.json["error"]["type"] == "Overloaded"
        assert "1 invocations are waiting" in answer.json["error"]["message"]
        with pytest.raises(ServerError, match="overloaded") as e:
            client.submit(slow, 0)
        assert e.value.status == 503
        for t in runs:
            t.join()
        assert results == [1, 1]
        assert client.invoke(slow, 0) == 0  # and serves again once they are done


def test_an_overloaded_worker_refuses_before_reading_the_body(tmp_path: Path) -> None:
    """Refusing costs the loop next to nothing: the 503 comes before the body is sent."""
    import socket
    import threading

    config = ServerConfig(port=0, engine="inline", workers=1, invocations=1, max_waiting=1,
                          state_dir=str(tmp_path), body_timeout=20.0)
    with Server(config).start_in_thread() as server, dd.Client(server.url) as client:
        client.register_source(SLOW)
        slow = client.function("slow")
        results: list[Any] = []
        runs = [threading.Thread(target=lambda: results.append(
            dd.Client(server.url).invoke(slow, 2))) for _ in range(2)]
        for t in runs:  # one runs, one waits
            t.start()
            time.sleep(0.3)
        assert server.port is not None
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"POST /v1/functions/slow/invoke HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
            answer = s.recv(4096)  # no body sent: a worker that reads it first waits 20 s
        assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
        for t in runs:
            t.join()
        assert results == [2, 2]
