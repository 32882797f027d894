"""Every endpoint of the frontend, over real HTTP on loopback, and the bad input table."""

from __future__ import annotations

import socket

import msgpack
import pytest

from dandelion.ir import module_to_data
from dandelion.server import Server, ServerConfig
from tests.server.conftest import ALICE, Raw
from tests.server.funcs import SOURCE, explode, reverse_all, sum_doubles


@pytest.fixture(scope="module", autouse=True)
def registered(raw):
    assert raw("POST", "/v1/functions", {"source": SOURCE}).status == 201
    for comp in (sum_doubles, explode, reverse_all):
        a = raw("POST", "/v1/compositions", {"ir": module_to_data(comp.module)})
        assert a.status == 201, a.body


def test_health_answers_without_a_token(raw):
    a = raw("GET", "/health", token=None)
    assert a.status == 200 and a.json["status"] == "ok"
    assert a.json["engine"] in ("process", "inline")


def test_openapi_document_describes_every_route(raw):
    doc = raw("GET", "/openapi.json", token=None).json
    assert doc["openapi"].startswith("3.")
    for path in ("/health", "/metrics", "/v1/functions", "/v1/functions/{name}",
                 "/v1/functions/{name}/invoke", "/v1/compositions/{name}/invoke",
                 "/v1/compositions/{name}/jobs", "/v1/jobs/{id}"):
        assert path in doc["paths"]


def test_functions_are_listed_and_described(raw):
    names = [f["name"] for f in raw("GET", "/v1/functions").json["functions"]]
    assert names == ["boom", "double", "reverse", "total"]
    d = raw("GET", "/v1/functions/double").json
    assert d["params"] == [{"name": "x", "type": "item[int]"}] and d["kind"] == "compute"


def test_compositions_are_listed_and_described(raw):
    names = [c["name"] for c in raw("GET", "/v1/compositions").json["compositions"]]
    assert names == ["explode", "reverse_all", "sum_doubles"]
    d = raw("GET", "/v1/compositions/sum_doubles").json
    assert d["inputs"] == [{"name": "xs", "type": "set[int]"}]
    assert d["outputs"] == [{"name": "result", "type": "item[int]"}]
    assert d["ir"]["format"] == "dandelion-ir" and d["cacheable"] is True


def test_invoke_with_json(raw):
    a = raw("POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {"xs": [1, 2, 3]}})
    assert a.status == 200
    assert a.json == {"outputs": {"result": [{"value": 12, "key": 0, "name": ""}]}}


def test_invoke_with_msgpack_is_binary_safe(raw):
    blob = bytes(range(256))
    a = raw("POST", "/v1/compositions/reverse_all/invoke",
            {"inputs": {"blobs": [{"value": blob, "key": 5, "name": "b"}, b"\x00\xff"]}},
            content_type="application/msgpack")
    assert a.status == 200 and a.headers["content-type"].startswith("application/msgpack")
    out = msgpack.unpackb(a.body)["outputs"]["result"]
    assert out == [{"value": blob[::-1], "key": 0, "name": ""},
                   {"value": b"\xff\x00", "key": 0, "name": ""}]


def test_json_bytes_travel_as_base64(raw):
    a = raw("POST", "/v1/compositions/reverse_all/invoke",
            {"inputs": {"blobs": [{"base64": "AAEC"}, "abc"]}})
    assert [i["value"] for i in a.json["outputs"]["result"]] == [{"base64": "AgEA"},
                                                                {"base64": "Y2Jh"}]


def test_invoke_a_single_function(raw):
    a = raw("POST", "/v1/functions/double/invoke", {"inputs": {"x": [21]}})
    assert a.json["outputs"] == {"result": [{"value": 42, "key": 0, "name": ""}]}


def test_async_job_poll_wait_list_delete(raw):
    a = raw("POST", "/v1/compositions/sum_doubles/jobs", {"inputs": {"xs": [5]}})
    assert a.status == 202 and a.json["status"] == "running"
    job = a.json["id"]
    done = raw("GET", f"/v1/jobs/{job}?wait=10").json
    assert done["status"] == "succeeded" and done["outputs"]["result"][0]["value"] == 10
    assert job in [j["id"] for j in raw("GET", "/v1/jobs").json["jobs"]]
    assert raw("DELETE", f"/v1/jobs/{job}").status == 200
    assert raw("GET", f"/v1/jobs/{job}").status == 404


def test_a_job_submitted_in_msgpack_is_answered_in_msgpack(raw):
    import msgpack

    a = raw("POST", "/v1/compositions/sum_doubles/jobs", {"inputs": {"xs": [5]}},
            content_type="application/msgpack")
    assert a.status == 202 and a.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(a.body)["status"] == "running"


def test_failed_job_reports_its_error(raw):
    job = raw("POST", "/v1/compositions/explode/jobs", {"inputs": {"xs": [1]}}).json["id"]
    doc = raw("GET", f"/v1/jobs/{job}?wait=10").json
    assert doc["status"] == "failed" and doc["error"]["function"] == "boom"
    assert doc["error"]["status"] == 422


def test_a_failing_function_fails_only_its_invocation(raw):
    a = raw("POST", "/v1/compositions/explode/invoke", {"inputs": {"xs": [1, 7]}})
    assert a.status == 422
    err = a.json["error"]
    assert err["type"] == "FunctionError" and err["function"] == "boom"
    assert "ValueError: bad" in err["message"] and err["instance"] is not None
    assert raw("POST", "/v1/compositions/sum_doubles/invoke",
               {"inputs": {"xs": [1]}}).status == 200


def test_results_of_cacheable_compositions_are_cached_per_tenant(raw):
    body = {"inputs": {"xs": [40, 2]}}
    first = raw("POST", "/v1/compositions/sum_doubles/invoke", body)
    second = raw("POST", "/v1/compositions/sum_doubles/invoke", body)
    assert first.headers["x-dandelion-cache"] == "miss"
    assert second.headers["x-dandelion-cache"] == "hit" and second.json == first.json


HIT = 'dandelion_cache_lookups_total{outcome="hit"}'
MISS = 'dandelion_cache_lookups_total{outcome="miss"}'
SERVED = "dandelion_cache_served_bytes_total"


def test_an_invocation_hits_per_function_instance_not_only_per_composition(raw):
    before = {m: _metric(raw, m) for m in (HIT, MISS, SERVED)}
    per_before = _per_function(raw)
    raw("POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {"xs": [11, 12]}})
    after_first = {m: _metric(raw, m) for m in (HIT, MISS, SERVED)}
    assert after_first[HIT] == before[HIT] and after_first[MISS] == before[MISS] + 3
    a = raw("POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {"xs": [11, 12, 13]}})
    assert a.json["outputs"]["result"][0]["value"] == 72
    assert a.headers["x-dandelion-cache"] == "miss"  # double(13) and the total ran
    assert _metric(raw, HIT) == before[HIT] + 2  # double(11) and double(12)
    assert _metric(raw, MISS) == after_first[MISS] + 2
    assert _metric(raw, SERVED) > after_first[SERVED]
    per = _per_function(raw)  # and per function: double 3 misses and 2 hits, total 2 misses
    grew = {k: per[k] - per_before[k] for k in per}
    assert [grew[("double", o)] for o in ("hit", "miss")] == [2, 3]
    assert [grew[("total", o)] for o in ("hit", "miss", "bytes")] == [0, 2, 0]
    assert grew[("double", "bytes")] > 0


def _per_function(raw: Raw) -> dict[tuple[str, str], float]:
    out = {(f, o): _metric(raw, f'dandelion_cache_function_lookups_total{{function="{f}",'
                                f'outcome="{o}"}}')
           for f in ("double", "total") for o in ("hit", "miss")}
    out.update(((f, "bytes"), _metric(
        raw, f'dandelion_cache_function_served_bytes_total{{function="{f}"}}'))
        for f in ("double", "total"))
    return out


def test_metrics_count_invocations_latency_and_cold_hot_loads(raw):
    raw("POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {"xs": [9, 9, 9]}})
    text = raw("GET", "/metrics", token=None).body.decode()
    assert 'dandelion_invocations_total{kind="composition",outcome="ok"}' in text
    assert 'dandelion_invocations_total{kind="composition",outcome="error"}' in text
    assert "dandelion_invocation_seconds_bucket" in text
    assert 'dandelion_function_loads_total{temperature="hot"}' in text
    assert "dandelion_sandbox_violations_total" in text


def _metric(raw: Raw, line: str) -> float:
    for row in raw("GET", "/metrics", token=None).body.decode().splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def test_evicted_functions_start_cold(raw):
    cold = 'dandelion_function_loads_total{temperature="cold"}'
    before = _metric(raw, cold)
    for i in range(5):  # hot_functions=4: these push double and total out of memory
        raw("POST", "/v1/functions", {"source": f"import dandelion as dd\n@dd.compute\n"
                                                f"def filler{i}(x: int) -> int:\n"
                                                f"    return x + {i}\n"})
    raw("POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {"xs": [123]}})
    assert _metric(raw, cold) == before + 2


BAD = [
    ("malformed JSON", "POST", "/v1/compositions/sum_doubles/invoke", None, b"{nope", 400,
     "not valid JSON"),
    ("malformed msgpack", "POST", "/v1/compositions/sum_doubles/invoke", None, b"\xc1", 400,
     "not valid msgpack"),
    ("deeply nested JSON", "POST", "/v1/compositions/sum_doubles/invoke", None,
     b"[" * 100000, 400, "nested too deeply"),
    ("deeply nested msgpack", "POST", "/v1/compositions/sum_doubles/invoke", None,
     b"\x91" * 100000, 400, "not valid msgpack: nested too deeply"),
    ("body not an object", "POST", "/v1/compositions/sum_doubles/invoke", [1], None, 400,
     "must be an object"),
    ("unknown field", "POST", "/v1/compositions/sum_doubles/invoke", {"inputz": {}}, None, 400,
     "unknown field"),
    ("missing input", "POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {}}, None, 400,
     "missing inputs: xs"),
    ("unknown input", "POST", "/v1/compositions/sum_doubles/invoke",
     {"inputs": {"xs": [], "ys": []}}, None, 400, "unknown inputs: ys"),
    ("wrong type", "POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {"xs": ["a"]}},
     None, 400, r"inputs.xs\[0\]: expected an integer"),
    ("set not a list", "POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {"xs": 3}},
     None, 400, "a set is a list"),
    ("two items for an item", "POST", "/v1/functions/double/invoke",
     {"inputs": {"x": [1, 2]}}, None, 400, "exactly one item"),
    ("int64 overflow", "POST", "/v1/functions/double/invoke", {"inputs": {"x": [2 ** 70]}},
     None, 400, "64 bits"),
    ("unknown composition", "POST", "/v1/compositions/nope/invoke", {"inputs": {}}, None, 404,
     "no composition called 'nope'"),
    ("unknown function", "GET", "/v1/functions/dubble", None, None, 404, "did you mean"),
    ("unknown route", "GET", "/v2/things", None, None, 404, "no endpoint"),
    ("wrong method", "PUT", "/v1/functions", None, None, 405, "not allowed"),
    ("bad wait", "GET", "/v1/jobs/x?wait=soon", None, None, 404, "no job"),
    ("syntax error in source", "POST", "/v1/functions", {"source": "def f(:\n"}, None, 400,
     "line 1"),
    ("no compute function", "POST", "/v1/functions", {"source": "x = 1\n"}, None, 400,
     "defines no @dd.compute"),
    ("source raises", "POST", "/v1/functions", {"source": "raise SystemExit(3)\n"}, None,
     400, "raised SystemExit"),
    ("source and module", "POST", "/v1/functions", {"source": "", "module": "os"}, None, 400,
     "either"),
    ("wasm kind with source", "POST", "/v1/functions", {"source": "x", "kind": "wasm"}, None,
     400, "a 'wasm' function registration takes no source"),
    ("native with source", "POST", "/v1/functions", {"source": "x", "kind": "native"}, None,
     400, "'native' function registration takes no source"),
    ("wrong field type", "POST", "/v1/functions", {"source": 3}, None, 400, "must be a str"),
    ("IR garbage", "POST", "/v1/compositions", {"ir": {"format": "dandelion-ir",
                                                        "version": 1, "compositions": 7}},
     None, 400, "IR"),
    ("IR not IR", "POST", "/v1/compositions", {"ir": {"hello": 1}}, None, 400,
     "not a Dandelion IR"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_a_4xx_json_error_naming_the_problem(raw, case):
    name, method, path, body, data, status, message = case
    ctype = "application/msgpack" if "msgpack" in name else "application/json"
    a = raw(method, path, body, raw=data, content_type=ctype)
    assert a.status == status, a.body
    assert a.headers["content-type"].startswith("application/json")
    import re

    err = a.json["error"]
    assert re.search(message, f"{err['message']} {err.get('hint', '')}"), a.json
    assert raw("GET", "/health").status == 200


def test_unregistered_function_in_a_composition_is_refused(raw):
    from tests.io.test_functions import logCount

    data = module_to_data(logCount.module)
    a = raw("POST", "/v1/compositions", {"ir": data})
    assert a.status == 400 and "is not registered" in a.json["error"]["message"]


def test_type_mismatch_against_the_registered_signature_is_refused(raw):
    import dandelion as dd

    @dd.compute(name="double")
    def wrong(x: str) -> str:
        return x

    @dd.composition
    def uses_wrong(x: str) -> str:
        return wrong(x)

    a = raw("POST", "/v1/compositions", {"ir": module_to_data(uses_wrong.module)})
    assert a.status == 400 and "registered as" in a.json["error"]["message"]


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-xxxxxxxx", "Basic abc",
                                    "Bearer "])
def test_missing_or_invalid_tokens_are_401(raw, header):
    headers = {"Authorization": header} if header else {}
    a = raw("GET", "/v1/functions", token=None, headers=headers)
    assert a.status == 401 and a.json["error"]["type"] == "Unauthorized"


def test_oversized_body_is_413(raw):
    a = raw("POST", "/v1/compositions/reverse_all/invoke", raw=b"x" * (2 << 20))
    assert a.status == 413 and "larger than" in a.json["error"]["message"]
    assert raw("GET", "/health").status == 200


def test_slow_client_gets_408_and_others_are_served_meanwhile(server, raw):
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/compositions/sum_doubles/invoke HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + ALICE.encode() + b"\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"in")
        assert raw("GET", "/health").status == 200  # served while the slow body is pending
        s.settimeout(10)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer


def test_delete_function_and_composition(raw):
    raw("POST", "/v1/functions", {"source": "import dandelion as dd\n@dd.compute\n"
                                            "def gone(x: int) -> int:\n    return x\n"})
    assert raw("DELETE", "/v1/functions/gone").status == 200
    assert raw("GET", "/v1/functions/gone").status == 404
    assert raw("DELETE", "/v1/functions/gone").status == 404
    assert raw("DELETE", "/v1/compositions/explode").status == 200
    assert raw("POST", "/v1/compositions/explode/invoke", {"inputs": {"xs": []}}).status \
        == 404


def test_registrations_survive_a_restart(tmp_path):
    config = ServerConfig(port=0, state_dir=str(tmp_path))
    with Server(config).start_in_thread() as s:
        r = Raw(s.url)
        assert r("POST", "/v1/functions", {"source": SOURCE}).status == 201
        assert r("POST", "/v1/compositions",
                 {"ir": module_to_data(sum_doubles.module)}).status == 201
    with Server(config).start_in_thread() as s:
        a = Raw(s.url)("POST", "/v1/compositions/sum_doubles/invoke",
                       {"inputs": {"xs": [1, 2]}})
        assert a.status == 200 and a.json["outputs"]["result"][0]["value"] == 6


def test_every_composition_of_one_registration_survives_a_restart(tmp_path):
    config = ServerConfig(port=0, state_dir=str(tmp_path))
    both = sum_doubles.module.merge(explode.module)
    with Server(config).start_in_thread() as s:
        r = Raw(s.url)
        assert r("POST", "/v1/functions", {"source": SOURCE}).status == 201
        assert r("POST", "/v1/compositions", {"ir": module_to_data(both)}).status == 201
    with Server(config).start_in_thread() as s:
        listed = Raw(s.url)("GET", "/v1/compositions").json
        names = sorted(c["name"] for c in listed["compositions"])
        assert names == ["explode", "sum_doubles"]


def test_a_registered_sources_file_name_survives_a_restart(tmp_path):
    # the name is kept with the stored text: a worker that loads the source again after a
    # restart still shows the client's file name in tracebacks, not its store's path
    source = ("import dandelion as dd\n\n\n@dd.compute\ndef fails_late(x: int) -> int:\n"
              "    raise ValueError(f'late {x}')\n")
    config = ServerConfig(port=0, state_dir=str(tmp_path), engine="inline")
    with Server(config).start_in_thread() as s:
        assert Raw(s.url)("POST", "/v1/functions", {"source": source,
                                                    "filename": "jobs/late.py"}).status == 201
    with Server(config).start_in_thread() as s:
        answer = Raw(s.url)("POST", "/v1/functions/fails_late/invoke",
                            {"inputs": {"x": [7]}})
    assert answer.status == 422, answer.json
    traceback = answer.json["error"]["traceback"]
    assert traceback.endswith('  File "jobs/late.py", line 6, in fails_late\n'
                              "    raise ValueError(f'late {x}')\nValueError: late 7")
    assert str(tmp_path) not in traceback
