"""Bad requests against a real ``dandelion serve``, over raw sockets: what HTTP's parser
refuses before the application sees it gets the same JSON error document as everything
else, is counted in ``/metrics`` and written to the access log."""

from __future__ import annotations

import gzip
import json
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.io.servers import start_serve

HEAD = b"POST /v1/functions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
DEEP = b"\x91" * 10000 + b"\xc0"

#: name, raw request, status, error type, a regex of the message
BAD: list[tuple[str, bytes, int, str, str]] = [
    ("gzip that is not gzip",
     HEAD + b"Content-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}",
     400, "RequestProblem", r"^the body is not valid gzip data"),
    ("deflate that is not deflate",
     HEAD + b"Content-Encoding: deflate\r\nContent-Length: 2\r\n\r\n{}",
     400, "RequestProblem", r"^the body is not valid deflate data"),
    ("brotli",
     HEAD + b"Content-Encoding: br\r\nContent-Length: 2\r\n\r\n{}",
     400, "RequestProblem", r"^Content-Encoding br is not supported"),
    ("a 100 KB header",
     b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
     400, "RequestProblem", r"^the request line or a header is longer than .* 8190 bytes"),
    ("a 100 KB URL",
     b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     400, "RequestProblem", r"^the request line or a header is longer than .* 8190 bytes"),
    ("Transfer-Encoding and Content-Length",
     HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
     400, "RequestProblem", r"Content-Length can't be present with Transfer-Encoding"),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
     400, "RequestProblem", r"\S"),
    ("msgpack nested 10,000 deep",
     b"POST /v1/functions HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
     b"Content-Length: %d\r\n\r\n" % len(DEEP) + DEEP,
     400, "WireError", r"^the body is not valid msgpack: nested too deeply$"),
    ("truncated msgpack",
     b"POST /v1/functions HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
     b"Content-Length: 2\r\n\r\n\x92\x01",
     400, "WireError", r"^the body is not valid msgpack: \S"),
    ("an Expect the server does not meet",
     HEAD + b"Expect: 0\r\nContent-Length: 2\r\n\r\n{}",
     417, "RequestProblem", r"^the server meets no expectation but 100-continue, not '0'$"),
    ("an Expect on a route that takes none",
     b"GET /health HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n",
     417, "RequestProblem", r"not 'something'$"),
    ("JSON nested 10,000 deep",
     HEAD + b"Content-Length: 20000\r\n\r\n" + b"[" * 10000 + b"]" * 10000,
     400, "WireError", r"nested too deeply"),
]


def _complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return bool(sep and length and len(body) >= int(length.group(1)))


def exchange(port: int, data: bytes, wait: float = 10.0) -> bytes:
    """Send ``data`` and read one answer (until it is complete, the server closes or
    ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read everything: the answer is still there
        out = b""
        try:
            while not _complete(out):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, json.loads(body)


@pytest.fixture(scope="module")
def served(tmp_path_factory: Any) -> Iterator[tuple[int, Path]]:
    state = tmp_path_factory.mktemp("bad-requests")
    log = state / "access.log"
    proc, url = start_serve("--engine", "inline", "--workers", "1", "--header-timeout", "1",
                            "--body-timeout", "1", "--access-log", str(log), timeout=30)
    port = int(url.rsplit(":", 1)[1])
    yield port, log
    proc.terminate()
    output = proc.communicate(timeout=10)[0].decode()
    # client errors are no internal errors: nothing is logged with a traceback
    assert "Traceback" not in output, output


def metric(port: int, code: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    found = re.search(rf'dandelion_http_requests_total{{code="{code}"}} (\S+)',
                      text.decode())
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_bad_request_is_a_json_error_counted_in_metrics(served, case):
    port, _ = served
    name, data, status, kind, message = case
    before = metric(port, str(status))
    got, headers, body = parse(exchange(port, data))
    assert got == status
    assert headers["content-type"].startswith("application/json")
    assert body["error"]["type"] == kind
    assert re.search(message, body["error"]["message"]), body
    assert metric(port, str(status)) == before + 1
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200


def test_compressed_bodies_that_are_compressed_are_read(served):
    port, _ = served
    body = gzip.compress(json.dumps({"source": "x = 1\n"}).encode())
    status, _, doc = parse(exchange(port, HEAD + b"Content-Encoding: gzip\r\n"
                                    b"Content-Length: %d\r\n\r\n" % len(body) + body))
    assert status == 400 and "defines no @dd.compute" in doc["error"]["message"]


def test_slow_headers_get_408_and_others_are_served_meanwhile(served):
    port, _ = served
    before = metric(port, "408")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        start = time.monotonic()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                      timeout=5).status == 200
        s.settimeout(10)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        waited = time.monotonic() - start
    status, _, body = parse(answer)
    assert status == 408 and body["error"]["type"] == "RequestProblem"
    assert body["error"]["message"] == ("the request line and headers did not arrive "
                                        "within 1 s")
    assert waited < 5
    assert metric(port, "408") == before + 1


def test_headers_sent_slowly_but_in_time_are_served(served):
    port, _ = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        for part in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n",
                     b"\r\n"):
            s.sendall(part)
            time.sleep(0.2)
        s.settimeout(5)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")



def test_a_slow_head_after_whole_ones_on_a_kept_connection_gets_408(served):
    """The deadline on a request's head is armed only when its first bytes are not a whole
    head: after requests whose heads arrived whole (no deadline armed for them), a head
    that stops half way on the same connection still gets its 408."""
    port, _ = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        for _ in range(3):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        start = time.monotonic()
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status, _, body = parse(answer)
    assert status == 408 and time.monotonic() - start < 5


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_body_sent_in_pieces_in_time_is_read_whole(served, chunked):
    port, _ = served
    source = ("import dandelion as dd\n@dd.compute\ndef pieces(x: int) -> int:\n"
              "    return x\n" + "# padding\n" * 3000)
    body = json.dumps({"source": source}).encode()
    parts = [body[:10], body[10:20000], body[20000:]]
    if chunked:
        head = HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        parts = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
    else:
        head = HEAD + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head)
        for part in parts:  # 0.6 s in all, under the body timeout of 1 s
            time.sleep(0.15)
            s.sendall(part)
        s.settimeout(10)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status, _, doc = parse(answer)
    assert status == 201, doc
    assert "pieces" in json.dumps(doc["registered"]), doc

def test_the_access_log_has_a_line_per_request_refused_or_not(served):
    port, log = served
    exchange(port, BAD[3][1])  # refused by the parser
    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/functions", timeout=5).read()
    time.sleep(0.2)
    lines = log.read_text().splitlines()
    line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\S+) (\S+) (\S+) (\d{3}) "
                      r"(\d+) (\d+\.\d{4})$")
    parsed = [line.match(x) for x in lines]
    assert all(parsed), lines
    assert ("default", "GET", "/v1/functions", "200") in \
        [m.groups()[:4] for m in parsed if m]
    refused = [m for m in parsed if m and m.group(4) == "400" and m.group(1) == "-"]
    assert refused and refused[-1].group(2, 3) == ("UNKNOWN", "/")
    assert int(refused[-1].group(5)) > 0


def test_expect_100_continue_is_answered_and_the_request_served(served):
    """A client that waits for ``100 Continue`` before it sends its body (curl does, for
    large bodies) gets it, then the answer."""
    port, _ = served
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        s.sendall(b"POST /v1/functions/nothing/invoke HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 14\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b'{"inputs": {}}')
        out = b""
        while not _complete(out):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    status, _, body = parse(out)
    assert status == 404 and body["error"]["type"] == "NotFound", body
