"""A property-based fuzz of the API from its own OpenAPI document: never a 5xx.

Schemathesis turns every operation of ``/openapi.json`` into a Hypothesis strategy of
requests (valid ones and, with negative data generation, invalid ones); each is sent to
the real server on loopback.  About 10 examples per operation keep it to seconds.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from dandelion.ir import module_to_data  # noqa: E402
from tests.server.conftest import ALICE  # noqa: E402
from tests.server.funcs import SOURCE, sum_doubles  # noqa: E402

EXAMPLES = 6  # per operation and mode: ~19 operations x 2 modes x 6 = ~230 requests


def operations(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_no_request_gets_a_server_error(server, raw):
    raw("POST", "/v1/functions", {"source": SOURCE})
    raw("POST", "/v1/compositions", {"ir": module_to_data(sum_doubles.module)})
    ops = operations(server)
    assert len(ops) >= 15
    headers = {"Authorization": f"Bearer {ALICE}"}
    sent = []

    modes = list(schemathesis.GenerationMode)
    for op, mode in [(op, mode) for op in ops for mode in modes]:
        @given(case=op.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(base_url=server.url, headers=headers, timeout=30)
            sent.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, case.body,
                                                response.text[:300])
            if response.status_code >= 400:
                assert "error" in response.json(), response.text[:200]

        try:
            check()
        except Unsatisfiable:  # nothing invalid to generate (e.g. GET /health)
            assert mode is schemathesis.GenerationMode.NEGATIVE
    assert len(sent) >= len(ops)
    assert raw("GET", "/health").status == 200
