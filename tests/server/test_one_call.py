"""A function invoked alone goes from the event loop to its engine with no dispatcher run in
between (:mod:`dandelion.runtime.one_call`), and answers exactly what the dispatcher's run
answers: outputs, what it printed, the error of a raising, crashing or slow function, a
bad body, a cached result, another tenant's function."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from dandelion.runtime import dispatcher, one_call
from dandelion.server import Server, ServerConfig
from tests.server.conftest import ALICE, BOB, TOKENS, Raw

SOURCE = '''
import numpy as np
import dandelion as dd

SCALE = 3

def helper(x):
    return x * SCALE

@dd.compute
def triple(x: int) -> int:
    print("tripling", x)
    return helper(x)

@dd.compute
def gram(m: np.ndarray) -> np.ndarray:
    return m @ m.T

@dd.compute
def total(xs: list[int]) -> int:
    return sum(xs)

@dd.compute
def boom(x: int) -> int:
    print("about to fail")
    raise ValueError(f"no good: {x}")

@dd.compute
def spin(x: int) -> int:
    while True:
        x += 1
'''

#: label -> (path, body, content type): every kind of answer the invoke route gives
REQUESTS: dict[str, tuple[str, Any, str]] = {
    "printed": ("/v1/functions/triple/invoke?logs=1", {"inputs": {"x": [4]}},
                "application/json"),
    "bad array": ("/v1/functions/gram/invoke", {"inputs": {"m": [{"value": None}]}},
                  "application/json"),
    "a set": ("/v1/functions/total/invoke", {"inputs": {"xs": [1, 2, 3]}}, "application/json"),
    "no item": ("/v1/functions/total/invoke", {"inputs": {"xs": []}}, "application/json"),
    "raises": ("/v1/functions/boom/invoke?logs=1", {"inputs": {"x": [7]}}, "application/json"),
    "spins": ("/v1/functions/spin/invoke", {"inputs": {"x": [1]}}, "application/json"),
    "mistyped": ("/v1/functions/triple/invoke", {"inputs": {"x": ["four"]}},
                 "application/json"),
    "unknown input": ("/v1/functions/triple/invoke", {"inputs": {"y": [4]}},
                      "application/json"),
    "two items": ("/v1/functions/triple/invoke", {"inputs": {"x": [4, 5]}},
                  "application/json"),
    "not registered": ("/v1/functions/nothing/invoke", {"inputs": {"x": [4]}},
                       "application/json"),
    "msgpack": ("/v1/functions/triple/invoke", {"inputs": {"x": [5]}}, "application/msgpack"),
    "not an object": ("/v1/functions/triple/invoke", [1], "application/json"),
}
#: those that reach an engine as one instance
DIRECT = {"printed", "a set", "raises", "spins", "msgpack", "matrix"}


def _matrix_body() -> dict[str, Any]:
    np = pytest.importorskip("numpy")
    import io

    buf = io.BytesIO()
    np.save(buf, np.arange(12, dtype=np.int64).reshape(3, 4), allow_pickle=False)
    return {"inputs": {"m": [buf.getvalue()]}}


class Counting:
    """How often each path started a run (``direct=False``: the direct path is never
    taken)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, direct: bool) -> None:
        self.direct = self.general = 0
        real_direct, real_general = one_call.start_here, dispatcher.Dispatcher.start

        def direct_path(*args: Any, **kwargs: Any) -> Any:
            started = real_direct(*args, **kwargs) if direct else None
            self.direct += started is not None
            return started

        def general_path(d: dispatcher.Dispatcher, *args: Any) -> Any:
            self.general += 1
            return real_general(d, *args)

        monkeypatch.setattr(one_call, "start_here", direct_path)
        monkeypatch.setattr(dispatcher.Dispatcher, "start", general_path)


@contextlib.contextmanager
def _serve(tmp_path: Path, engine: str, **options: Any) -> Iterator[Raw]:
    config = ServerConfig(port=0, engine=engine, workers=1, state_dir=str(tmp_path),
                          tokens=TOKENS, **{"cache": None, "result_cache": 0, **options})
    with Server(config).start_in_thread() as server:
        raw = Raw(server.url)
        answer = raw("POST", "/v1/functions", {"source": SOURCE})
        assert answer.status == 201, answer.body
        yield raw


def _answers(raw: Raw, labels: list[str]) -> dict[str, tuple[int, Any]]:
    requests = {**REQUESTS, "matrix": ("/v1/functions/gram/invoke", _matrix_body(),
                                       "application/msgpack")}
    out = {}
    for label in labels:
        path, body, content_type = requests[label]
        answer = raw("POST", path, body, content_type=content_type,
                     headers={"Accept": "application/json"})
        doc = answer.json
        if "error" in doc:
            doc["error"].pop("traceback", None)  # (its line numbers: see the test below)
        out[label] = (answer.status, doc)
    return out


@pytest.mark.parametrize("engine", ["process", "inline"])
def test_the_direct_path_answers_what_the_dispatcher_answers(
        tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind of answer, from a worker whose one-call invocations take the direct path
    and from one whose take the dispatcher's run: the same statuses and documents.  On the
    process engine, with a time limit the loop enforces, and on inline (no time limit:
    inline cannot stop a function, and a limit sends every run to a waiting thread)."""
    labels = [*REQUESTS, "matrix"]
    if engine == "inline":
        labels.remove("spins")
    timeout = 1.0 if engine == "process" else None
    seen = {}
    for direct in (True, False):
        counting = Counting(monkeypatch, direct)
        with _serve(tmp_path / str(direct), engine, timeout=timeout) as raw:
            seen[direct] = _answers(raw, labels)
        reached = len(DIRECT & set(labels))
        assert (counting.direct, counting.general) == \
            ((reached, 1) if direct else (0, reached + 1))  # (+1: the set with no item)
        monkeypatch.undo()
    assert seen[True] == seen[False]
    answers = seen[True]
    assert answers["printed"] == (200, {
        "outputs": {"result": [{"value": 12, "key": 0, "name": ""}]},
        "logs": [{"function": "triple", "instance": 0, "text": "tripling 4\n"}]})
    assert answers["a set"][1]["outputs"]["result"][0]["value"] == 6
    assert answers["no item"] == (200, {"outputs": {"result": []}})
    status, doc = answers["raises"]
    assert status == 422 and doc["error"]["type"] == "FunctionError"
    assert doc["error"]["message"].startswith("compute function 'boom', its instance: ")
    assert "no good: 7" in doc["error"]["message"]
    assert doc["error"]["logs"] == "about to fail\n"
    assert answers["matrix"][0] == 200
    assert [answers[k][0] for k in ("bad array", "mistyped", "unknown input", "two items",
                                    "not registered", "not an object")] == \
        [400, 400, 400, 400, 404, 400]
    if engine == "process":
        assert answers["spins"][0] == 422
        assert "ran past its timeout of 1 s" in answers["spins"][1]["error"]["message"]


def test_a_raising_function_s_traceback_names_its_line_on_the_direct_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = Counting(monkeypatch, True)
    with _serve(tmp_path, "process") as raw:
        answer = raw("POST", "/v1/functions/boom/invoke", {"inputs": {"x": [7]}})
        assert answer.status == 422
        trace = answer.json["error"]["traceback"]
        assert 'raise ValueError(f"no good: {x}")' in trace and "ValueError: no good: 7" in trace
        # the worker goes on: the next invocation is answered
        assert raw("POST", "/v1/functions/triple/invoke", {"inputs": {"x": [1]}}).json[
            "outputs"]["result"][0]["value"] == 3
    assert counting.direct == 2 and counting.general == 0


def test_a_cached_result_and_another_tenant_on_the_direct_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the worker's whole-result cache (per tenant), a repeated invocation is a hit
    served before any engine; a tenant never reads another's function nor its cached
    result."""
    counting = Counting(monkeypatch, True)
    with _serve(tmp_path, "process", result_cache=8) as raw:
        first = raw("POST", "/v1/functions/triple/invoke", {"inputs": {"x": [2]}})
        again = raw("POST", "/v1/functions/triple/invoke", {"inputs": {"x": [2]}})
        assert first.headers["x-dandelion-cache"] == "miss"
        assert again.headers["x-dandelion-cache"] == "hit"
        assert first.json == again.json == {
            "outputs": {"result": [{"value": 6, "key": 0, "name": ""}]}}
        assert counting.direct == 1 and counting.general == 0
        other = raw("POST", "/v1/functions/triple/invoke", {"inputs": {"x": [2]}}, token=BOB)
        assert other.status == 404 and other.json["error"]["type"] == "NotFound"
        assert raw("POST", "/v1/functions", {"source": SOURCE}, token=BOB).status == 201
        bobs = raw("POST", "/v1/functions/triple/invoke", {"inputs": {"x": [2]}}, token=BOB)
        assert bobs.headers["x-dandelion-cache"] == "miss" and bobs.json == first.json
        assert counting.direct == 2
        unauthorized = raw("POST", "/v1/functions/triple/invoke", {"inputs": {"x": [2]}},
                           token=None)
        assert unauthorized.status == 401


def test_jobs_take_the_direct_path_within_the_tenant_s_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job of a function runs on the direct path too: its result, a failing job's error
    (named as an invocation's), and the tenant's bound on jobs still running (a 429 past
    it, while a job of the first kind spins until its time limit)."""
    import time

    counting = Counting(monkeypatch, True)
    with _serve(tmp_path, "process", max_jobs=1, timeout=2.0) as raw:
        def job(function: str, x: int) -> str:
            answer = raw("POST", f"/v1/functions/{function}/jobs", {"inputs": {"x": [x]}})
            assert answer.status == 202, answer.body
            return str(answer.json["id"])

        done = raw("GET", f"/v1/jobs/{job('triple', 5)}?wait=20").json
        assert done["status"] == "succeeded"
        assert done["outputs"] == {"result": [{"value": 15, "key": 0, "name": ""}]}
        assert done["logs"] == [{"function": "triple", "instance": 0, "text": "tripling 5\n"}]
        failed = raw("GET", f"/v1/jobs/{job('boom', 1)}?wait=20").json
        assert failed["status"] == "failed" and failed["error"]["status"] == 422
        assert failed["error"]["message"].startswith("compute function 'boom', its instance")
        spinning = job("spin", 1)
        started = time.monotonic()
        refused = raw("POST", "/v1/functions/triple/jobs", {"inputs": {"x": [1]}})
        assert refused.status == 429 and "the limit is 1" in refused.json["error"]["message"]
        assert time.monotonic() - started < 2.0  # (while the spinning job still ran)
        timed_out = raw("GET", f"/v1/jobs/{spinning}?wait=20").json
        assert timed_out["status"] == "failed"
        assert "ran past its timeout of 2 s" in timed_out["error"]["message"]
    assert counting.direct == 3 and counting.general == 0


SLOW = '''
import time
import dandelion as dd

@dd.compute
def slow(x: int) -> int:
    time.sleep(0.5)
    return x + 1
'''


def test_a_client_that_leaves_mid_invocation_costs_only_its_own_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that closes its connection while its instance runs on the direct path: the
    handler is cancelled, the instance runs out on its sandbox and its outcome is dropped;
    the engine is free again and the next invocations are answered (one of them queued
    behind the abandoned one), and nothing stays admitted."""
    import socket
    import time

    counting = Counting(monkeypatch, True)
    with _serve(tmp_path, "process", timeout=5.0) as raw:
        assert raw("POST", "/v1/functions", {"source": SLOW}).status == 201
        body = b'{"inputs": {"x": [1]}}'
        with socket.create_connection((raw.host, raw.port)) as sock:
            sock.sendall(b"POST /v1/functions/slow/invoke HTTP/1.1\r\nHost: x\r\n"
                         b"Authorization: Bearer " + ALICE.encode() + b"\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.2)  # (its instance runs)
        answers = [raw("POST", "/v1/functions/slow/invoke", {"inputs": {"x": [x]}})
                   for x in (2, 3)]
        assert [a.json["outputs"]["result"][0]["value"] for a in answers] == [3, 4]
        metrics = raw("GET", "/metrics").body.decode()
        assert "dandelion_admitted 0" in metrics
    assert counting.direct == 3 and counting.general == 0


def test_the_direct_path_with_the_worker_s_cache_answers_what_the_dispatcher_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the instance cache in memory (``--cache memory``, the default of ``dandelion
    serve``) an invocation takes the direct path too: a miss computes and keeps the
    outputs, a repeat is served from the cache (no engine), a raising function is never
    kept, and a tenant reads only its own entries; the answers, the X-Dandelion-Cache
    headers and the cache's counts are the dispatcher's."""
    calls = [(ALICE, "triple", 2), (ALICE, "triple", 2), (BOB, "triple", 2),
             (BOB, "triple", 2), (ALICE, "boom", 1), (ALICE, "boom", 1), (ALICE, "gram", 0),
             (ALICE, "gram", 0)]
    seen = {}
    for direct in (True, False):
        counting = Counting(monkeypatch, direct)
        with _serve(tmp_path / str(direct), "process", cache="memory") as raw:
            assert raw("POST", "/v1/functions", {"source": SOURCE}, token=BOB).status == 201
            answers = []
            for token, function, x in calls:
                body = _matrix_body() if function == "gram" else {"inputs": {"x": [x]}}
                answer = raw("POST", f"/v1/functions/{function}/invoke", body, token=token,
                             content_type="application/msgpack",
                             headers={"Accept": "application/json"})
                doc = answer.json
                if "error" in doc:
                    doc["error"].pop("traceback", None)
                answers.append((answer.status, answer.headers.get("x-dandelion-cache"), doc))
            metrics = raw("GET", "/metrics").body.decode()
            counts = [line for line in metrics.splitlines()
                      if line.startswith(("dandelion_cache_lookups_total",
                                          "dandelion_cache_served_bytes_total"))]
            seen[direct] = (answers, counts)
        assert (counting.direct, counting.general) == ((8, 0) if direct else (0, 8))
        monkeypatch.undo()
    assert seen[True] == seen[False]
    answers, counts = seen[True]
    assert [(status, cache) for status, cache, _ in answers] == [
        (200, "miss"), (200, "hit"), (200, "miss"), (200, "hit"), (422, None), (422, None),
        (200, "miss"), (200, "hit")]
    assert answers[0][2] == answers[1][2] == answers[2][2] == {
        "outputs": {"result": [{"value": 6, "key": 0, "name": ""}]}}
    assert 'dandelion_cache_lookups_total{outcome="hit"} 3.0' in counts
    assert 'dandelion_cache_lookups_total{outcome="miss"} 5.0' in counts


def test_an_invocation_identical_to_one_in_flight_on_the_direct_path_joins_its_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two identical invocations at once with the cache on: the first leads the instance's
    flight on the direct path, the second (the dispatcher's run) follows it and is answered
    with the outputs the first kept, and the third finds them in the cache."""
    import concurrent.futures
    import time

    counting = Counting(monkeypatch, True)
    with _serve(tmp_path, "process", cache="memory", timeout=5.0) as raw:
        assert raw("POST", "/v1/functions", {"source": SLOW}).status == 201

        def invoke() -> Any:
            return raw("POST", "/v1/functions/slow/invoke", {"inputs": {"x": [1]}})

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(invoke)
            time.sleep(0.2)  # (the first runs)
            second = pool.submit(invoke)
            answers = [first.result(timeout=20), second.result(timeout=20)]
        assert [a.json["outputs"]["result"][0]["value"] for a in answers] == [2, 2]
        assert (counting.direct, counting.general) == (1, 1)
        third = invoke()
        assert third.headers["x-dandelion-cache"] == "hit" and third.json == answers[0].json
        assert (counting.direct, counting.general) == (2, 1)


def test_a_plan_s_shape_is_made_once_and_goes_with_its_plan() -> None:
    """What the one-call path works out per plan is kept as long as the plan is (a worker
    keeps its plans, bounded), not in a second bounded cache of its own."""
    import gc

    import dandelion as dd
    from dandelion.planner import make_plan
    from dandelion.program import call_module

    @dd.compute
    def inc(x: int) -> int:
        return x + 1

    plans = [make_plan(call_module(inc.spec), "invoke.inc") for _ in range(3)]
    shapes = [one_call.shape_of(p) for p in plans]
    assert [one_call.shape_of(p) for p in plans] == shapes and shapes[0] is not None
    assert all(one_call.shape_of(p) is s for p, s in zip(plans, shapes))
    kept = {id(p) for p in plans}
    assert kept <= set(one_call._SHAPES)
    del plans, shapes
    gc.collect()
    assert not kept & set(one_call._SHAPES)
