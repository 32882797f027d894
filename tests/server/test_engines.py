"""The worker takes its compute engine by name: with the ``process`` engine, registered
code runs sandboxed, and a violation fails only its own invocation."""

from __future__ import annotations

import importlib.util

import pytest

from dandelion.server import Server, ServerConfig
from tests.server.conftest import Raw
from tests.server.funcs import SOURCE

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dandelion.backends.engines.process.engine") is None,
    reason="the process engine (sandbox branch) is not merged yet")

ESCAPE = """
import os
import dandelion as dd

@dd.compute
def escape(x: int) -> int:
    return len(os.listdir("/"))
"""


def test_process_engine_sandboxes_registered_functions(tmp_path):
    config = ServerConfig(port=0, engine="process", workers=1, state_dir=str(tmp_path))
    with Server(config).start_in_thread() as s:
        raw = Raw(s.url)
        assert raw("GET", "/health").json["engine"] == "process"
        assert raw("POST", "/v1/functions", {"source": SOURCE}).status == 201
        assert raw("POST", "/v1/functions", {"source": ESCAPE}).status == 201
        a = raw("POST", "/v1/functions/escape/invoke", {"inputs": {"x": [1]}})
        assert a.status == 422 and a.json["error"]["type"] == "SandboxViolation"
        assert a.json["error"]["function"] == "escape"
        ok = raw("POST", "/v1/functions/double/invoke", {"inputs": {"x": [21]}})
        assert ok.json["outputs"]["result"][0]["value"] == 42
        metrics = raw("GET", "/metrics").body.decode()
        assert "dandelion_sandbox_violations_total 1.0" in metrics


HOG = """
import dandelion as dd

@dd.compute
def hog(x: int) -> int:
    return len(bytearray(x << 20))
"""


def test_serve_hands_engine_options_to_the_compute_engine(tmp_path):
    from dandelion.cli import build_parser
    from dandelion.server.cli import server_config

    args = build_parser().parse_args(
        ["serve", "--port", "0", "--engine", "process", "--workers", "1", "--state-dir",
         str(tmp_path), "-E", "memory_limit=268435456", "-E", "reuse_sandboxes=true"])
    config = server_config(args)
    assert dict(config.engine_options) == {"memory_limit": 268435456, "reuse_sandboxes": True}
    with Server(config).start_in_thread() as s:
        raw = Raw(s.url)
        assert raw("POST", "/v1/functions", {"source": SOURCE}).status == 201
        assert raw("POST", "/v1/functions", {"source": HOG}).status == 201
        a = raw("POST", "/v1/functions/hog/invoke", {"inputs": {"x": [400]}})
        assert a.status == 422 and "memory limit of 256 MiB" in a.json["error"]["message"]
        for x in range(8):  # reset sandboxes, where the kernel allows: answered as fresh
            ok = raw("POST", "/v1/functions/double/invoke", {"inputs": {"x": [x]}})
            assert ok.json["outputs"]["result"][0]["value"] == 2 * x
