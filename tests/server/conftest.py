from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any, Iterator

import attrs
import pytest

from dandelion.server import Server, ServerConfig
from tests.io.servers import redis_fixture

TOKENS = {"alice-token-0123456789": "alice", "bob-token-0123456789ab": "bob"}
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


@attrs.define
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """Plain HTTP against the server, to see exactly what a client would."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port

    def __call__(self, method: str, path: str, body: Any = None, token: str | None = ALICE,
                 content_type: str = "application/json", headers: dict[str, str] | None = None,
                 raw: bytes | None = None) -> Answer:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            if "msgpack" in content_type:
                import msgpack

                data = msgpack.packb(body, use_bin_type=True)
            else:
                data = json.dumps(body).encode()
        if data is not None:
            h["Content-Type"] = content_type
        try:
            conn.request(method, path, data, h)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                          resp.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Iterator[Server]:
    """A worker with two tenants (alice, bob) on loopback."""
    state = tmp_path_factory.mktemp("state")
    config = ServerConfig(port=0, workers=2, tokens=TOKENS, state_dir=str(state),
                          max_body_bytes=1 << 20, body_timeout=1.0, hot_functions=4,
                          timeout=5.0)
    with Server(config).start_in_thread() as s:
        yield s


@pytest.fixture(scope="module")
def raw(server: Server) -> Raw:
    return Raw(server.url)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: Any) -> Iterator[str]:
    yield from redis_fixture(tmp_path_factory)
