"""Native functions registered for a named engine (the reference system's ``engine_type``):
the same C source built for wasm, registered on a wasm worker, composed and invoked."""

from __future__ import annotations

import importlib.util
import io
import shutil
from pathlib import Path
from typing import Any, Iterator

import msgpack
import numpy as np
import pytest

import dandelion as dd
from dandelion.sdk import build_wasm
from dandelion.server import Server, ServerConfig
from tests.server.conftest import ALICE, TOKENS, Raw
from tests.server.test_native import GRAM, MATMUL_DCL, npy, paper_matrix

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.skipif(shutil.which("clang") is None or shutil.which("wasm-ld") is None,
                       reason="needs clang and lld (apt-get install clang lld)"),
    pytest.mark.skipif(importlib.util.find_spec("wasmtime") is None,
                       reason="needs wasmtime (pip install 'dandelion[wasm]')"),
]


@pytest.fixture(scope="module")
def module(tmp_path_factory: Any) -> Path:
    out = tmp_path_factory.mktemp("wasm") / "matmul.wasm"
    build_wasm([REPO / "examples" / "matmul.c"], out)
    return out


@pytest.fixture(scope="module")
def wasm_server(tmp_path_factory: Any) -> Iterator[Server]:
    config = ServerConfig(port=0, engine="wasm", workers=1, tokens=TOKENS,
                          state_dir=str(tmp_path_factory.mktemp("wasm-state")), timeout=30.0)
    with Server(config).start_in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def raw(wasm_server: Server) -> Raw:
    return Raw(wasm_server.url)


@pytest.mark.parametrize("how", [{"engine_type": "wasm"}, {"kind": "wasm"}])
def test_a_wasm_matmul_registered_for_the_wasm_engine_equals_numpy(raw, module, how):
    a = raw("POST", "/v1/functions", {**GRAM, **how, "image": module.read_bytes()},
            content_type="application/msgpack")
    assert a.status == 201, a.body
    assert raw("POST", "/v1/compositions", {"source": MATMUL_DCL, "notation": "dcl"}
               ).status == 201
    m = paper_matrix()
    b = raw("POST", "/v1/compositions/matmul/invoke", {"inputs": {"m": [npy(m)]}},
            content_type="application/msgpack")
    assert b.status == 200, b.body
    (item,) = msgpack.unpackb(b.body)["outputs"]["product"]
    assert np.array_equal(np.load(io.BytesIO(item["value"])), m @ m.T)


@pytest.mark.parametrize(("change", "message"), [
    ({"image": b"\x7fELF not wasm"}, "not a WebAssembly module"),
    ({"engine_type": "process"}, "engine 'wasm' cannot run native functions"),
])
def test_bad_wasm_registrations_are_400s_naming_the_problem(raw, module, change, message):
    body = {**GRAM, "engine_type": "wasm", "name": "bad", "image": module.read_bytes(),
            **change}
    a = raw("POST", "/v1/functions", body, content_type="application/msgpack")
    assert a.status == 400, a.body
    assert message in a.json["error"]["message"]


def test_client_registers_a_wasm_module_for_the_wasm_engine(wasm_server, module):
    m = paper_matrix()
    client = dd.Client(wasm_server.url, ALICE)
    (d,) = client.register_native("gram_wasm", module, params={"m": "item[ndarray]"},
                                  results=["result: item[ndarray]"])
    assert d["name"] == "gram_wasm" and d["implementation"] == "wasm"
    assert np.array_equal(client.invoke(client.function("gram_wasm"), m), m @ m.T)
