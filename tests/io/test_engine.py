"""The I/O engine against a real HTTP server on loopback, through whole compositions."""

from __future__ import annotations

import threading
import time

import pytest

import dandelion as dd
from dandelion.io import HTTP, HttpRequest, HttpResponse, IoEngine, http, system_HTTPGet
from dandelion.io.errors import IoError, OutboundPolicyError


@dd.compute
def describe(r: HttpResponse) -> str:
    return f"{r.status} {r.header('X-Echo-Method')} {r.body.decode()}"


@dd.composition
def send(requests: list[bytes]) -> list[str]:
    return describe(dd.each(http(requests)))


@dd.composition
def send_raw(requests: list[dd.Item[bytes]]) -> list[dd.Item[bytes]]:
    return http(requests)


@dd.composition
def split(requests: list[dd.Item[bytes]]
          ) -> tuple[list[dd.Item[bytes]], list[dd.Item[bytes]]]:
    headers, bodies = HTTP(requests)
    return headers, bodies


@dd.composition
def get(urls: list[str]) -> list[bytes]:
    return system_HTTPGet(dd.each(urls))


def echo(h):
    return 200, {"X-Echo-Method": h.command, "X-Got": h.headers.get("X-Test", "")}, h.body


def rt(**io):
    return dd.Runtime(engine="inline", workers=2, io=io)


def test_any_method_headers_and_body_reach_the_server(web):
    web.routes["/echo"] = echo
    reqs = [HttpRequest(m, f"{web.base}/echo", {"X-Test": "1"}, b"payload").to_item_value()
            for m in ("POST", "PUT", "PATCH", "DELETE")]
    with rt() as r:
        assert r.run(send, reqs) == ["200 POST payload", "200 PUT payload",
                                     "200 PATCH payload", "200 DELETE payload"]


def test_responses_keep_the_name_and_key_of_their_request(web):
    web.route("/a", body=b"A")
    items = [dd.Item(f"GET {web.base}/a HTTP/1.1\n\n".encode(), key=7, name="first"),
             dd.Item(f"{web.base}/missing".encode(), key=3, name="second")]
    with rt() as r:
        out = r.run(send_raw, items)
        headers, bodies = r.run(split, items)
    assert [(i.key, i.name) for i in out] == [(7, "first"), (3, "second")]
    assert HttpResponse.from_item_value(out[1].value).status == 404
    assert [h.value.split(b"\n")[0] for h in headers] == [b"HTTP/1.1 200 OK",
                                                          b"HTTP/1.1 404 Not Found"]
    assert [(b.value, b.key, b.name) for b in bodies] == [(b"A", 7, "first"),
                                                          (b"not found", 3, "second")]


def test_system_httpget_fails_the_instance_on_an_error_status(web):
    web.route("/ok", body=b"fine")
    with rt() as r:
        assert r.run(get, [f"{web.base}/ok"]) == [b"fine"]
        with pytest.raises(dd.FunctionError, match=r"instance 1 of 2.*answered 404"):
            r.run(get, [f"{web.base}/ok", f"{web.base}/nope"])


def test_metadata_address_is_refused_before_any_connection():
    with rt() as r, pytest.raises(OutboundPolicyError, match="link-local or metadata"):
        r.run(get, ["http://169.254.169.254/latest/meta-data/"])


def test_deny_list_is_applied_to_resolved_names_and_redirects(web):
    web.route("/go", status=302, headers={"Location": "http://169.254.169.254/x"})
    web.route("/local", status=302, headers={"Location": f"{web.base}/ok"})
    web.route("/ok", body=b"ok")
    with rt() as r:
        with pytest.raises(OutboundPolicyError, match="169.254.169.254"):
            r.run(get, [f"{web.base}/go"])
        assert r.run(get, [f"{web.base}/local"]) == [b"ok"]
    port = web.server_address[1]
    with rt(policy={"deny": ["127.0.0.0/8"]}) as r:
        with pytest.raises(OutboundPolicyError, match="deny list"):
            r.run(get, [f"http://localhost:{port}/ok"])
    with rt(policy={"allow": ["example.org"]}) as r:
        with pytest.raises(OutboundPolicyError, match="allow list"):
            r.run(get, [f"{web.base}/ok"])


def test_slow_response_times_out(web):
    def slow(h):
        time.sleep(1.0)
        return 200, {}, b"late"
    web.routes["/slow"] = slow
    with rt(timeout=0.2, retries=0) as r, pytest.raises(IoError, match="timed out after 0.2"):
        r.run(get, [f"{web.base}/slow"])


def test_response_over_the_size_limit_fails(web):
    web.route("/big", body=b"x" * 5000)
    with rt(max_response_bytes=1000) as r, pytest.raises(IoError, match="over the limit"):
        r.run(get, [f"{web.base}/big"])


def flaky(fail_times):
    count = {"n": 0}

    def handler(h):
        count["n"] += 1
        if count["n"] <= fail_times:
            return 503, {}, b"busy"
        return 200, {"X-Echo-Method": h.command}, b"done"
    return handler


def test_idempotent_requests_are_retried_with_backoff(web):
    web.routes["/flaky"] = flaky(2)
    with rt(retries=2, backoff=0.01) as r:
        start = time.monotonic()
        assert r.run(send, [HttpRequest.get(f"{web.base}/flaky").to_item_value()]) == \
            ["200 GET done"]
        assert time.monotonic() - start >= 0.01 * 0.5 + 0.02 * 0.5
    assert web.hits["/flaky"] == 3


def test_post_is_never_retried(web):
    web.routes["/flaky"] = flaky(1)
    with rt(retries=3, backoff=0.01) as r:
        out = r.run(send, [HttpRequest.post(f"{web.base}/flaky", b"x").to_item_value()])
    assert out == ["503 None busy"] and web.hits["/flaky"] == 1


def test_connection_refused_is_retried_then_reported():
    from tests.io.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/"
    with rt(retries=1, backoff=0.01) as r, pytest.raises(IoError, match="after 2 attempts"):
        r.run(get, [url])


def test_concurrency_is_bounded_per_worker(web):
    def slow(h):
        time.sleep(0.1)
        return 200, {}, b"x"
    web.routes["/s"] = slow
    with rt(max_concurrency=3) as r:
        assert r.run(get, [f"{web.base}/s"] * 9) == [b"x"] * 9
    assert web.max_active == 3


def test_malformed_request_item_names_the_item():
    with rt() as r, pytest.raises(IoError, match="'bad' .key 4. is not an HTTP request"):
        r.run(send_raw, [dd.Item(b"FETCH x y\n\n", key=4, name="bad")])


def test_engine_runs_one_loop_and_closes_cleanly(web):
    web.route("/a", body=b"A")
    engine = IoEngine()
    try:
        resp = engine.run(engine.http(HttpRequest.get(f"{web.base}/a")))
        assert resp.body == b"A"
        threads = [t for t in threading.enumerate() if t.name == "dandelion-io"]
        assert engine._thread in threads
    finally:
        engine.close()
    assert not engine._thread.is_alive()
    with pytest.raises(IoError, match="closed"):
        engine.run(engine.http(HttpRequest.get(f"{web.base}/a")))


def test_unknown_builtin_entry_fails_the_application():
    from dandelion.ir import FunctionKind, FunctionSpec, Implementation
    from dandelion.runtime.engine import FunctionCall
    from dandelion.runtime.sharding import Instance

    spec = FunctionSpec("nope", kind=FunctionKind.IO,
                        implementations=[Implementation("builtin", "", "nope")])
    got = []
    engine = IoEngine()
    engine.submit(FunctionCall(spec, spec.implementations[0], None), [Instance(0, ((),))],
                  lambda res, fail: got.append(fail), threading.Event())
    engine.close()
    assert isinstance(got[0][1], dd.BackendError)
