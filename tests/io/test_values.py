from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dandelion.io.values import HttpRequest, HttpResponse


def test_request_text_encoding_is_the_reference_systems():
    r = HttpRequest("put", "http://h/x", [("A", "1"), ("B", "two")], b"body\n\nmore")
    assert r.to_item_value() == b"PUT http://h/x HTTP/1.1\nA:1\nB:two\n\nbody\n\nmore"
    assert HttpRequest.from_item_value(r.to_item_value()) == r


def test_request_parses_crlf_and_bare_url_and_str():
    r = HttpRequest.from_item_value(b"POST http://h/ HTTP/1.1\r\nX: y\r\n\r\nhi")
    assert (r.method, r.headers, r.body) == ("POST", (("X", "y"),), b"hi")
    assert HttpRequest.from_item_value("http://h/a") == HttpRequest("GET", "http://h/a")
    assert HttpRequest.from_item_value("GET http://h/a HTTP/1.1\n\n").url == "http://h/a"


@pytest.mark.parametrize("bad", [b"FETCH http://h HTTP/1.1\n\n", b"GET\n\n",
                                 b"GET http://h HTTP/1.1\nno colon\n\n", b"", 42])
def test_malformed_requests_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        HttpRequest.from_item_value(bad)


def test_header_injection_is_refused():
    with pytest.raises(ValueError, match="invalid header"):
        HttpRequest("GET", "http://h/", {"X": "a\r\nEvil: 1"})


def test_response_head_and_body_split():
    r = HttpResponse(404, "Not Found", [("Content-Type", "text/plain")], b"gone")
    assert r.head_bytes() == b"HTTP/1.1 404 Not Found\nContent-Type:text/plain"
    back = HttpResponse.from_item_value(r.to_item_value())
    assert back == r and not back.ok and back.header("content-type") == "text/plain"
    assert HttpResponse.from_item_value(r.head_bytes()).body == b""


def test_response_json_and_text():
    r = HttpResponse(200, "OK", (), b'{"a": 1}')
    assert r.ok and r.json() == {"a": 1} and r.text() == '{"a": 1}'


tokens = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                        blacklist_characters=":"), min_size=1, max_size=10)
values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@given(method=st.sampled_from(["GET", "POST", "DELETE"]), path=tokens,
       headers=st.lists(st.tuples(tokens, values), max_size=4), body=st.binary(max_size=64))
def test_request_round_trips(method, path, headers, body):
    r = HttpRequest(method, f"http://h/{path}", [(k, v.strip()) for k, v in headers], body)
    assert HttpRequest.from_item_value(r.to_item_value()) == r
