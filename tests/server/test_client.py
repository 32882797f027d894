"""dd.Client against a real server: register and invoke mirror dd.run; the paper's
log-count composition end to end over HTTP, against HTTP log servers."""

from __future__ import annotations

import importlib.util

import pytest

import dandelion as dd
from dandelion.client import ServerError
from dandelion.server import Server, ServerConfig
from tests.io.servers import log_servers
from tests.io.test_functions import logCount
from tests.server.conftest import ALICE
from tests.server.funcs import double, explode, reverse_all, sum_doubles


@pytest.fixture(scope="module")
def client(server):
    with dd.Client(server.url, ALICE) as c:
        yield c


def test_register_and_invoke_mirror_dd_run(client):
    done = client.register(sum_doubles, reverse_all)
    assert {d["name"] for d in done} >= {"double", "total", "sum_doubles", "reverse"}
    assert client.invoke(sum_doubles, [1, 2, 3]) == dd.run(sum_doubles, [1, 2, 3]) == 12
    assert client.invoke("sum_doubles", xs=[4]) == 8
    assert client.invoke(reverse_all, [b"ab", b"\x00\x01"]) == [b"ba", b"\x01\x00"]


def test_invoke_a_function_directly(client):
    client.register(double)
    assert client.invoke(double, 21) == 42
    assert client.invoke(client.function("double"), x=5) == 10
    # by the name it is registered under, as a composition's: it answered "no composition
    # called 'double'" with the hint to register it
    assert client.invoke("double", 6) == client.invoke("double", x=6) == 12
    assert client.submit("double", 7).result(timeout=10) == 14


def test_the_command_line_invokes_a_function_by_name(server, capsys):
    from dandelion.cli import main

    with dd.Client(server.url, ALICE) as c:
        c.register(double)
    auth = ["--url", server.url, "--token", ALICE]
    assert main(["invoke", "double", "-i", "x=21", *auth]) == 0
    assert capsys.readouterr().out.strip() == "42"
    assert main(["invoke", "nothing", "-i", "x=1", *auth]) == 1
    assert "no composition called 'nothing'" in capsys.readouterr().err


def test_submit_returns_a_job(client):
    client.register(sum_doubles)
    job = client.submit(sum_doubles, [10, 20])
    assert job.result(timeout=10) == 60 and job.status() == "succeeded"


def test_a_job_is_found_again_by_its_id(client):
    client.register(sum_doubles, double)
    job = client.submit(sum_doubles, [1, 2])
    assert repr(job) == f"<Job {job.id} of 'sum_doubles' on {client.url}>"
    again = client.get_job(job.id)
    assert again.result(timeout=10) == 6 and again.target == "sum_doubles"
    direct = client.get_job(client.submit(double, 4).id)
    assert direct.result(timeout=10) == 8 and direct.target == "double"
    listed = {j["id"]: j for j in client.jobs()}
    assert listed[job.id]["status"] == "succeeded" and listed[job.id]["kind"] == "composition"
    assert listed[direct.id]["kind"] == "function"
    assert listed[job.id]["created"] <= listed[job.id]["finished"]


def test_errors_come_back_as_dandelion_errors(client):
    client.register(explode)
    with pytest.raises(dd.FunctionError, match="bad 3") as e:
        client.invoke(explode, [3])
    assert e.value.function == "boom"
    with pytest.raises(dd.FunctionError, match="bad 4"):
        client.submit(explode, [4]).result(timeout=10)
    with pytest.raises(dd.InputError, match="missing input"):
        client.invoke(sum_doubles)
    with pytest.raises(ServerError, match="no composition called 'nope'") as e:
        client.invoke("nope")
    assert e.value.status == 404


def test_bad_token_and_unreachable_server(server):
    with pytest.raises(ServerError, match="invalid API token") as e:
        dd.Client(server.url, "not-a-token-at-all").functions()
    assert e.value.status == 401
    from tests.io.servers import free_port

    with pytest.raises(ServerError, match="cannot reach"):
        dd.Client(f"http://127.0.0.1:{free_port()}").health()


def test_the_papers_log_count_over_http(client):
    logs = [b"ERROR x\nINFO y\nERROR z\n", b"ERROR\n" * 5, b"nothing here\n"]
    servers = log_servers(logs)
    try:
        client.register(logCount)
        server_list = " ".join(s.base.removeprefix("http://") for s in servers)
        assert client.invoke(logCount, "ERROR", server_list) == 7
        assert client.invoke("logCount", eventPattern="INFO", serverList=server_list) == 1
        described = client.describe("composition", "logCount")
        assert described["cacheable"] is False  # it does I/O: never served from a cache
        assert all(s.hits["/log"] == 2 for s in servers)
    finally:
        for s in servers:
            s.stop()


PAPER_DD = """\
input item eventPattern, serverList
output item totalSum
ephemeral set requestSet, logSet, partialSums

requestSet = makeGetRequests(serverList)
logSet = for each getRequest in requestSet :
    system_HTTPGet(getRequest)
partialSums = for each log in logSet :
    sumOccurance(log, eventPattern)
totalSum = sumSet(partialSums)
"""


@pytest.mark.skipif(importlib.util.find_spec("dandelion.dsl.api") is None,
                    reason="the DSL front end (dandelion.dsl) is not merged yet")
def test_the_papers_dd_text_registered_on_the_server(client):
    from tests.io.test_functions import makeGetRequests, sumOccurance, sumSet

    client.register(makeGetRequests, sumOccurance, sumSet)
    servers = log_servers([b"a ERROR b ERROR", b"ERROR"])
    try:
        done = client.register_dsl(PAPER_DD, "dd")
        name = done[0]["name"]
        server_list = " ".join(s.base.removeprefix("http://") for s in servers)
        out = client.invoke(name, eventPattern="ERROR", serverList=server_list)
        assert out == 3
    finally:
        for s in servers:
            s.stop()


@pytest.mark.redis
def test_key_value_functions_through_the_server(redis_url, tmp_path):
    from dandelion.io import kv_get, kv_set

    @dd.composition
    def store(entries: list[dd.Item[bytes]]) -> list[str]:
        return kv_set(entries)

    @dd.composition
    def load(keys: list[str]) -> list[bytes]:
        return kv_get(keys)

    config = ServerConfig(port=0, io={"redis_url": redis_url}, state_dir=str(tmp_path))
    with Server(config).start_in_thread() as s, dd.Client(s.url) as c:
        c.register(store, load)
        assert c.invoke(store, [dd.Item(b"v1", name="srv:a")]) == ["srv:a"]
        assert c.invoke(load, ["srv:a"]) == [b"v1"]


FETCH_DCL = """\
function HTTP (requests) => (headers, bodies);
function count_lines (bodies) => (counts);
composition Fetch (urls) => (counts) {
    HTTP (requests = each urls) => (pages = bodies);
    count_lines (bodies = each pages) => (counts = counts);
}
"""


@dd.compute(results="counts")
def count_lines(bodies: bytes) -> int:
    return bodies.count(b"\n")


@pytest.mark.skipif(importlib.util.find_spec("dandelion.dsl.api") is None,
                    reason="the DSL front end (dandelion.dsl) is not merged yet")
def test_a_dcl_composition_with_the_reference_http_function(client):
    client.register(count_lines)
    servers = log_servers([b"a\nb\n", b"c\n"])
    try:
        assert [d["name"] for d in client.register_dsl(FETCH_DCL, "dcl")] == ["Fetch"]
        urls = [f"{s.base}/log".encode() for s in servers]
        assert client.invoke("Fetch", urls=urls) == [2, 1]
    finally:
        for s in servers:
            s.stop()
