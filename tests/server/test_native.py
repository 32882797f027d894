"""Native (ELF) functions registered over HTTP: the paper's M·Mᵀ in C, built with the SDK,
registered, composed, invoked, isolated per tenant and kept across restarts."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import msgpack
import numpy as np
import pytest

import dandelion as dd
from dandelion.cli import main
from dandelion.client import ServerError
from dandelion.errors import BackendError
from dandelion.sdk import build
from dandelion.server import Server, ServerConfig
from dandelion.server.native import parse_signature, signature_entries
from tests.server.conftest import ALICE, BOB, TOKENS, Raw

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None,
                                reason="building a native function needs gcc")

GRAM = {"kind": "native", "name": "gram", "params": ["m: item[ndarray]"],
        "results": ["result: item[ndarray]"]}
MATMUL_DCL = """\
function gram (m) => (result);
composition matmul (m) => (product) {
    gram(m = all m) => (product = result);
}
"""


def paper_matrix() -> np.ndarray:
    """The paper's workload: a 128×128 int64 matrix (small entries, so no overflow)."""
    return np.random.default_rng(0).integers(-100, 100, size=(128, 128), dtype=np.int64)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.fixture(scope="module")
def elf(tmp_path_factory: Any) -> Path:
    out = tmp_path_factory.mktemp("native") / "matmul.elf"
    build([REPO / "examples" / "matmul.c"], out)
    return out


def process_server(state: Path, **options: Any) -> Server:
    config = ServerConfig(port=0, engine="process", workers=1, tokens=TOKENS,
                          state_dir=str(state), timeout=30.0, **options)
    return Server(config).start_in_thread()


@pytest.fixture(scope="module")
def native_server(tmp_path_factory: Any) -> Iterator[Server]:
    with process_server(tmp_path_factory.mktemp("native-state")) as s:
        yield s


@pytest.fixture(scope="module")
def raw(native_server: Server) -> Raw:
    return Raw(native_server.url)


@pytest.fixture(scope="module")
def registered(raw: Raw, elf: Path) -> dict[str, Any]:
    """alice's gram (uploaded as msgpack bin) and matmul (.dcl) that calls it."""
    a = raw("POST", "/v1/functions", {**GRAM, "image": elf.read_bytes()},
            content_type="application/msgpack")
    assert a.status == 201, a.body
    c = raw("POST", "/v1/compositions", {"source": MATMUL_DCL, "notation": "dcl"})
    assert c.status == 201, c.body
    return dict(a.json["registered"][0])


def invoke_matmul(raw: Raw, m: np.ndarray, token: str = ALICE) -> Any:
    return raw("POST", "/v1/compositions/matmul/invoke", {"inputs": {"m": [npy(m)]}},
               token=token, content_type="application/msgpack")


# -- registration and invocation ---------------------------------------------------------

def test_registered_native_matmul_composition_equals_numpy(raw, registered):
    m = paper_matrix()
    a = invoke_matmul(raw, m)
    assert a.status == 200, a.body
    (item,) = msgpack.unpackb(a.body)["outputs"]["product"]
    product = np.load(io.BytesIO(item["value"]))
    assert product.dtype == np.int64 and product.shape == (128, 128)
    assert np.array_equal(product, m @ m.T)


def test_registration_describes_the_function_by_its_elf_digest(raw, registered, elf):
    digest = "sha256:" + hashlib.sha256(elf.read_bytes()).hexdigest()
    assert registered["digest"] == digest and registered["implementation"] == "native"
    d = raw("GET", "/v1/functions/gram").json
    assert d == registered
    assert d["params"] == [{"name": "m", "type": "item[ndarray]"}]
    assert "gram" in [f["name"] for f in raw("GET", "/v1/functions").json["functions"]]


def test_a_native_function_is_invoked_alone_with_json_base64(raw, registered):
    m = paper_matrix()[:16, :16]
    a = raw("POST", "/v1/functions/gram/invoke",
            {"inputs": {"m": [{"base64": base64.b64encode(npy(m)).decode()}]}})
    assert a.status == 200, a.body
    value = a.json["outputs"]["result"][0]["value"]
    assert np.array_equal(np.load(io.BytesIO(base64.b64decode(value["base64"]))), m @ m.T)


def test_json_registration_takes_the_image_as_base64(raw, elf):
    image = base64.b64encode(elf.read_bytes()).decode()
    a = raw("POST", "/v1/functions", {**GRAM, "name": "gram_json", "image": {"base64": image}})
    assert a.status == 201, a.body
    assert raw("DELETE", "/v1/functions/gram_json").status == 200
    assert raw("GET", "/v1/functions/gram_json").status == 404


def test_one_elf_under_two_signatures_keeps_each_signature(raw, registered, elf):
    """Untyped, the same code takes and returns raw bytes (the .npy file itself)."""
    a = raw("POST", "/v1/functions", {"kind": "native", "name": "gram_raw",
                                      "image": elf.read_bytes(), "params": ["m"],
                                      "results": ["out"]}, content_type="application/msgpack")
    assert a.status == 201 and a.json["registered"][0]["params"] == [
        {"name": "m", "type": "set[any]"}]
    m = paper_matrix()[:8, :8]
    typed = raw("POST", "/v1/functions/gram/invoke", {"inputs": {"m": [npy(m)]}},
                content_type="application/msgpack")
    untyped = raw("POST", "/v1/functions/gram_raw/invoke", {"inputs": {"m": [npy(m)]}},
                  content_type="application/msgpack")
    assert typed.status == untyped.status == 200, (typed.body, untyped.body)
    (item,) = msgpack.unpackb(untyped.body)["outputs"]["out"]
    assert isinstance(item["value"], bytes)
    assert np.array_equal(np.load(io.BytesIO(item["value"])), m @ m.T)


def test_a_failing_native_function_fails_only_its_invocation(raw, registered):
    a = raw("POST", "/v1/functions/gram/invoke",
            {"inputs": {"m": [npy(np.zeros((2, 3), dtype=np.int64))]}},
            content_type="application/msgpack")
    assert a.status == 422
    err = a.json["error"]
    assert err["function"] == "gram" and "error code 3" in err["message"]  # not square
    assert invoke_matmul(raw, paper_matrix()).status == 200


# -- bad registrations ---------------------------------------------------------------------

def _pie_executable(tmp: Path) -> bytes:
    (tmp / "main.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-fPIE", "-pie", str(tmp / "main.c"), "-o", str(tmp / "main")],
                   check=True, capture_output=True)
    return (tmp / "main").read_bytes()


@pytest.mark.parametrize("change, status, message", [
    ({"image": b"\x7fELF garbage that is not an executable"}, 400, "not an ELF file"),
    ({"image": b"MZ\x90\x00" * 64}, 400, "not an ELF file"),
    ({"image": "f0VMRg=="}, 400, "not as a string"),
    ({"image": None}, 400, "image"),
    ({"image": {"base64": "%%%"}}, 400, "invalid base64"),
    ({"params": ["m: matrix[int]"]}, 400, "not a data type"),
    ({"params": ["m", "m"]}, 400, "'m' is declared twice"),
    ({"params": ["2m"]}, 400, "not a valid name"),
    ({"params": [{"name": "m", "shape": 2}]}, 400, "shape"),
    ({"params": [7]}, 400, "expected a name"),
    ({"params": "m"}, 400, "'params' must be a list"),
    ({"results": []}, 400, "declares no results"),
    ({"name": "../gram"}, 400, "not a valid name"),
    ({"source": "x = 1"}, 400, "takes no source"),
    ({"engine_type": "kvm2"}, 400, "unknown engine_type 'kvm2'"),
    ({"engine_type": "wasm"}, 400, "engine 'process' cannot run wasm functions"),
], ids=lambda v: str(v)[:40])
def test_bad_native_registrations_are_400s_naming_the_problem(raw, elf, change, status,
                                                              message):
    body = {**GRAM, "name": "bad", "image": elf.read_bytes(), **change}
    body = {k: v for k, v in body.items() if v is not None}
    a = raw("POST", "/v1/functions", body, content_type="application/msgpack")
    assert a.status == status, a.body
    assert message in a.json["error"]["message"] + a.json["error"].get("hint", "")
    assert raw("GET", "/v1/functions/bad").status == 404


def test_a_position_independent_executable_is_refused(raw, tmp_path):
    a = raw("POST", "/v1/functions", {**GRAM, "name": "pie", "image": _pie_executable(tmp_path)},
            content_type="application/msgpack")
    assert a.status == 400
    assert "not a static executable" in a.json["error"]["message"]
    assert "dandelion build" in a.json["error"]["hint"]


def test_missing_native_fields_are_named(raw):
    a = raw("POST", "/v1/functions", {"kind": "native", "name": "x"})
    assert a.status == 400
    assert "needs image, params, results" in a.json["error"]["message"]


def test_a_worker_without_the_process_engine_refuses_native_code(tmp_path, elf):
    config = ServerConfig(port=0, engine="inline", workers=1, state_dir=str(tmp_path))
    with Server(config).start_in_thread() as s:
        a = Raw(s.url)("POST", "/v1/functions", {**GRAM, "image": elf.read_bytes()},
                       token=None, content_type="application/msgpack")
    assert a.status == 400
    assert "engine 'inline' cannot run native functions" in a.json["error"]["message"]
    assert "--engine process" in a.json["error"]["hint"]


# -- tenants and restarts ------------------------------------------------------------------

def test_another_tenant_can_neither_see_nor_use_it(raw, registered):
    assert raw("GET", "/v1/functions/gram", token=BOB).status == 404
    assert "gram" not in [f["name"] for f in raw("GET", "/v1/functions",
                                                  token=BOB).json["functions"]]
    assert raw("POST", "/v1/functions/gram/invoke", {"inputs": {"m": [npy(paper_matrix())]}},
               token=BOB, content_type="application/msgpack").status == 404
    assert invoke_matmul(raw, paper_matrix(), token=BOB).status == 404
    c = raw("POST", "/v1/compositions", {"source": MATMUL_DCL, "notation": "dcl"}, token=BOB)
    assert c.status == 400 and "'gram' is not registered" in c.json["error"]["message"]


def test_native_registrations_survive_a_restart(tmp_path, elf):
    m = paper_matrix()
    with process_server(tmp_path) as s:
        raw = Raw(s.url)
        assert raw("POST", "/v1/functions", {**GRAM, "image": elf.read_bytes()},
                   content_type="application/msgpack").status == 201
        assert raw("POST", "/v1/compositions",
                   {"source": MATMUL_DCL, "notation": "dcl"}).status == 201
    with process_server(tmp_path) as s:
        raw = Raw(s.url)
        assert raw("GET", "/v1/functions/gram").json["implementation"] == "native"
        a = invoke_matmul(raw, m)
        assert a.status == 200, a.body
        (item,) = msgpack.unpackb(a.body)["outputs"]["product"]
        assert np.array_equal(np.load(io.BytesIO(item["value"])), m @ m.T)
        metrics = raw("GET", "/metrics").body.decode()
        assert 'dandelion_function_loads_total{temperature="cold"} 1.0' in metrics
        assert raw("GET", "/v1/functions/gram", token=BOB).status == 404


def test_a_corrupted_stored_image_is_not_run(tmp_path, elf):
    with process_server(tmp_path) as s:
        raw = Raw(s.url)
        digest = raw("POST", "/v1/functions", {**GRAM, "image": elf.read_bytes()},
                     content_type="application/msgpack").json["registered"][0]["digest"]
    hexdigest = digest.partition(":")[2]
    stored = tmp_path / "artifacts" / "sha256" / hexdigest[:2] / hexdigest
    image = stored.read_bytes()
    stored.write_bytes(image[:-1] + bytes([image[-1] ^ 0xFF]))
    with process_server(tmp_path) as s:
        a = Raw(s.url)("POST", "/v1/functions/gram/invoke",
                       {"inputs": {"m": [npy(paper_matrix())]}},
                       content_type="application/msgpack")
    assert a.status == 400 and "is corrupt" in a.json["error"]["message"]
    assert a.json["error"]["hint"] == "register the function again"


# -- client and command line ---------------------------------------------------------------

def test_client_registers_and_invokes_a_native_function(native_server, elf):
    m = paper_matrix()
    client = dd.Client(native_server.url, ALICE)
    (d,) = client.register_native("gram_client", elf, params={"m": "item[ndarray]"},
                                  results=["result: item[ndarray]"])
    assert d["name"] == "gram_client" and d["implementation"] == "native"
    assert np.array_equal(client.invoke(client.function("gram_client"), m), m @ m.T)
    with pytest.raises(BackendError, match="not an ELF file"):
        client.register_native("junk", b"junk" * 20, params=["m"], results=["r"])
    with pytest.raises(ServerError, match="not a data type") as e:
        client.register_native("gram_client", elf, params=["m: matrix"], results=["r"])
    assert e.value.status == 400


def test_client_register_sends_the_elf_of_a_native_compute_function(native_server, elf):
    @dd.compute(native=elf)
    def gram_dd(m: np.ndarray) -> np.ndarray:
        return m @ m.T

    @dd.composition
    def matmul_dd(m: np.ndarray) -> np.ndarray:
        return gram_dd(m)

    client = dd.Client(native_server.url, ALICE)
    done = client.register(matmul_dd)
    assert [(d["name"], d.get("implementation")) for d in done] == [
        ("gram_dd", "native"), ("matmul_dd", None)]
    m = paper_matrix()
    assert np.array_equal(client.invoke(matmul_dd, m), m @ m.T)


def test_client_builds_a_c_source_before_registering(native_server, tmp_path):
    src = tmp_path / "inc.c"
    src.write_text("#include <dandelion.h>\n"
                   "int dandelion_main(void) {\n"
                   "    uint32_t n = dd_input_count(0);\n"
                   "    for (uint32_t i = 0; i < n; i++) {\n"
                   "        dd_item in;\n"
                   "        if (dd_input_item(0, i, &in) != 0) return 1;\n"
                   "        int64_t *out = dd_alloc(8);\n"
                   "        *out = *(const int64_t *)in.data + 1;\n"
                   "        if (dd_add_output(0, out, 8, in.key, 0) != 0) return 2;\n"
                   "    }\n"
                   "    return 0;\n"
                   "}\n")
    client = dd.Client(native_server.url, BOB)
    client.register_native("inc", src, params="xs: set[int]", results="ys: set[int]")
    assert sorted(client.invoke(client.function("inc"), [1, 41])) == [2, 42]


def test_signature_forms_of_the_client_reach_the_server_parser():
    for given in ("m: item[ndarray], k", ["m: item[ndarray]", "k"],
                  {"m": "item[ndarray]", "k": None}, [("m", "item[ndarray]"), "k"]):
        params = parse_signature(signature_entries(given, "params"), "params")
        assert [(p.name, str(p.type)) for p in params] == [("m", "item[ndarray]"),
                                                         ("k", "set[any]")]
    with pytest.raises(TypeError):
        signature_entries(3, "params")  # type: ignore[arg-type]


def test_cli_registers_a_native_function_and_a_composition_using_it(native_server, elf,
                                                                     tmp_path, capsys):
    dcl = tmp_path / "matmul_cli.dcl"
    dcl.write_text(MATMUL_DCL.replace("gram", "gram_cli").replace("matmul", "matmul_cli"))
    assert main(["register", "--native", str(elf), "--name", "gram_cli",
                 "--params", "m:item[ndarray]", "--results", "result:item[ndarray]",
                 str(dcl), "--url", native_server.url, "--token", ALICE]) == 0
    out = capsys.readouterr().out
    assert "registered native function gram_cli" in out
    assert "registered composition matmul_cli" in out
    m = paper_matrix()
    assert np.array_equal(dd.Client(native_server.url, ALICE).invoke("matmul_cli", m=m),
                          m @ m.T)


@pytest.mark.parametrize("argv, code, message", [
    (["--native", "{elf}", "--params", "m"], 2, "--native needs --results"),
    (["--params", "m", "x.dcl"], 2, "--params: only with --native"),
    ([], 2, "nothing to register"),
    (["--native", "/nonexistent.elf", "--params", "m", "--results", "r"], 1,
     "cannot read native function"),
    (["--native", "{elf}", "--name", "no-dashes", "--params", "m", "--results", "r"], 2,
     "--name 'no-dashes' is not a valid function name"),
    (["--native", "{elf}", "--params", "m:matrix", "--results", "r"], 1, "not a data type"),
    (["--native", "{elf}", "--params", "", "--results", "r"], 0, ""),
])
def test_cli_native_errors_are_clear(native_server, elf, capsys, argv, code, message):
    argv = [a.replace("{elf}", str(elf)) for a in argv]
    assert main(["register", *argv, "--url", native_server.url, "--token", ALICE]) == code
    assert message in capsys.readouterr().err
