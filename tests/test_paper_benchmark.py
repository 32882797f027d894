"""The paper experiment's measuring tools (benchmarks/paper): how the load generator sends an
unloaded series and how the report reads a peak (the benchmarks themselves are run, not
tested: only ratios within one run mean anything)."""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import importlib.util
import io
import shutil
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from aiohttp import web

PAPER = Path(__file__).resolve().parents[1] / "benchmarks" / "paper"
sys.path.insert(0, str(PAPER))

import loadgen  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402


@contextlib.asynccontextmanager
async def _server(invoke: Callable[[web.Request], Awaitable[web.StreamResponse]],
                  **options: Any) -> AsyncIterator[str]:
    """A real aiohttp server answering ``POST /invoke/{name}`` with ``invoke``: the URL
    template the load generator takes, until the block ends."""
    app = web.Application(**options)
    app.router.add_post("/invoke/{name}", invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/invoke/{{name}}"
    finally:
        await runner.cleanup()


async def _series(tmp_path: Path, pause: float) -> tuple[dict[str, Any], list[float]]:
    """A sequential series of 5 requests against a real HTTP server; the server's times
    between answering one request and receiving the next."""
    gaps: list[float] = []
    answered: list[float] = []

    async def invoke(request: web.Request) -> web.Response:
        await request.read()
        if answered:
            gaps.append(time.perf_counter() - answered[-1])
        answered.append(time.perf_counter())
        return web.Response(body=b"ok")

    body = tmp_path / "body"
    body.write_bytes(b"x" * 1000)
    async with _server(invoke) as url:
        result = await loadgen.run({"url": url, "body": str(body), "hot_name": "f",
                                    "sequential": 5, "pause": pause})
    return result, gaps


def test_an_unloaded_series_rests_between_an_answer_and_the_next_request(tmp_path: Path
                                                                          ) -> None:
    result, gaps = asyncio.run(_series(tmp_path, 0.2))
    assert result["ok"] == 5 and len(gaps) == 4
    assert min(gaps) >= 0.2  # each request at rest: the pause after the previous answer
    # latency is the request's own, from sending it: the pauses are not in it
    assert result["p50"] < 0.2


def test_back_to_back_without_a_pause(tmp_path: Path) -> None:
    result, gaps = asyncio.run(_series(tmp_path, 0.0))
    assert result["ok"] == 5 and len(gaps) == 4
    assert max(gaps) < 0.2


def test_the_generator_reads_refusals_and_chunked_answers_on_kept_connections(
        tmp_path: Path) -> None:
    """Open loop against a real server that refuses half the requests from their head (503,
    the body unread, as an overloaded worker does) and streams the others' answers in
    chunks: every answer is read in full, nothing fails or times out."""

    async def invoke(request: web.Request) -> web.StreamResponse:
        if request.match_info["name"] != "hot":
            return web.Response(status=503, body=b"overloaded")
        body = await request.read()
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(body), 4096):
            await response.write(body[i:i + 4096])
        await response.write_eof()
        return response

    async def level() -> dict[str, Any]:
        body = tmp_path / "body"
        body.write_bytes(bytes(range(256)) * 512)  # 128 KiB, as the experiment's
        async with _server(invoke, client_max_size=1 << 20) as url:
            return await loadgen.run({"url": url, "body": str(body), "hot_name": "hot",
                                      "cold_names": ["cold"], "hot": 0.5, "rate": 200,
                                      "seconds": 1.0, "timeout": 10.0, "seed": 3})

    result = asyncio.run(level())
    assert result["sent"] > 100
    assert result["timeouts"] == result["failed"] == 0
    assert result["ok"] > 0 and result["rejected"] > 0
    assert result["ok"] + result["rejected"] == result["sent"]
    assert result["cold_n"] == 0  # the refused ones have no latency among the answered
    assert result["cpu_per_request"] > 0


def test_two_runs_of_a_level_pool_into_one(tmp_path: Path) -> None:
    """A level repeated at the edge is read over the requests of both runs."""

    async def invoke(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"ok")

    async def two() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        body = tmp_path / "body"
        body.write_bytes(b"x" * 100)
        async with _server(invoke) as url:
            spec = {"url": url, "body": str(body), "hot_name": "f", "rate": 200,
                    "seconds": 0.3, "records": True}
            a = await loadgen.run({**spec, "seed": 1})
            b = await loadgen.run({**spec, "seed": 2})
        return a, b, loadgen.pooled(a, b, spec)

    a, b, both = asyncio.run(two())
    assert both["sent"] == a["sent"] + b["sent"] and both["ok"] == a["ok"] + b["ok"]
    assert both["seconds"] == 0.6
    latencies = [lat for _, _, lat in a["records"] + b["records"]]
    assert both["p99"] == loadgen.quantile(latencies, 0.99)
    assert min(a["p50"], b["p50"]) <= both["p50"] <= max(a["p50"], b["p50"])


def test_the_reports_doctests() -> None:
    """The peak is read below the first failing level (report.peak's examples)."""
    failures, tried = doctest.testmod(report)
    assert tried > 0 and failures == 0


def _cold_loads(url: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    prefix = 'dandelion_function_loads_total{temperature="cold"} '
    return next((float(line[len(prefix):]) for line in text.splitlines()
                 if line.startswith(prefix)), 0.0)


@pytest.mark.parametrize("engine", [
    pytest.param("process", marks=pytest.mark.skipif(shutil.which("gcc") is None,
                                                     reason="needs gcc")),
    pytest.param("wasm", marks=pytest.mark.skipif(
        shutil.which("clang") is None or shutil.which("wasm-ld") is None
        or importlib.util.find_spec("wasmtime") is None,
        reason="needs clang, lld and wasmtime")),
])
def test_a_c_system_has_cold_copies_of_its_own(tmp_path: Path, engine: str) -> None:
    """run.py's C system on a real worker: 40 images of the C function, one per name the
    load generator sends to, each its own digest and each computing M·Mᵀ; a cold series
    loads a copy the worker pushed out on every request."""
    payload = run.bench_http.matrix()
    bodies = {"npy": str(tmp_path / "body.npy"), "msgpack": str(tmp_path / "body.msgpack")}
    Path(bodies["npy"]).write_bytes(payload)
    Path(bodies["msgpack"]).write_bytes(
        msgpack.packb({"inputs": {"m": [payload]}}, use_bin_type=True))
    images = run.native_copies(engine, tmp_path)
    assert len({image.digest for image in images}) == len(images) == 1 + len(run.COLD)
    system = run.start_native(engine, 1, str(tmp_path / "state"), bodies, (1.0, 0.95))
    try:
        assert system.cold and system.mixes == (1.0, 0.95)
        url = system.url.split("/v1/")[0]
        m = np.load(io.BytesIO(payload))
        for name in ("mmt0", run.COLD[0], run.COLD[-1]):
            req = urllib.request.Request(system.url.format(name=name),
                                         data=Path(bodies["msgpack"]).read_bytes(),
                                         headers=system.headers)
            answer = msgpack.unpackb(urllib.request.urlopen(req).read())
            (item,) = answer["outputs"]["result"]
            assert np.array_equal(np.load(io.BytesIO(item["value"])), m @ m.T), name
        before = _cold_loads(url)
        cold = run.loadgen(system, hot=0.0, sequential=8)
        assert cold["ok"] == 8, cold
        assert _cold_loads(url) == before + 8
    finally:
        system.stop()
