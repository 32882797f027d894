"""The platform library as the front ends see it, and the paper's log-count composition."""

from __future__ import annotations

import pytest

import dandelion as dd
from dandelion.io import HttpRequest, platform_functions, system_HTTPGet
from dandelion.ir import FunctionKind
from tests.io.servers import log_servers


@dd.compute
def makeGetRequests(serverList: str) -> list[HttpRequest]:
    return [HttpRequest.get(f"http://{server}/log") for server in serverList.split()]


@dd.compute
def sumOccurance(log: bytes, eventPattern: str) -> int:
    return log.decode().count(eventPattern)


@dd.compute
def sumSet(partialSums: list[int]) -> int:
    return sum(partialSums)


@dd.composition
def logCount(eventPattern: str, serverList: str) -> int:
    requestSet = makeGetRequests(serverList)
    logSet = system_HTTPGet(dd.each(requestSet))
    partialSums = sumOccurance(dd.each(logSet), eventPattern)
    return sumSet(partialSums)


def test_every_platform_function_is_an_io_function_with_a_builtin_implementation():
    functions = platform_functions()
    assert {"http", "HTTP", "system_HTTPGet", "kv_get", "kv_set", "kv_delete",
            "storage_read", "storage_write", "storage_delete"} <= set(functions)
    for name, f in functions.items():
        assert f.spec.name == name and f.spec.kind is FunctionKind.IO
        assert [i.kind for i in f.spec.implementations] == ["builtin"]
        assert f.artifacts == {} and not f.spec.cacheable


def test_dcl_signature_of_http():
    spec = platform_functions()["HTTP"].spec
    assert [p.name for p in spec.params] == ["requests"]
    assert [r.name for r in spec.results] == ["headers", "bodies"]


def test_io_outputs_are_cacheable_only_when_declared():
    fetch = system_HTTPGet.declare(name="fetch_immutable", cacheable=True)
    assert fetch.spec.cacheable and not system_HTTPGet.spec.cacheable

    @dd.composition
    def both(urls: list[str]):
        return system_HTTPGet(dd.each(urls)), fetch(dd.each(urls))

    specs = {f.name: f for f in both.module.functions}
    assert not specs["system_HTTPGet"].cacheable and specs["fetch_immutable"].cacheable


def test_calling_an_io_function_outside_a_composition_is_an_error():
    with pytest.raises(dd.DandelionError, match="only inside a composition"):
        system_HTTPGet(["http://x/"])


def test_the_papers_log_count_runs_end_to_end():
    logs = [b"ERROR a\nINFO b\nERROR c\n", b"INFO\n", b"ERROR ERROR\n"]
    servers = log_servers(logs)
    try:
        server_list = " ".join(s.base.removeprefix("http://") for s in servers)
        assert dd.run(logCount, "ERROR", server_list) == 4
        assert dd.run(logCount, eventPattern="INFO", serverList=server_list) == 2
        assert all(s.hits["/log"] == 2 for s in servers)
    finally:
        for s in servers:
            s.stop()
