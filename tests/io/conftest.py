from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.io.servers import WebServer, redis_fixture


@pytest.fixture
def web() -> Iterator[WebServer]:
    """An HTTP server on loopback with routes set by the test."""
    server = WebServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: Any) -> Iterator[str]:
    """The URL of a real Redis server started for the session."""
    yield from redis_fixture(tmp_path_factory)
