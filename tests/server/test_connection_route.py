"""An invocation that arrives alone on an idle HTTP/1.1 connection is answered by the
connection itself, below aiohttp's ``web`` layer (:class:`~dandelion.server.protocol.Connection`,
:meth:`Frontend.route <dandelion.server.app.Frontend.route>`), with what aiohttp's application
answers: the same statuses, headers and documents for outputs, printed lines, errors, bodies
sent in chunks or compressed, refusals, keep-alive and ``Connection: close``; what arrives
behind it on its connection is served after it, in order; the access log has its line."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest

from dandelion.ir import module_to_data
from dandelion.server import Server, ServerConfig
from dandelion.server.app import Frontend
from tests.server import funcs
from tests.server.conftest import ALICE, TOKENS

SOURCE = '''
import time
import dandelion as dd

@dd.compute
def triple(x: int) -> int:
    print("tripling", x)
    return 3 * x

@dd.compute
def boom(x: int) -> int:
    raise ValueError(f"no good: {x}")

@dd.compute
def slow(x: int) -> int:
    time.sleep(0.3)
    return x + 1
'''


def _request(path: str, body: bytes, *, token: str | None = ALICE,
             content_type: str = "application/json", extra: str = "",
             version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: test\r\nContent-Type: {content_type}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if "Transfer-Encoding" not in extra:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])
                    ) + b"0\r\n\r\n"


def _invoke(x: Any) -> bytes:
    return json.dumps({"inputs": {"x": [x]}}).encode()


#: label -> the bytes sent on one connection, and how many answers come back
EXCHANGES: dict[str, tuple[bytes, int]] = {
    "json": (_request("/v1/functions/triple/invoke", _invoke(4)), 1),
    "printed": (_request("/v1/functions/triple/invoke?logs=1", _invoke(5)), 1),
    "msgpack": (_request("/v1/functions/triple/invoke",
                         msgpack.packb({"inputs": {"x": [6]}}),
                         content_type="application/msgpack",
                         extra="Accept: application/msgpack\r\n"), 1),
    "composition": (_request("/v1/compositions/sum_doubles/invoke",
                             json.dumps({"inputs": {"xs": [1, 2, 3]}}).encode()), 1),
    "chunked": (_request("/v1/functions/triple/invoke", _chunked(_invoke(7)),
                         extra="Transfer-Encoding: chunked\r\n"), 1),
    "gzip": (_request("/v1/functions/triple/invoke", gzip.compress(_invoke(8)),
                      extra="Content-Encoding: gzip\r\n"), 1),
    "not gzip": (_request("/v1/functions/triple/invoke", _invoke(8),
                          extra="Content-Encoding: gzip\r\n"), 1),
    "raises": (_request("/v1/functions/boom/invoke", _invoke(1)), 1),
    "no token": (_request("/v1/functions/triple/invoke", _invoke(1), token=None), 1),
    "bad token": (_request("/v1/functions/triple/invoke", _invoke(1), token="nope"), 1),
    "not registered": (_request("/v1/functions/nothing/invoke", _invoke(1)), 1),
    "unterminated": (_request("/v1/functions/triple/invoke", b'{"inputs": {"x": [1]'), 1),
    "too large": (_request("/v1/functions/triple/invoke", b" " * 70000 + _invoke(1)), 1),
    "close": (_request("/v1/functions/triple/invoke", _invoke(2),
                       extra="Connection: close\r\n"), 1),
    "escaped": (_request("/v1/functions/tr%69ple/invoke", _invoke(3)), 1),
    "http/1.0": (_request("/v1/functions/triple/invoke", _invoke(3), version="1.0"), 1),
    "pipelined": (_request("/v1/functions/triple/invoke", _invoke(1))
                  + _request("/v1/functions/triple/invoke", _invoke(2)), 2),
}
#: those answered by the connection itself (each one request alone)
ROUTED = {"json", "printed", "msgpack", "composition", "chunked", "gzip", "not gzip",
          "raises", "no token", "bad token", "not registered", "unterminated", "too large",
          "close"}


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` HTTP answers read off ``sock``, then whether the server closed it."""
    reader = sock.makefile("rb")
    answers = []
    for _ in range(count):
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        answers.append((status, headers, reader.read(int(headers["content-length"]))))
    return answers


def _closed(sock: socket.socket, within: float = 2.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _document(body: bytes, content_type: str) -> Any:
    doc = msgpack.unpackb(body) if "msgpack" in content_type else json.loads(body)
    if isinstance(doc, dict) and "error" in doc:
        doc["error"].pop("traceback", None)  # (the same text; its frames differ)
    return doc


@contextlib.contextmanager
def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, routed: bool, **options: Any
           ) -> Iterator[tuple[Server, list[str]]]:
    """A worker (inline) with the functions and the composition registered, and the labels
    of the requests its connections answered themselves; ``routed=False``: none is."""
    answered: list[str] = []
    real_route = Frontend.route

    def route(self: Frontend, message: Any) -> Any:
        handler = real_route(self, message) if routed else None
        if handler is not None:
            answered.append(message.path)
        return handler

    monkeypatch.setattr(Frontend, "route", route)
    config = ServerConfig(port=0, engine="inline", workers=1, state_dir=str(tmp_path),
                          tokens=TOKENS, cache=None, result_cache=0, max_body_bytes=1 << 16,
                          **options)
    with Server(config).start_in_thread() as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            for kind, body in (("functions", {"source": SOURCE}),
                               ("functions", {"source": funcs.SOURCE}),
                               ("compositions", {"ir": module_to_data(funcs.sum_doubles.module)})):
                sock.sendall(_request(f"/v1/{kind}", json.dumps(body).encode()))
                assert _read_answers(sock, 1)[0][0] == 201
        answered.clear()
        yield server, answered


def _exchange(server: Server, data: bytes, count: int) -> tuple[list[Any], bool]:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(data)
        answers = _read_answers(sock, count)
        closed = _closed(sock, 0.5)
    return [(status, {k: v for k, v in headers.items() if k not in ("date", "server")},
             _document(body, headers["content-type"])) for status, headers, body in answers], \
        closed


def test_an_invocation_alone_on_its_connection_is_answered_as_the_application_answers_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[bool, dict[str, Any]] = {}
    for routed in (True, False):
        with _serve(tmp_path / str(routed), monkeypatch, routed) as (server, answered):
            seen[routed] = {label: _exchange(server, data, count)
                            for label, (data, count) in EXCHANGES.items()}
            assert len(answered) == (len(ROUTED) if routed else 0)
        monkeypatch.undo()
    for label in EXCHANGES:  # (aiohttp names itself in a Server header; the route does not)
        assert seen[True][label] == seen[False][label], label
    answers = {label: answers[0] for label, (answers, _) in seen[True].items()}
    assert answers["json"] == (200, {"content-type": "application/json",
                                     "content-length": "55", "x-dandelion-cache": "miss"},
                               {"outputs": {"result": [{"value": 12, "key": 0, "name": ""}]}})
    assert answers["printed"][2]["logs"] == [
        {"function": "triple", "instance": 0, "text": "tripling 5\n"}]
    assert answers["msgpack"][1]["content-type"] == "application/msgpack"
    assert answers["msgpack"][2]["outputs"]["result"][0]["value"] == 18
    assert answers["composition"][2]["outputs"]["result"][0]["value"] == 12
    assert [answers[k][2]["outputs"]["result"][0]["value"]
            for k in ("chunked", "gzip", "close", "escaped", "http/1.0")] == [21, 24, 6, 9, 9]
    assert [answers[k][0] for k in ("not gzip", "raises", "no token", "bad token",
                                    "not registered", "unterminated", "too large")] == \
        [400, 422, 401, 401, 404, 400, 413]
    assert answers["unterminated"][2]["error"]["type"] == "WireError"
    assert [a[2]["outputs"]["result"][0]["value"] for a in seen[True]["pipelined"][0]] == \
        [3, 6]
    closed = {label for label, (_, c) in seen[True].items() if c}
    assert closed == {"not gzip", "too large", "close", "http/1.0"}


def test_what_arrives_behind_a_routed_answer_is_served_after_it_and_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second request sent on the connection while the first is answered by the
    connection waits for it and is answered next (by aiohttp's application); each has its
    access log line; an idle connection is closed after the keep-alive time."""
    log = tmp_path / "access.log"
    with _serve(tmp_path / "state", monkeypatch, True, access_log=str(log),
                keepalive_timeout=1.0) as (server, answered):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_request("/v1/functions/slow/invoke?logs=0", _invoke(1)))
            time.sleep(0.1)  # (the first is running)
            sock.sendall(_request("/v1/functions/slow/invoke", _invoke(10)))
            first, second = _read_answers(sock, 2)
            assert [json.loads(a[2])["outputs"]["result"][0]["value"]
                    for a in (first, second)] == [2, 11]
            assert answered == ["/v1/functions/slow/invoke?logs=0"]
            assert not _closed(sock, 0.3)  # kept alive ...
            assert _closed(sock, 3.0)  # ... until idle for the keep-alive time
    lines = [line.split() for line in log.read_text().splitlines()]
    invocations = [line[1:] for line in lines if line[3].endswith("/invoke")]
    assert [line[:5] for line in invocations] == [
        ["alice", "POST", "/v1/functions/slow/invoke", "200", str(len(first[2]))],
        ["alice", "POST", "/v1/functions/slow/invoke", "200", str(len(second[2]))]]
    assert all(0.25 < float(line[5]) < 5 for line in invocations)


def test_a_worker_stopping_while_the_connection_answers_stops_without_waiting_out_its_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping closes every connection: one answering an invocation itself ends aiohttp's
    loop of the connection once it has answered, instead of leaving it waiting for the
    next request until the stop's bound (5 s) runs out."""
    with _serve(tmp_path, monkeypatch, True) as (server, answered):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_request("/v1/functions/slow/invoke", _invoke(1)))
            time.sleep(0.1)  # (it runs)
            started = time.monotonic()
            server.close()
            assert time.monotonic() - started < 4.0
        assert answered == ["/v1/functions/slow/invoke"]


def test_an_aiohttp_without_a_part_the_route_uses_answers_every_request_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The route uses parts of aiohttp's connections that are private to aiohttp: the
    installed aiohttp has them all, and a version that lacks one (``ROUTABLE`` false) has
    its application answer every request, as if no request were routed."""
    from dandelion.server import protocol

    assert protocol.ROUTABLE
    monkeypatch.setattr(protocol, "ROUTABLE", False)
    with _serve(tmp_path, monkeypatch, True) as (server, answered):
        data, count = EXCHANGES["json"]
        answers, _ = _exchange(server, data, count)
        assert answers[0][0] == 200 and answered == []
