"""The HTTP connection of ``dandelion serve``: what happens before and after the application.

aiohttp parses each request before the application sees it, and answers what it cannot
parse itself (a header or URL past the size limit, an unknown ``Content-Encoding``, both
``Transfer-Encoding`` and ``Content-Length`` …) with a plain-text 400.  A
:class:`Connection` answers those with the same JSON error document as every other
refusal, counts them in ``/metrics``, and bounds how long a client may take to send its
request line and headers (aiohttp bounds neither; the application bounds the body).
:class:`AccessLog` writes one line per answered request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from aiohttp import abc, web, web_protocol
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD
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


def error_response(status: int, kind: str, message: str, hint: str | None = None
                   ) -> web.Response:
    """A JSON error document ``{"error": {"type", "message", "hint"?}}`` answer."""
    error = {"type": kind, "message": message}
    if hint:
        error["hint"] = hint
    return web.Response(body=wire.dumps({"error": error}, binary=False), status=status,
                        content_type="application/json")


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


class Connection(web_protocol.RequestHandler):
    """One client connection: aiohttp's, with JSON refusals and a bound on slow headers.

    The owning :class:`Connections` gives it ``metrics`` and ``header_timeout``.
    """

    def __init__(self, manager: Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.metrics = manager.metrics
        self.header_timeout = manager.header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        self._timed_out = False

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
        super().data_received(data)
        if self._messages:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None
        elif starts and self._header_deadline is None and not self._timed_out:
            self._header_deadline = self._loop.call_later(self.header_timeout,
                                                          self._head_too_slow)

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
        super().connection_lost(exc)

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

    def __call__(self) -> Connection:
        return Connection(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections are :class:`Connection` s.

    Args:
        app: the application.
        metrics: where refused requests are counted.
        header_timeout: seconds a client has for its request line and headers.
        **kwargs: for :class:`aiohttp.web.AppRunner`.
    """

    def __init__(self, app: web.Application, *, metrics: Metrics, header_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._metrics = metrics
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # the application's own server, made by aiohttp, with connections of our kind
        server.__class__ = Connections
        assert isinstance(server, Connections)
        server.metrics = self._metrics
        server.header_timeout = self._header_timeout
        return server


class AccessLog(abc.AbstractAccessLogger):
    """One line per answered request, on the ``dandelion.access`` logger::

        2026-12-06T09:51:25.123Z alice POST /v1/compositions/wc/invoke 200 312 0.0153

    time (UTC, when the answer was sent), tenant (``-`` before one is known), method, path,
    status, bytes of the answer's body, seconds from the request's head to the answer.
    """

    def log(self, request: BaseRequest, response: web.StreamResponse, time_: float) -> None:
        tenant = request.get(TENANT, "-")
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
            f".{int(now % 1 * 1000):03d}Z"
        self.logger.info("%s %s %s %s %d %d %.4f", stamp, tenant, request.method,
                         request.path, response.status, response.body_length, time_)

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
