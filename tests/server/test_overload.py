"""A worker past saturation, driven the way the paper's experiment drives it: a burst of
concurrent requests with 128 KiB bodies on keep-alive connections, the function in a
sandbox.  The excess is refused with a 503 and a JSON body before any admitted work is
done, the admitted requests are answered correctly, nothing hangs, and every connection
that carried a refused request (whose body the application never read) serves its next
request."""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import threading
import time
from pathlib import Path

import msgpack
import numpy as np

from dandelion.server import Server, ServerConfig

MMT = '''
import time
import numpy as np
import dandelion as dd

@dd.compute
def mmt(m: np.ndarray, pause: float) -> np.ndarray:
    time.sleep(pause)
    return m @ m.T
'''

BURST = 16
PAUSE = 1.0  # each admitted invocation's: the refusals come long before the first answer


def _npy(m: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, m)
    return out.getvalue()


def _body(m: np.ndarray, pause: float) -> bytes:
    return bytes(msgpack.packb({"inputs": {"m": [_npy(m)], "pause": [pause]}},
                               use_bin_type=True))


def _post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, dict[str, str], bytes,
                                                                   float]:
    """One request on a kept connection: status, headers, body, when the answer was read."""
    conn.request("POST", "/v1/functions/mmt/invoke", body,
                 {"Content-Type": "application/msgpack", "Accept": "application/msgpack"})
    resp = conn.getresponse()
    data = resp.read()
    return (resp.status, {k.lower(): v for k, v in resp.getheaders()}, data,
            time.monotonic())


def _result(data: bytes) -> np.ndarray:
    (item,) = msgpack.unpackb(data)["outputs"]["result"]
    result: np.ndarray = np.load(io.BytesIO(item["value"]))
    return result


def test_a_burst_past_saturation_is_refused_at_once_and_the_rest_answered_correctly(
        tmp_path: Path) -> None:
    config = ServerConfig(port=0, engine="process", workers=1, invocations=BURST,
                          max_waiting=2, cache=None, result_cache=0,
                          state_dir=str(tmp_path))
    m = np.arange(128 * 128, dtype=np.int64).reshape(128, 128) % 1000
    want = m @ m.T
    with Server(config).start_in_thread() as server:
        assert server.port is not None
        register = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        register.request("POST", "/v1/functions", json.dumps({"source": MMT}),
                         {"Content-Type": "application/json"})
        assert register.getresponse().status == 201
        register.close()
        conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                 for _ in range(BURST)]
        heavy = _body(m, PAUSE)
        assert len(heavy) > 128 * 1024
        go = threading.Barrier(BURST)

        def burst(conn: http.client.HTTPConnection) -> tuple[int, dict[str, str], bytes,
                                                             float]:
            go.wait()
            return _post(conn, heavy)

        try:
            with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
                answers = list(pool.map(burst, conns))  # nothing hangs: each one answered
                refused = [a for a in answers if a[0] == 503]
                done = [a for a in answers if a[0] == 200]
                assert len(refused) + len(done) == BURST, [a[0] for a in answers]
                # one runs and at most max_waiting wait; the others are refused
                assert 1 <= len(done) <= 1 + config.max_waiting
                for _, headers, data, _ in refused:
                    assert headers["content-type"].startswith("application/json")
                    assert json.loads(data)["error"]["type"] == "Overloaded"
                    assert int(headers["retry-after"]) >= 1
                for _, _, data, _ in done:
                    assert np.array_equal(_result(data), want)
                # refused at once: every 503 before the first admitted one was answered
                assert max(a[3] for a in refused) < min(a[3] for a in done)
            # every connection, the refused ones' too (the application never read their
            # bodies), serves its next request, one at a time
            light = _body(m, 0.0)
            again = [_post(conn, light) for conn in conns]
            assert [a[0] for a in again] == [200] * BURST
            for _, _, data, _ in again:
                assert np.array_equal(_result(data), want)
        finally:
            for conn in conns:
                conn.close()
