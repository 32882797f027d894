"""The HTTP frontend of a worker: an aiohttp application over a :class:`Service`.

Every answer that is not a success is a JSON document ``{"error": {"type", "message",
"hint"?, …}}`` with a 4xx status (a 5xx only for a bug).  An invocation whose code is in
memory is started from the event loop and resolved by the engine worker that finishes it, so
no thread waits for it; other work (registration, invocations that load code from disk) runs
on a thread pool, so it never blocks the event loop, health checks or other tenants.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import logging
import os
import re
import sys
import time
from typing import Any, Awaitable, Callable, Mapping, TypeVar

from aiohttp import web
from aiohttp.helpers import parse_content_type
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError

import dandelion
from dandelion.runtime.logs import Collector
from dandelion.server import wire
from dandelion.server.admission import Admission, Overloaded
from dandelion.server.config import ServerConfig
from dandelion.server.idle_gc import IdleGC
from dandelion.server.jobs import JobRecord
from dandelion.server.openapi import openapi_document
from dandelion.server.protocol import TENANT, Answer, Answering, refusal_message
from dandelion.server.service import (
    SWEEP_EVERY,
    NotFound,
    RequestProblem,
    Service,
    Unauthorized,
    error_body,
    status_of,
)
from dandelion.server.tenants import Tenant

log = logging.getLogger("dandelion.server")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Headers = Mapping[str, str]
#: The longest a ``GET /v1/jobs/{id}?wait=`` waits, in seconds.
MAX_WAIT = 60.0
#: The path of an invocation, as :meth:`Frontend.route` takes it: no percent-escapes.
_INVOKE = re.compile(r"/v1/(function|composition)s/([^/%?{}]+)/invoke(?:\?|$)")


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    """``await awaitable``, raising :class:`asyncio.TimeoutError` past ``seconds``: in the
    awaiting task itself where Python has ``asyncio.timeout`` (3.11; ``asyncio.wait_for``
    runs it as a task of its own, a few loop turns and ~15 µs more on every request)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=wire.dumps(data, binary=False), status=status,
                        content_type="application/json")


class Frontend:
    """The routes of ``dandelion serve``.

    Args:
        config: the server configuration.
        service: the worker behind it (default: a new one from ``config``).
    """

    def __init__(self, config: ServerConfig, service: Service | None = None) -> None:
        self.config = config
        self.service = service or Service(config)
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.invocations, thread_name_prefix="dandelion-serve")
        self._tokens = [(t.encode(), tenant) for t, tenant in config.tokens.items()]
        self._sweeper: asyncio.Task[None] | None = None
        #: invocations and jobs admitted and not finished (used on the loop only)
        self.admission = Admission(config.workers or os.cpu_count() or 1,
                                   config.max_waiting, config.max_wait)
        metrics = self.service.metrics
        metrics.admitted.set_function(lambda: self.admission.admitted)
        metrics.expected_wait.set_function(self.admission.expected_wait)
        #: young garbage collected between invocations (from the start, on the loop)
        self.idle_gc: IdleGC | None = None

    # -- the application --------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              middlewares=[self._errors])
        r = app.router
        # every route answers an Expect header alike (:meth:`_expect`)
        get, post, delete = (functools.partial(add, expect_handler=self._expect)
                             for add in (r.add_get, r.add_post, r.add_delete))
        get("/health", self.health)
        get("/metrics", self.metrics)
        get("/openapi.json", self.openapi)
        for kind in ("function", "composition"):
            base = f"/v1/{kind}s"
            get(base, functools.partial(self.list_, kind))
            post(base, functools.partial(self.register, kind))
            get(base + "/{name}", functools.partial(self.describe, kind))
            delete(base + "/{name}", functools.partial(self.delete, kind))
            post(base + "/{name}/invoke", functools.partial(self.invoke, kind))
            post(base + "/{name}/jobs", functools.partial(self.submit, kind))
        get("/v1/jobs", self.jobs)
        get("/v1/jobs/{id}", self.job)
        delete("/v1/jobs/{id}", self.forget_job)
        app.on_startup.append(self._start_sweeping)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _expect(self, request: web.Request) -> None:
        """A request's ``Expect`` header, before its handler runs: ``100-continue`` is
        answered as aiohttp does; any other expectation is refused with a JSON 417 (aiohttp's
        own refusal is plain text, and its expect handlers run outside the middleware)."""
        expect = request.headers.get("Expect", "")
        if request.version < (1, 1):
            return
        if expect.lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
            return
        self._counted(417)
        raise web.HTTPExpectationFailed(
            text=wire.dumps(error_body(RequestProblem(
                f"the server meets no expectation but 100-continue, not {expect[:100]!r}",
                status=417, hint="leave the Expect header out")), binary=False).decode(),
            content_type="application/json")

    async def _start_sweeping(self, _app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep_forever())
        self.idle_gc = IdleGC(loop, self.admission)

    async def _sweep_forever(self) -> None:
        """Every :data:`~dandelion.server.service.SWEEP_EVERY` seconds, forget what the
        worker no longer needs (:meth:`Service.sweep`)."""
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                await self._work(self.service.sweep)
            except Exception:  # never stop sweeping; a failed sweep is retried next time
                log.exception("sweeping jobs and code failed")

    async def _shutdown(self, _app: web.Application) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.idle_gc is not None:
            self.idle_gc.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self.service.close)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:  # routing: unknown path (404), wrong method (405)
            kind = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}.get(
                e.status, type(e).__name__)
            message = {404: f"no endpoint {request.path}",
                       405: f"{request.method} is not allowed on {request.path}"}.get(
                e.status, e.reason)
            response = _json({"error": {"type": kind, "message": message,
                                        "hint": "see GET /openapi.json"}}, e.status)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            failed = self._failure(e, request.method, request.path)
            response = web.Response(body=failed.data(), status=failed.status,
                                    content_type=failed.content_type,
                                    headers=dict(failed.headers))
            if failed.close:
                response.force_close()
        self._counted(response.status)
        return response

    def _failure(self, e: Exception, method: str, path: str) -> Answer:
        """The JSON error answer of a request that raised ``e``."""
        status = status_of(e)
        if status == 500:  # a bug (an overloaded worker's 503 is none, and frequent)
            log.exception("internal error on %s %s", method, path)
        headers = (("Retry-After", str(e.retry_after)),) if isinstance(e, Overloaded) else ()
        return Answer(status, wire.dumps(error_body(e), binary=False), "application/json",
                      headers, close=isinstance(e, RequestProblem))

    def _counted(self, status: int) -> None:
        metrics = self.service.metrics
        metrics.labelled(metrics.requests, str(status)).inc()

    # -- plumbing ---------------------------------------------------------------------------

    def _tenant(self, request: web.Request) -> Tenant:
        name, tenant = self._tenant_of(request.headers)
        request[TENANT] = name
        return tenant

    def _tenant_of(self, headers: Headers) -> tuple[str, Tenant]:
        """The tenant of a request with these headers (its token), and its name.

        Raises:
            Unauthorized: no token, or not a known one.
        """
        if self.config.open:
            return "default", self.service.tenant("default")
        header = headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API token",
                               hint="send the header 'Authorization: Bearer <token>'")
        given = token.strip().encode("utf-8", "replace")
        found = None
        for known, tenant in self._tokens:  # compare with all, in constant time each
            if hmac.compare_digest(given, known):
                found = tenant
        if found is None:
            raise Unauthorized("invalid API token")
        return found, self.service.tenant(found)

    async def _read(self, content: StreamReader) -> bytes:
        """The whole body: the one chunk it arrived in, or its chunks joined (one copy;
        ``request.read()`` copies each chunk into a ``bytearray`` and that into
        ``bytes``).

        Raises:
            HTTPRequestEntityTooLarge: it is longer than ``max_body_bytes``.
        """
        limit = self.config.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while chunk := await content.readany():
            size += len(chunk)
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            chunks.append(chunk)
        return bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)

    def _whole(self, content: StreamReader) -> bytes:
        """:meth:`_read` of a body that has arrived whole: its chunks at once, without a
        coroutine or a timer (joined by aiohttp if there are several: one copy).

        Raises:
            HTTPRequestEntityTooLarge: it is longer than ``max_body_bytes``.
        """
        data = content.read_nowait()
        limit = self.config.max_body_bytes
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
        return data if type(data) is bytes else bytes(data)

    async def _body(self, content: StreamReader, content_type: str) -> dict[str, Any]:
        """The body, an object, decoded as ``content_type`` says (:func:`wire.loads`)."""
        try:  # a body that has arrived whole is read at once, without a timer
            raw = self._whole(content) if content.is_eof() else \
                await _within(self._read(content), self.config.body_timeout)
        except asyncio.TimeoutError:
            raise RequestProblem(f"the body did not arrive within {self.config.body_timeout:g} "
                                 "s", status=408) from None
        except web.HTTPRequestEntityTooLarge:
            raise RequestProblem(f"the body is larger than {self.config.max_body_bytes} bytes",
                                 status=413, hint="send less data per request") from None
        except RequestPayloadError as e:  # e.g. "gzip" in Content-Encoding, plain bytes sent
            raise RequestProblem(refusal_message(e), status=400,
                                 hint="send the body uncompressed, or compressed with gzip "
                                      "or deflate (and say so in Content-Encoding)") from None
        data = wire.loads(raw, content_type)
        if not isinstance(data, dict):
            raise wire.WireError("the body must be an object (a map)")
        return data

    def _binary(self, request: web.Request) -> bool:
        return _binary(request.headers, request.content_type)

    def _respond(self, data: Any, binary: bool, status: int = 200) -> web.Response:
        if binary:
            return web.Response(body=wire.dumps(data, binary=True), status=status,
                                content_type=wire.MSGPACK)
        return _json(data, status)

    def _admit(self) -> None:
        """Admit an invocation, or refuse it if the worker has no room for it
        (:mod:`.admission`): from the request's head, before its body is read and decoded
        (refusing costs the loop next to nothing), and counted from then on, so that a
        burst whose bodies are still arriving cannot overshoot the bound.  Each admission
        ends with one :meth:`_release`."""
        now = time.monotonic()
        refusal = self.admission.refusal(now)
        if refusal is not None:
            self.service.metrics.refused.labels(refusal.reason).inc()
            raise refusal
        self.admission.enter(now)

    def _release(self, ran: bool) -> None:
        """An admitted invocation is done; ``ran``: it got as far as the engines (else its
        end says nothing about how fast they complete).  The young garbage is collected
        once none is admitted (:mod:`.idle_gc`)."""
        self.admission.leave(time.monotonic(), ran)
        if self.idle_gc is not None:
            self.idle_gc.ended()

    async def _invocation(self, tenant: Tenant, kind: str, name: str, inputs: Any,
                          printed: Collector) -> Any:
        """Run an admitted invocation, started from the loop (no thread waits for it); a
        cold invocation loads its code from disk on the executor first, never on the loop.
        With a result cache on disk or in Redis the whole invocation runs on the
        executor."""
        args = (tenant, kind, name, inputs, printed)
        done = await self.service.invoke_here(*args, executor=self.executor)
        if done is None:
            done = await self._work(self.service.invoke, *args)
        return done

    async def _work(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    # -- endpoints --------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        backend = self.service.runtime.backend
        return _json({"status": "ok", "version": dandelion.__version__,
                      "backend": backend.name, "engine": backend.engine_name})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.service.metrics.render(),
                            headers={"Content-Type": self.service.metrics.content_type})

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def list_(self, kind: str, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        s = self.service
        if kind == "function":
            items = [s.describe_function(r) for r in tenant.functions.values()]
        else:
            items = [{k: v for k, v in s.describe_composition(r).items() if k != "ir"}
                     for r in tenant.compositions.values()]
        return _json({f"{kind}s": sorted(items, key=lambda d: d["name"])})

    async def register(self, kind: str, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        body = await self._body(request.content, request.content_type)
        allowed = (_PYTHON_FIELDS | _NATIVE_FIELDS if kind == "function"
                   else {"ir", "source", "notation", "filename"})
        unknown = sorted(set(map(str, body)) - allowed)
        if unknown:
            raise wire.WireError(f"unknown field(s): {', '.join(unknown)}",
                                 hint=f"allowed: {', '.join(sorted(allowed))}")
        _check_types(body, {"source": str, "module": str, "names": list, "kind": str,
                            "notation": str, "filename": str, "name": str, "params": list,
                            "results": list, "engine_type": str})
        if kind == "function" and body.get("kind") in ("native", "wasm"):
            _only(body, _NATIVE_FIELDS, body["kind"])
            missing = [f for f in ("name", "image", "params", "results") if f not in body]
            if missing:
                raise wire.WireError(f"a native function needs {', '.join(missing)}",
                                     hint="send name, image (the ELF), params and results, "
                                          "e.g. \"params\": [\"m: item[ndarray]\"]")
            image = wire.binary_field(body["image"], "image")
            engine_type = body.get("engine_type") or (
                "wasm" if body["kind"] == "wasm" else "process")
            done = await self._work(self.service.register_native, tenant, name=body["name"],
                                    image=image, params=body["params"],
                                    results=body["results"], engine_type=engine_type)
        elif kind == "function":
            if body.get("kind", "python") == "python":
                _only(body, _PYTHON_FIELDS, "python")
            names = body.get("names")
            if names is not None and not all(isinstance(n, str) for n in names):
                raise wire.WireError("'names' must be a list of strings")
            pickle = (wire.binary_field(body["pickle"], "pickle") if "pickle" in body
                      else None)
            done = await self._work(self.service.register_functions, tenant,
                                    source=body.get("source"), module=body.get("module"),
                                    pickle=pickle, names=names,
                                    kind=body.get("kind", "python"),
                                    filename=body.get("filename"))
        else:
            done = await self._work(self.service.register_compositions, tenant,
                                    ir=body.get("ir"), source=body.get("source"),
                                    notation=body.get("notation"),
                                    filename=body.get("filename"))
        return _json({"registered": done}, 201)

    async def describe(self, kind: str, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        name = request.match_info["name"]
        s = self.service
        if kind == "function":
            return _json(s.describe_function(s.function(tenant, name)))
        return _json(s.describe_composition(s.composition(tenant, name)))

    async def delete(self, kind: str, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        self.service.remove(tenant, kind, request.match_info["name"])
        return _json({"deleted": request.match_info["name"]})

    async def _inputs(self, content: StreamReader, content_type: str) -> Any:
        body = await self._body(content, content_type)
        unknown = sorted(set(map(str, body)) - {"inputs"})
        if unknown:
            raise wire.WireError(f"unknown field(s): {', '.join(unknown)}",
                                 hint="the body is {\"inputs\": {name: [items…]}}")
        return body.get("inputs", {})

    async def invoke(self, kind: str, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        answer = await self._invoke(tenant, kind, request.match_info["name"],
                                    request.headers, request.content, request.content_type,
                                    request.query.get("logs") if request.query_string else None)
        return web.Response(body=answer.data(), content_type=answer.content_type,
                            headers=dict(answer.headers))

    async def _invoke(self, tenant: Tenant, kind: str, name: str, headers: Headers,
                      content: StreamReader, content_type: str, logs: str | None) -> Answer:
        """Invoke ``name`` for ``tenant`` on the body in ``content``: the answer of
        ``POST /v1/{kind}s/{name}/invoke`` (``logs``: its query's ``logs``) on either
        path to it, aiohttp's application or the connection's own (:meth:`route`)."""
        self._admit()  # before reading the body: an overloaded worker refuses at once
        ran = False
        try:
            inputs = await self._inputs(content, content_type)
            printed = Collector()
            ran = True
            outputs, decls, cached = await self._invocation(tenant, kind, name, inputs,
                                                            printed)
        finally:
            self._release(ran)
        more = {"logs": printed.to_data()} if logs in ("1", "true") else {}
        extra = (("X-Dandelion-Cache", "hit" if cached else "miss"),)
        if _binary(headers, content_type):  # packed at once, each array's data copied once
            return Answer(200, wire.packed_outputs(outputs, decls, more), wire.MSGPACK, extra)
        return Answer(200, wire.dumps({**self.service.encode_outputs(outputs, decls, False),
                                       **more}, binary=False), "application/json", extra)

    def route(self, message: RawRequestMessage) -> Answering | None:
        """The handler of a request that its connection answers itself
        (:class:`~dandelion.server.protocol.Connection`, below aiohttp's ``web`` layer):
        an invocation, ``POST /v1/functions/{name}/invoke`` or a composition's, of a plain
        HTTP/1.1 request (no ``Expect``, no upgrade, no percent-escapes in its path);
        ``None`` for any other request, which aiohttp's application answers."""
        if message.method != "POST" or message.version != (1, 1) or message.upgrade:
            return None
        found = _INVOKE.match(message.path)
        if found is None or "Expect" in message.headers:
            return None
        return functools.partial(self._answer_invoke, found[1], found[2])

    async def _answer_invoke(self, kind: str, name: str, message: RawRequestMessage,
                             content: StreamReader) -> Answer:
        headers = message.headers
        tenant = "-"
        try:
            tenant, found = self._tenant_of(headers)
            raw_type = headers.get("Content-Type")
            content_type = "application/octet-stream" if raw_type is None else \
                parse_content_type(raw_type)[0]
            answer = await self._invoke(found, kind, name, headers, content, content_type,
                                        message.url.query.get("logs")
                                        if "?" in message.path else None)
        except Exception as e:
            answer = self._failure(e, message.method, message.path.partition("?")[0])
        self._counted(answer.status)
        return answer._replace(tenant=tenant)

    async def submit(self, kind: str, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        name = request.match_info["name"]
        if kind == "function":
            self.service.function(tenant, name)
        else:
            self.service.composition(tenant, name)
        self._admit()
        try:
            inputs = await self._inputs(request.content, request.content_type)
            job = tenant.jobs.add(kind, name)
        except BaseException:
            self._release(False)
            raise
        # admitted until the job ends (_run_job releases it)
        asyncio.get_running_loop().create_task(self._run_job(tenant, job, inputs))
        return self._respond({"id": job.id, "status": job.status}, self._binary(request), 202)

    async def _run_job(self, tenant: Tenant, job: JobRecord, inputs: Any) -> None:
        try:
            outputs, decls, _ = await self._invocation(tenant, job.kind, job.target, inputs,
                                                       job.logs)
        except Exception as e:
            job.finish(error=e)
        else:
            job.finish(result=(outputs, decls))
        finally:
            self._release(True)

    def _job(self, request: web.Request) -> tuple[Tenant, JobRecord]:
        tenant = self._tenant(request)
        job = tenant.jobs.get(request.match_info["id"])
        if job is None:
            raise NotFound(f"no job {request.match_info['id']!r}",
                           hint=f"a job is kept until {self.config.job_ttl:g} s after it "
                                f"finished, and at most {self.config.max_jobs} per tenant")
        return tenant, job

    async def jobs(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        tenant.jobs.expire()
        return _json({"jobs": [{"id": j.id, "status": j.status, "target": j.target,
                                "kind": j.kind, "created": j.created,
                                "finished": j.finished} for j in tenant.jobs.list()]})

    async def job(self, request: web.Request) -> web.Response:
        _, job = self._job(request)
        raw = request.query.get("wait", "0")
        try:
            wait = float(raw)
            if not wait >= 0:
                raise ValueError
        except ValueError:
            raise wire.WireError(f"wait={raw!r} is not a number of seconds") from None
        await job.wait(min(wait, MAX_WAIT))
        binary = self._binary(request)
        doc: dict[str, Any] = {"id": job.id, "status": job.status, "kind": job.kind,
                               "target": job.target, "created": job.created,
                               "finished": job.finished}
        if job.status == "succeeded":
            try:
                outputs, decls = job.result
                doc.update(self.service.encode_outputs(outputs, decls, binary))
            except Exception as e:
                doc.update(status="failed", **error_body(e))
        elif job.status == "failed":
            assert job.error is not None
            doc.update(error_body(job.error))
            doc["error"]["status"] = status_of(job.error)
        if job.logs.logs or job.logs.dropped:
            doc["logs"] = job.logs.to_data()
        return self._respond(doc, binary)

    async def forget_job(self, request: web.Request) -> web.Response:
        tenant, job = self._job(request)
        tenant.jobs.forget(job.id)
        return _json({"deleted": job.id})


_PYTHON_FIELDS = frozenset({"source", "module", "pickle", "names", "kind", "filename"})
_NATIVE_FIELDS = frozenset({"kind", "name", "image", "params", "results", "engine_type"})


def _binary(headers: Headers, content_type: str) -> bool:
    """Whether the answer to a request is msgpack: it accepts msgpack, or sent msgpack and
    does not ask for JSON."""
    accept = headers.get("Accept", "")
    if wire.is_msgpack(accept):
        return True
    return wire.is_msgpack(content_type) and "json" not in accept


def _only(body: dict[str, Any], fields: frozenset[str], kind: str) -> None:
    """Refuse fields of the other kind of function registration."""
    stray = sorted(set(body) - fields)
    if stray:
        raise wire.WireError(f"a '{kind}' function registration takes no "
                             f"{', '.join(stray)}", hint=f"it takes {', '.join(sorted(fields))}")


def _check_types(body: dict[str, Any], types: dict[str, type]) -> None:
    for key, tp in types.items():
        if key in body and body[key] is not None and not isinstance(body[key], tp):
            raise wire.WireError(f"'{key}' must be a {tp.__name__}, got "
                                 f"{type(body[key]).__name__}")
