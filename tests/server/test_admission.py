"""Admission control of a worker (``dandelion/server/admission.py``): past saturation the
excess is refused at once, by the measured expected wait, instead of queueing."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dandelion as dd
from dandelion.server import Server, ServerConfig
from tests.server.conftest import Raw

SLOW = '''
import time
import dandelion as dd

@dd.compute
def slow(x: float) -> float:
    time.sleep(x)
    return x
'''


def metric(server: Server, line: str) -> float:
    text = Raw(server.url)("GET", "/metrics").body.decode()
    found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def test_a_worker_refuses_what_would_wait_longer_than_max_wait(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = ServerConfig(port=0, engine="inline", workers=1, max_wait=0.3,
                          state_dir=str(tmp_path))
    with Server(config).start_in_thread() as server, dd.Client(server.url) as client:
        client.register_source(SLOW)
        slow = client.function("slow")
        assert client.invoke(slow, 0.25) == 0.25  # measured: one completes every ~0.25 s
        results: list[Any] = []
        runs = [threading.Thread(target=lambda: results.append(
            dd.Client(server.url).invoke(slow, 1.0))) for _ in range(2)]
        for t in runs:  # one runs, one waits: a queue of one per engine is always admitted
            t.start()
            time.sleep(0.2)
        assert metric(server, "dandelion_admitted") == 2
        assert metric(server, "dandelion_expected_wait_seconds") > 0.3
        start = time.monotonic()
        answer = Raw(server.url)("POST", "/v1/functions/slow/invoke", {"inputs": {"x": [0]}})
        assert time.monotonic() - start < 0.5  # refused at once, not after the others
        assert answer.status == 503, answer.json
        error = answer.json["error"]
        assert error["type"] == "Overloaded"
        assert re.fullmatch(r"the worker is overloaded: 1 invocations are waiting, about "
                            r"\d+ ms of work", error["message"]), error["message"]
        assert "Retry-After" in error["hint"]
        assert int(answer.headers["retry-after"]) >= 1
        assert metric(server, 'dandelion_refused_total{reason="wait"}') == 1
        # no traceback logged: refusing is routine, and formatting one cost the loop ~1 ms
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        for t in runs:
            t.join()
        assert results == [1.0, 1.0]
        assert metric(server, "dandelion_admitted") == 0
        assert client.invoke(slow, 0) == 0  # and serves again once they are done


def test_a_worker_admits_a_queue_within_max_wait(tmp_path: Path) -> None:
    """The same load under a longer ``max_wait``: all are admitted, and all answered."""
    config = ServerConfig(port=0, engine="inline", workers=1, max_wait=5.0,
                          state_dir=str(tmp_path))
    with Server(config).start_in_thread() as server, dd.Client(server.url) as client:
        client.register_source(SLOW)
        slow = client.function("slow")
        assert client.invoke(slow, 0.25) == 0.25
        results: list[Any] = []
        runs = [threading.Thread(target=lambda: results.append(
            dd.Client(server.url).invoke(slow, 0.5))) for _ in range(3)]
        for t in runs:
            t.start()
            time.sleep(0.1)
        for t in runs:
            t.join()
        assert results == [0.5, 0.5, 0.5]
        assert metric(server, 'dandelion_refused_total{reason="wait"}') == 0


def test_a_much_slower_function_is_refused_before_its_interval_is_measured(
        tmp_path: Path) -> None:
    """The interval measured on fast calls would admit a long queue of slow ones: the time
    since the last completion counts as soon as it is longer."""
    config = ServerConfig(port=0, engine="inline", workers=1, max_wait=0.3,
                          state_dir=str(tmp_path))
    with Server(config).start_in_thread() as server, dd.Client(server.url) as client:
        client.register_source(SLOW)
        slow = client.function("slow")
        for _ in range(5):  # one completes every few milliseconds
            assert client.invoke(slow, 0.001) == 0.001
        results: list[Any] = []
        runs = [threading.Thread(target=lambda: results.append(
            dd.Client(server.url).invoke(slow, 1.0))) for _ in range(2)]
        for t in runs:
            t.start()
            time.sleep(0.3)
        answer = Raw(server.url)("POST", "/v1/functions/slow/invoke", {"inputs": {"x": [0]}})
        assert answer.status == 503, answer.json
        for t in runs:
            t.join()
        assert results == [1.0, 1.0]


def test_requests_whose_bodies_are_still_arriving_count_as_admitted(tmp_path: Path) -> None:
    """Admission is decided and counted from a request's head: a burst whose bodies have
    not arrived yet cannot slip past the bound."""
    import socket

    config = ServerConfig(port=0, engine="inline", workers=1, max_waiting=1,
                          state_dir=str(tmp_path))
    with Server(config).start_in_thread() as server, dd.Client(server.url) as client:
        client.register_source(SLOW)
        assert server.port is not None
        body = b'{"inputs": {"x": [0.1]}}'
        head = (b"POST /v1/functions/slow/invoke HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        pending = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                   for _ in range(2)]
        try:
            for s in pending:  # two heads, no bodies yet: one to run, one to wait
                s.sendall(head)
            deadline = time.monotonic() + 5
            while metric(server, "dandelion_admitted") < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert metric(server, "dandelion_admitted") == 2
            answer = Raw(server.url)("POST", "/v1/functions/slow/invoke",
                                     {"inputs": {"x": [0]}})
            assert answer.status == 503, answer.json
            assert metric(server, 'dandelion_refused_total{reason="queue"}') == 1
            for s in pending:  # the bodies arrive: both run
                s.sendall(body)
            for s in pending:
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for s in pending:
                s.close()
        deadline = time.monotonic() + 5
        while metric(server, "dandelion_admitted") > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert metric(server, "dandelion_admitted") == 0
