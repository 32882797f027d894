"""I/O functions: cached only when declared cacheable, and then served without a request."""

from __future__ import annotations

from typing import Iterator

import pytest

import dandelion as dd
from dandelion.io import HttpRequest, system_HTTPGet
from tests.io.servers import WebServer

fetch_immutable = system_HTTPGet.declare(name="fetch_immutable", cacheable=True)


@dd.composition
def fetch_all(requests: list[HttpRequest]) -> list[bytes]:
    return system_HTTPGet(dd.each(requests))


@dd.composition
def fetch_all_immutable(requests: list[HttpRequest]) -> list[bytes]:
    return fetch_immutable(dd.each(requests))


@pytest.fixture
def web() -> Iterator[WebServer]:
    server = WebServer()
    for name in ("a", "b", "c"):
        server.route(f"/{name}", body=name.encode() * 3)
    try:
        yield server
    finally:
        server.stop()


def test_an_io_function_runs_every_time_unless_declared_cacheable(web):
    requests = [HttpRequest.get(f"{web.base}/{n}") for n in "ab"]
    with dd.Runtime(engine="inline", cache="memory") as rt:
        for _ in range(2):
            assert rt.run(fetch_all, requests) == [b"aaa", b"bbb"]
        assert web.hits == {"/a": 2, "/b": 2}
        for _ in range(2):
            assert rt.run(fetch_all_immutable, requests) == [b"aaa", b"bbb"]
        assert web.hits == {"/a": 3, "/b": 3}
        more = [HttpRequest.get(f"{web.base}/{n}") for n in "cab"]
        assert rt.run(fetch_all_immutable, more) == [b"ccc", b"aaa", b"bbb"]
        assert web.hits == {"/a": 3, "/b": 3, "/c": 1}
