"""The baselines users would pick instead of Dandelion, each an HTTP server of its own.

    python baselines.py aiohttp PORT          # the function called in the server's process
    python baselines.py fresh PORT            # a fresh interpreter per request (cold start)
    python baselines.py ray PORT SERVE_PORT   # Ray tasks per request; Ray Serve (0: none)

Every one answers ``POST /invoke/{name}`` with the raw ``.npy`` bytes of a matrix M by the
``.npy`` bytes of M·Mᵀ.  Only Ray tasks know cold functions: a name other than ``mmt0``
defines a new remote function for that request (Ray must export and load its code); the
others ignore the name.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import sys
from typing import Any, Callable

import numpy as np
from aiohttp import web

CHILD = ("import io, sys\nimport numpy as np\n"
         "m = np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False)\n"
         "b = io.BytesIO()\nnp.save(b, m @ m.T, allow_pickle=False)\n"
         "sys.stdout.buffer.write(b.getvalue())\n")


def mmt(m: np.ndarray) -> np.ndarray:
    """The workload: M·Mᵀ."""
    return m @ m.T


def decode(body: bytes) -> np.ndarray:
    """An array from ``.npy`` bytes."""
    return np.load(io.BytesIO(body), allow_pickle=False)


def encode(a: np.ndarray) -> bytes:
    """``.npy`` bytes of an array."""
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def listen(handler: Callable[[web.Request], Any], port: int) -> None:
    """Serve ``handler`` at POST /invoke/{name} until SIGTERM."""
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/invoke/{name}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def aiohttp_server(port: int) -> None:
    """The function called in process, on the event loop: no isolation, no queue."""

    async def invoke(request: web.Request) -> web.Response:
        return web.Response(body=encode(mmt(decode(await request.read()))))

    listen(invoke, port)


def fresh_server(port: int) -> None:
    """A fresh interpreter per request that imports numpy and runs the function; as many at
    once as there are CPUs (the others wait), like a container runtime's concurrency."""
    limit = asyncio.Semaphore(os.cpu_count() or 1)

    async def invoke(request: web.Request) -> web.Response:
        body = await request.read()
        async with limit:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CHILD, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate(body)
        return web.Response(body=out, status=200 if proc.returncode == 0 else 500)

    listen(invoke, port)


def ray_servers(port: int, serve_port: int) -> None:
    """On one local Ray cluster: one Ray task per request at ``port`` (a cold name defines a
    new remote function), and Ray Serve at ``serve_port`` unless it is 0."""
    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=200 << 20,
             include_dashboard=False, logging_level="ERROR")
    if serve_port:
        start_ray_serve(serve_port)
    hot = ray.remote(mmt)
    counter = itertools.count()

    def fresh_function() -> Any:
        serial = next(counter)

        def cold_mmt(m: np.ndarray) -> np.ndarray:
            assert serial >= 0  # a distinct closure: Ray exports new code for each
            return m @ m.T

        return ray.remote(cold_mmt)

    async def invoke(request: web.Request) -> web.Response:
        m = decode(await request.read())
        fn = hot if request.match_info["name"] == "mmt0" else fresh_function()
        return web.Response(body=encode(await fn.remote(m)))

    try:
        listen(invoke, port)
    finally:
        if serve_port:
            from ray import serve

            serve.shutdown()
        ray.shutdown()


def start_ray_serve(port: int) -> None:
    """Ray Serve with one deployment of the function (one replica, Serve's defaults
    otherwise), its HTTP proxy at ``port``."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(num_replicas=1)
    class MMT:
        async def __call__(self, request: Request) -> Response:
            return Response(encode(mmt(decode(await request.body()))))

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(MMT.bind(), route_prefix="/")  # type: ignore[attr-defined]


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "aiohttp":
        aiohttp_server(port)
    elif kind == "fresh":
        fresh_server(port)
    elif kind == "ray":
        ray_servers(port, int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown baseline {kind!r}")


if __name__ == "__main__":
    main()
