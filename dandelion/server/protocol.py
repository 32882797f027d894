"""The HTTP connection of ``dandelion serve``: what happens before and after the application.

aiohttp parses each request before the application sees it, and answers what it cannot
parse itself (a header or URL past the size limit, an unknown ``Content-Encoding``, both
``Transfer-Encoding`` and ``Content-Length`` …) with a plain-text 400.  A
:class:`Connection` answers those with the same JSON error document as every other
refusal, counts them in ``/metrics``, and bounds how long a client may take to send its
request line and headers (aiohttp bounds neither; the application bounds the body).
:class:`AccessLog` writes one line per answered request.

A request that its connection's :attr:`Connections.route` takes (the frontend's
invocations, :meth:`Frontend.route <dandelion.server.app.Frontend.route>`) is answered by
the connection itself, below aiohttp's ``web`` layer: no request or response object, no
router, middleware or task of aiohttp's, the answer's bytes written at once
(:class:`Answer`).  Only a request that arrives alone on an idle HTTP/1.1 connection is
taken (not one pipelined behind another, not an ``Expect`` or upgrade); aiohttp's loop of
the connection waits meanwhile, and serves what arrives after it in order.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import re
import time
from typing import Any, Awaitable, Callable, NamedTuple

from aiohttp import abc, web, web_protocol
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_request import BaseRequest

from dandelion.server import wire
from dandelion.server.metrics import Metrics

log = logging.getLogger("dandelion.server")
#: The tenant a request was made for, once its token is checked (for the access log).
TENANT = web.RequestKey("tenant", str)

#: Hints for a client, by the kind of aiohttp's refusal.
_HINTS = {
    "LineTooLong": "the request line and each header are limited to 8190 bytes; send large "
                   "data in the body",
    "ContentEncodingError": "send the body uncompressed, or compressed with gzip or deflate "
                            "(and say so in Content-Encoding)",
    "HeaderTimeout": "send the request line and headers at once",
}


class HeaderTimeout(HttpProcessingError):
    """The request line and headers did not arrive in time (answered with 408)."""

    code = 408


def _error_body(kind: str, message: str, hint: str | None = None) -> bytes:
    error = {"type": kind, "message": message}
    if hint:
        error["hint"] = hint
    return wire.dumps({"error": error}, binary=False)


def error_response(status: int, kind: str, message: str, hint: str | None = None
                   ) -> web.Response:
    """A JSON error document ``{"error": {"type", "message", "hint"?}}`` answer."""
    return web.Response(body=_error_body(kind, message, hint), status=status,
                        content_type="application/json")


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_dated: list[Any] = [None, ""]


def _date(now: float) -> str:
    """The ``Date`` header's value, made once per second of the loop's clock."""
    second = int(now)
    if _dated[0] != second:
        _dated[0], _dated[1] = second, email.utils.formatdate(usegmt=True)
    return str(_dated[1])


def refusal_message(exc: BaseException | None, fallback: str = "malformed request") -> str:
    """What aiohttp found wrong with a request, on one line and without the (possibly huge)
    bytes it quotes."""
    if isinstance(exc, web_protocol.RequestPayloadError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, LineTooLong):
        return "the request line or a header is longer than the limit of 8190 bytes"
    text = str(getattr(exc, "message", None) or exc or fallback)
    if isinstance(exc, ContentEncodingError):
        encoding = re.search(r"content-encoding: (\w+)", text)
        name = encoding.group(1) if encoding else text.strip()
        if name in ("gzip", "deflate", "zstd"):
            return f"the body is not valid {name} data, as its Content-Encoding says"
        return f"Content-Encoding {text.split('(')[-1].split(')')[0] or name} is not " \
            "supported"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else fallback
    return first[:200].rstrip(".:") or fallback


#: aiohttp's own parts of a connection that answering a request below its ``web`` layer
#: uses: private to aiohttp, so another version may lack them, and then its application
#: answers every request (:data:`ROUTABLE`)
_AIOHTTP_PARTS = ("_waiter", "_messages", "_request_count", "_parser", "_loop", "_manager",
                  "_force_close", "_close", "_request_in_progress", "_handler_waiter",
                  "_keepalive_handle", "_next_keepalive_close_time", "_keepalive_timeout",
                  "_process_keepalive", "_lingering_time", "_logging_enabled")

#: Whether the installed aiohttp's connections have every part that :class:`Connection`
#: uses to answer a request itself (``False``: :class:`Runner` routes none).
ROUTABLE = all(hasattr(web_protocol.RequestHandler, name) for name in _AIOHTTP_PARTS)


class Answer(NamedTuple):
    """What a handler of :attr:`Connections.route` answers: the status, the body (or its
    parts, joined with the head as they are written) and its content type, more headers,
    whether the connection closes after it, and the tenant the request was made for (for
    the access log; ``"-"``: none)."""

    status: int
    body: bytes | list[Any]
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    tenant: str = "-"

    @property
    def length(self) -> int:
        """The body's length in bytes."""
        body = self.body
        return len(body) if isinstance(body, bytes) else \
            sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in body)

    def data(self) -> bytes:
        """The body, joined."""
        return self.body if isinstance(self.body, bytes) else b"".join(self.body)


#: A handler of :attr:`Connections.route`: the request's head and its body (a stream), answered.
Answering = Callable[[RawRequestMessage, StreamReader], Awaitable[Answer]]


class Connection(web_protocol.RequestHandler):
    """One client connection: aiohttp's, with JSON refusals and a bound on slow headers, and
    the requests its manager's ``route`` takes answered below aiohttp's ``web`` layer.

    The owning :class:`Connections` gives it ``metrics``, ``header_timeout`` and ``route``.
    """

    def __init__(self, manager: Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.metrics = manager.metrics
        self.header_timeout = manager.header_timeout
        self.route = manager.route
        self._header_deadline: asyncio.TimerHandle | None = None
        self._timed_out = False
        #: the request this connection answers itself, while it does
        self._answering: asyncio.Task[None] | None = None

    # -- bounding the time to send a request's head ---------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._timed_out:
            return
        # a request's head starts arriving: its first bytes arm the deadline, a parsed
        # message (the head is complete) disarms it; a head that arrives whole in its first
        # bytes (nearly every request) arms none: parsed first, the deadline is armed only
        # if no message came of them (armed, then cancelled at once, it cost every request
        # a timer on the loop, its cancellation and its removal)
        starts = self._header_deadline is None and not self._messages and bool(data)
        # aiohttp's loop of an idle connection (start) waits for a message on its waiter:
        # kept from aiohttp's parsing while the message may be one to answer here (while
        # one is answered here, the waiter is aside: what arrives is queued for after it)
        waiter = self._waiter
        hold = waiter is not None and self.route is not None and not self._messages
        if hold:
            self._waiter = None
        parsed = self._request_count
        try:
            super().data_received(data)
        finally:
            if hold:
                self._waiter = waiter
        parsed = self._request_count - parsed
        if parsed or self._messages:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
        elif starts and self._header_deadline is None and not self._timed_out:
            self._header_deadline = self._loop.call_later(self.header_timeout,
                                                          self._head_too_slow)
        if hold and parsed:
            self._take()

    def _head_too_slow(self) -> None:
        self._header_deadline = None
        if self._messages or self._force_close:
            return
        self._timed_out = True  # whatever arrives from now on is not parsed
        message = (f"the request line and headers did not arrive within "
                   f"{self.header_timeout:g} s")
        error = HeaderTimeout(message=message)
        self._messages.append((web_protocol._ErrInfo(status=408, exc=error, message=message),
                               EMPTY_PAYLOAD))
        self._request_count += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        if self._answering is not None:  # the client left: stop what it asked for
            self._answering.cancel()
        super().connection_lost(exc)

    # -- requests answered by the connection itself ----------------------------------------

    def _take(self) -> None:
        """A message arrived on an idle connection whose loop waits: answer it here if it
        is one request that ``route`` takes, else wake aiohttp's loop for it."""
        assert self.route is not None
        message, payload = self._messages[0]
        handler = None
        if len(self._messages) == 1 and not self._force_close and not self._close and \
                isinstance(message, RawRequestMessage):
            handler = self.route(message)
        if handler is None or not isinstance(message, RawRequestMessage):
            self._wake()
            return
        self._messages.popleft()
        if self._parser is not None:
            self._parser.message_consumed()
        # aiohttp's loop waits on: its waiter is put aside meanwhile, so that nothing that
        # arrives wakes it and its keep-alive timer finds the connection busy, not idle
        waiter, self._waiter = self._waiter, None
        self._request_in_progress = True
        self._answering = self._loop.create_task(
            self._answer(handler, message, payload, waiter))

    def _wake(self) -> None:
        waiter = self._waiter
        if self._messages and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _answer(self, handler: Answering, message: RawRequestMessage,
                      payload: StreamReader, waiter: asyncio.Future[None] | None) -> None:
        loop = self._loop
        began = loop.time()
        assert self._manager is not None
        self._manager.requests_count += 1
        try:
            try:
                answer = await handler(message, payload)
            except Exception as e:  # a bug: the handler answers every error it expects
                log.error("internal error answering %s %s", message.method, message.path,
                          exc_info=e)
                answer = Answer(500, _error_body("InternalError", "the server failed to "
                                                 "answer this request"),
                                "application/json", close=True)
                self.metrics.requests.labels("500").inc()
            self._waiter = waiter  # (a close cancels it: aiohttp's loop ends)
            self._send(answer, message.should_close)
            if self.access_logger is not None and self._logging_enabled and \
                    isinstance(self.access_logger, AccessLog):
                self.access_logger.write(answer.tenant, message.method, message.path,
                                         answer.status, answer.length, loop.time() - began)
            if not payload.is_eof() and not self._force_close:
                await self._linger(payload)  # the rest of a body refused unread
        except asyncio.CancelledError:  # the connection was lost: nobody to answer
            return
        finally:
            self._waiter = waiter
            self._answering = None
            self._request_in_progress = False
            if self._handler_waiter is not None:
                self._handler_waiter.set_result(None)
        if self._force_close or self._close:  # (closed meanwhile: aiohttp's loop ends)
            if waiter is not None:
                waiter.cancel()
            return
        # idle again, as after aiohttp's loop answers: its keep-alive timer (re-armed if it
        # fired meanwhile) closes the connection once idle for the keep-alive time
        close_time = loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None:
            self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)
        self._wake()  # what arrived meanwhile, in order

    def _send(self, answer: Answer, close: bool) -> None:
        """Write ``answer`` at once, its head and body in one write, and close the connection
        after it if it or the request says so."""
        close = close or answer.close
        head = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, '')}\r\n"
                f"Content-Type: {answer.content_type}\r\n"
                f"Content-Length: {answer.length}\r\n"
                f"Date: {_date(self._loop.time())}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in answer.headers)
        if close:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        if self.transport is not None:  # (the body's parts joined with the head: one copy)
            start, body = "".join(head).encode("latin-1"), answer.body
            self.transport.write(b"".join((start, body) if isinstance(body, bytes) else
                                          (start, *body)))
        if close:
            self.force_close()  # (the transport sends what it holds, then closes)

    async def _linger(self, payload: StreamReader) -> None:
        """Read and drop the rest of a request's body for up to aiohttp's lingering time,
        as aiohttp's loop does (closing with unread data could make the client lose the
        answer); close the connection if it does not end by then."""
        end = self._loop.time() + self._lingering_time
        try:
            while not payload.is_eof() and self._loop.time() < end:
                await asyncio.wait_for(payload.readany(), end - self._loop.time())
        except (asyncio.TimeoutError, web_protocol.RequestPayloadError):
            pass
        if not payload.is_eof():
            self.force_close()

    # -- what the parser refused -----------------------------------------------------------

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # a body that fails to decode was answered (400) by the application already;
        # aiohttp meets the error again while draining the body, which is no bug
        if isinstance(kwargs.get("exc_info"), web_protocol.RequestPayloadError):
            self.log_debug(*args, **kwargs)
            return
        super().log_exception(*args, **kwargs)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # the answer has begun: nothing more to say
            raise ConnectionError("the answer was sent already; cannot send an error")
        if status >= 500:  # a bug in aiohttp or in the application: keep aiohttp's log
            log.error("internal error answering %s", request.remote, exc_info=exc)
            response = error_response(status, "InternalError", "the server failed to "
                                      "answer this request")
        else:
            log.debug("refused a request from %s: %s", request.remote, exc)
            # the type of every refusal before the application (as its 408 and 413)
            response = error_response(
                status, "RequestProblem", refusal_message(exc, message or "malformed request"),
                _HINTS.get(type(exc).__name__, "send a well-formed HTTP/1.1 request"))
        response.force_close()
        self.metrics.requests.labels(str(status)).inc()
        return response


class Connections(web.Server):
    """aiohttp's server of an application, making :class:`Connection` s.

    Attributes:
        metrics: where refused requests are counted.
        header_timeout: seconds a client has for its request line and headers.
    """

    metrics: Metrics
    header_timeout: float
    #: the requests answered by their connection itself: a head -> its handler, or
    #: ``None`` for aiohttp's application to answer it
    route: Callable[[RawRequestMessage], Answering | None] | None = None

    def __call__(self) -> Connection:
        return Connection(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections are :class:`Connection` s.

    Args:
        app: the application.
        metrics: where refused requests are counted.
        header_timeout: seconds a client has for its request line and headers.
        route: the requests answered by their connection (:attr:`Connections.route`);
            none where the installed aiohttp lacks a part that takes (:data:`ROUTABLE`).
        **kwargs: for :class:`aiohttp.web.AppRunner`.
    """

    def __init__(self, app: web.Application, *, metrics: Metrics, header_timeout: float,
                 route: Callable[[RawRequestMessage], Answering | None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._metrics = metrics
        self._header_timeout = header_timeout
        self._route = route

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # the application's own server, made by aiohttp, with connections of our kind
        server.__class__ = Connections
        assert isinstance(server, Connections)
        server.metrics = self._metrics
        server.header_timeout = self._header_timeout
        server.route = self._route if ROUTABLE else None
        return server


class AccessLog(abc.AbstractAccessLogger):
    """One line per answered request, on the ``dandelion.access`` logger::

        2026-12-06T09:51:25.123Z alice POST /v1/compositions/wc/invoke 200 312 0.0153

    time (UTC, when the answer was sent), tenant (``-`` before one is known), method, path,
    status, bytes of the answer's body, seconds from the request's head to the answer.
    """

    def log(self, request: BaseRequest, response: web.StreamResponse, time_: float) -> None:
        # (aiohttp's body_length counts the head too)
        length = response.content_length
        self.write(request.get(TENANT, "-"), request.method, request.path, response.status,
                   response.body_length if length is None else length, time_)

    def write(self, tenant: str, method: str, path: str, status: int, length: int,
              seconds: float) -> None:
        """Write the line of one answered request (``path`` without its query; ``length``:
        the bytes of its answer's body)."""
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
            f".{int(now % 1 * 1000):03d}Z"
        self.logger.info("%s %s %s %s %d %d %.4f", stamp, tenant, method,
                         path.partition("?")[0], status, length, seconds)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def access_logger(target: str | None) -> logging.Logger | None:
    """The logger :class:`AccessLog` writes to: ``"-"`` for stderr, a file path to append
    to, ``None`` for no access log.  Each server has its own (two servers in one process
    never share a log); close its handlers when the server stops."""
    if target is None:
        return None
    logger = logging.Logger("dandelion.access", logging.INFO)  # not in the global registry
    handler: logging.Handler = (logging.StreamHandler() if target == "-"
                                else logging.FileHandler(target, encoding="utf-8"))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger
