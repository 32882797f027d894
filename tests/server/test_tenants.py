"""Tenants: separate namespaces of functions, compositions, jobs and cached results."""

from __future__ import annotations

from dandelion.ir import module_to_data
from tests.server.conftest import ALICE, BOB
from tests.server.funcs import sum_doubles

ALICE_SRC = ("import dandelion as dd\n@dd.compute\ndef secret(x: int) -> int:\n"
             "    return x + 1000\n")
BOB_SRC = ("import dandelion as dd\n@dd.compute\ndef secret(x: int) -> int:\n"
           "    return x - 1000\n")


def test_a_tenant_cannot_see_invoke_or_delete_another_tenants_things(raw):
    assert raw("POST", "/v1/functions", {"source": ALICE_SRC}, token=ALICE).status == 201
    raw("POST", "/v1/functions", {"source": "import dandelion as dd\n@dd.compute\n"
                                            "def double(x: int) -> int:\n    return 2*x\n"
                                            "@dd.compute\ndef total(xs: list[int]) -> int:\n"
                                            "    return sum(xs)\n"}, token=ALICE)
    assert raw("POST", "/v1/compositions", {"ir": module_to_data(sum_doubles.module)},
               token=ALICE).status == 201
    assert "secret" not in [f["name"] for f in raw("GET", "/v1/functions",
                                                   token=BOB).json["functions"]]
    assert raw("GET", "/v1/compositions", token=BOB).json["compositions"] == []
    assert raw("GET", "/v1/functions/secret", token=BOB).status == 404
    assert raw("POST", "/v1/functions/secret/invoke", {"inputs": {"x": [1]}},
               token=BOB).status == 404
    assert raw("POST", "/v1/compositions/sum_doubles/invoke", {"inputs": {"xs": [1]}},
               token=BOB).status == 404
    assert raw("DELETE", "/v1/functions/secret", token=BOB).status == 404
    assert raw("GET", "/v1/functions/secret", token=ALICE).status == 200


def test_a_composition_cannot_call_another_tenants_function(raw):
    a = raw("POST", "/v1/compositions", {"ir": module_to_data(sum_doubles.module)}, token=BOB)
    assert a.status == 400 and "not registered" in a.json["error"]["message"]


def test_same_names_in_two_tenants_run_their_own_code(raw):
    raw("POST", "/v1/functions", {"source": ALICE_SRC}, token=ALICE)
    raw("POST", "/v1/functions", {"source": BOB_SRC}, token=BOB)
    body = {"inputs": {"x": [1]}}
    a = raw("POST", "/v1/functions/secret/invoke", body, token=ALICE).json
    b = raw("POST", "/v1/functions/secret/invoke", body, token=BOB).json
    assert a["outputs"]["result"][0]["value"] == 1001
    assert b["outputs"]["result"][0]["value"] == -999
    again = raw("POST", "/v1/functions/secret/invoke", body, token=BOB)
    assert again.headers["x-dandelion-cache"] == "hit"
    assert again.json["outputs"]["result"][0]["value"] == -999  # never alice's cached result


SHARED_SRC = ("import dandelion as dd\n@dd.compute\ndef shared(x: int) -> int:\n"
              "    return x * 7\n")
HIT = 'dandelion_cache_lookups_total{outcome="hit"}'


def _metric(raw, line: str) -> float:
    for row in raw("GET", "/metrics", token=None).body.decode().splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def test_two_tenants_with_the_same_function_and_inputs_never_share_a_result(raw):
    for token in (ALICE, BOB):
        assert raw("POST", "/v1/functions", {"source": SHARED_SRC}, token=token).status == 201
    body = {"inputs": {"x": [6]}}
    hits = _metric(raw, HIT)
    a = raw("POST", "/v1/functions/shared/invoke", body, token=ALICE)
    b = raw("POST", "/v1/functions/shared/invoke", body, token=BOB)
    assert a.json == b.json and b.json["outputs"]["result"][0]["value"] == 42
    # bob's instance has alice's key but lives in another namespace: computed again
    assert b.headers["x-dandelion-cache"] == "miss" and _metric(raw, HIT) == hits
    assert raw("POST", "/v1/functions/shared/invoke", body,
               token=BOB).headers["x-dandelion-cache"] == "hit"


def test_jobs_are_private_to_their_tenant(raw):
    raw("POST", "/v1/functions", {"source": ALICE_SRC}, token=ALICE)
    job = raw("POST", "/v1/functions/secret/jobs", {"inputs": {"x": [1]}},
              token=ALICE).json["id"]
    assert raw("GET", f"/v1/jobs/{job}?wait=5", token=BOB).status == 404
    assert job not in [j["id"] for j in raw("GET", "/v1/jobs", token=BOB).json["jobs"]]
    assert raw("DELETE", f"/v1/jobs/{job}", token=BOB).status == 404
    assert raw("GET", f"/v1/jobs/{job}?wait=5", token=ALICE).json["status"] == "succeeded"
