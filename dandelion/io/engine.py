"""The I/O engine: one asyncio event loop per worker that runs every I/O function.

The dispatcher hands it whole applications (:meth:`IoEngine.submit`); the engine runs the
instances concurrently on its loop, each request bounded by the worker-wide concurrency
limit, a per-request timeout and a response size limit.  HTTP requests go through the
:class:`~dandelion.io.policy.OutboundPolicy`, also on every redirect and every DNS answer;
idempotent ones are retried with exponential backoff.  The loop and its connections start
on first use, so a worker that never does I/O pays nothing.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from typing import Any, Callable, Coroutine, Sequence, TypeVar
from urllib.parse import urljoin, urlsplit

from dandelion.io.config import IoConfig
from dandelion.io.errors import IoError, OutboundPolicyError
from dandelion.io.policy import OutboundPolicy
from dandelion.io.values import HttpRequest, HttpResponse
from dandelion.items import Item
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.sharding import Instance

T = TypeVar("T")
Done = Callable[[Any, Any], None]
#: Statuses after which an idempotent request is retried.
RETRY_STATUSES = frozenset({502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Refused(OSError):
    """A DNS answer the policy refuses (raised inside aiohttp's connector)."""


def _refusal(error: BaseException) -> _Refused | None:
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        if isinstance(current, _Refused):
            return current
        nested = getattr(current, "os_error", None)
        if isinstance(nested, _Refused):
            return nested
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _policy_resolver(policy: OutboundPolicy) -> Any:
    import aiohttp
    from aiohttp.abc import AbstractResolver

    class PolicyResolver(AbstractResolver):
        """Resolves with the system resolver and drops addresses the policy refuses."""

        def __init__(self) -> None:
            self._inner = aiohttp.ThreadedResolver()

        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
            answers = await self._inner.resolve(host, port, family)
            reasons = [policy.check_address(a["host"], host) for a in answers]
            allowed = [a for a, r in zip(answers, reasons) if r is None]
            if not allowed:
                raise _Refused(reasons[0] if reasons else f"{host} does not resolve")
            return allowed

        async def close(self) -> None:
            await self._inner.close()

    return PolicyResolver()


class IoEngine:
    """Runs I/O functions (implementation kind ``builtin``) for one worker.

    Args:
        config: an :class:`~dandelion.io.config.IoConfig` or a mapping of its options.

    Example:
        >>> engine = IoEngine({"timeout": 5})
        >>> engine.config.timeout
        5.0
        >>> engine.close()
    """

    name = "io"
    kinds = frozenset({"builtin"})

    def __init__(self, config: IoConfig | Any = None) -> None:
        self.config = IoConfig.from_options(config)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._session: Any = None
        self._redis: dict[str, Any] = {}
        self.closed = False

    # -- the loop ---------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.closed:
                raise IoError("the I/O engine is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
                    started.set()
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="dandelion-io", daemon=True)
                self._thread.start()
                started.wait()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the engine's loop from another thread and return its result."""
        try:
            loop = self._ensure_loop()
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    @property
    def semaphore(self) -> asyncio.Semaphore:
        """The worker-wide limit on requests in flight (use on the engine's loop)."""
        assert self._semaphore is not None
        return self._semaphore

    # -- applications -----------------------------------------------------------------------

    def submit(self, call: FunctionCall, instances: Sequence[Instance], done: Done,
               cancelled: threading.Event) -> None:
        """Run all ``instances`` of an I/O function; report with ``done`` exactly once.

        ``done(results, None)`` gets one output list per instance, in instance order;
        ``done(None, (instance, error))`` the first instance that failed (the others are
        cancelled).  Setting ``cancelled`` abandons the application without a report.
        """
        from dandelion.io.functions import handler_for

        try:
            handler = handler_for(call.implementation.entry)
            loop = self._ensure_loop()
        except BaseException as e:
            done(None, (instances[0], e))
            return
        coro = self._application(handler, list(instances), done, cancelled)
        asyncio.run_coroutine_threadsafe(coro, loop)

    async def _application(self, handler: Any, instances: list[Instance], done: Done,
                           cancelled: threading.Event) -> None:
        tasks = [asyncio.ensure_future(handler(self, inst.inputs)) for inst in instances]
        owner = {t: inst for t, inst in zip(tasks, instances)}
        pending = set(tasks)
        failure: tuple[Instance, BaseException] | None = None
        try:
            while pending and failure is None:
                finished, pending = await asyncio.wait(pending, timeout=0.05,
                                                       return_when=asyncio.FIRST_EXCEPTION)
                if cancelled.is_set():
                    return
                failed = [t for t in tasks if t in finished and t.exception() is not None]
                if failed:
                    first = failed[0]
                    error = first.exception()
                    assert error is not None
                    failure = (owner[first], error)
        except BaseException as e:  # never leave the dispatcher waiting
            failure = (instances[0], e)
        finally:
            for t in pending:
                t.cancel()
        if failure is not None:
            done(None, failure)
        else:
            done([t.result() for t in tasks], None)

    # -- HTTP -------------------------------------------------------------------------------

    async def _http_session(self) -> Any:
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(resolver=_policy_resolver(self.config.policy),
                                             limit=self.config.max_concurrency)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  auto_decompress=True)
        return self._session

    def check_url(self, url: str) -> None:
        """Raise :class:`OutboundPolicyError` if the policy refuses ``url`` as written."""
        parts = urlsplit(url)
        policy = self.config.policy
        if parts.scheme not in policy.schemes:
            raise OutboundPolicyError(f"URL scheme of {url!r} is not allowed "
                                      f"(allowed: {', '.join(policy.schemes)})")
        if not parts.hostname:
            raise OutboundPolicyError(f"URL {url!r} has no host")
        reason = policy.check_host(parts.hostname)
        if reason is not None:
            raise OutboundPolicyError(f"request to {url} refused: {reason}",
                                      hint="the worker's outbound policy (allow/deny lists) "
                                           "decides where I/O functions may connect")

    async def http(self, request: HttpRequest) -> HttpResponse:
        """Send ``request`` under the policy, limits and retry rules of this engine.

        Raises:
            OutboundPolicyError: the destination (or a redirect's) is refused.
            IoError: timeout, connection failure after all retries, or a response too large.
        """
        self.check_url(request.url)
        cfg = self.config
        attempts = 1 + (cfg.retries if request.idempotent else 0)
        last: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(cfg.backoff_max, cfg.backoff * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
            try:
                async with self.semaphore:
                    response = await asyncio.wait_for(self._send(request), cfg.timeout)
            except (OutboundPolicyError, _TooLarge):
                raise
            except asyncio.TimeoutError:
                last = IoError(f"{request.method} {request.url} timed out after "
                               f"{cfg.timeout:g} s", hint="raise the I/O timeout option")
                continue
            except Exception as e:
                refused = _refusal(e)
                if refused is not None:
                    raise OutboundPolicyError(f"request to {request.url} refused: {refused}",
                                              hint="the worker's outbound policy decides "
                                                   "where I/O functions may connect") from None
                last = IoError(f"{request.method} {request.url} failed: "
                               f"{type(e).__name__}: {e}")
                continue
            if response.status in RETRY_STATUSES and attempt + 1 < attempts:
                last = None
                continue
            return response
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        assert last is not None
        raise IoError(f"{last.args[0]}{tries}" if last.args else str(last),
                      hint=getattr(last, "hint", None)) from None

    async def _send(self, request: HttpRequest) -> HttpResponse:
        session = await self._http_session()
        method, url, body = request.method, request.url, request.body
        headers = [(k, v) for k, v in request.headers if k.lower() != "host"]
        for _ in range(self.config.max_redirects + 1):
            self.check_url(url)
            async with session.request(method, url, headers=headers, data=body or None,
                                       allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status in _REDIRECTS and location:
                    url = urljoin(url, location)
                    if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                        method, body = "GET", b""
                    continue
                data = await self._read_limited(resp, url)
                raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
                return HttpResponse(resp.status, resp.reason or "", raw, data)
        raise IoError(f"{request.url}: more than {self.config.max_redirects} redirects")

    async def _read_limited(self, resp: Any, url: str) -> bytes:
        limit = self.config.max_response_bytes
        length = resp.content_length
        if length is not None and length > limit:
            raise _TooLarge(f"response of {url} is {length} bytes, over the limit of {limit}")
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise _TooLarge(f"response of {url} is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- Redis ------------------------------------------------------------------------------

    async def redis(self, url: str | None = None) -> Any:
        """The engine's Redis client (``redis.asyncio``) of ``url`` (default: the
        configured ``redis_url``), connected on first use."""
        url = url or self.config.redis_url
        client = self._redis.get(url)
        if client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError:  # pragma: no cover - redis is a dependency of dandelion.io
                raise IoError("the key-value functions need the 'redis' package") from None
            client = self._redis[url] = aioredis.from_url(
                url, socket_timeout=self.config.timeout,
                socket_connect_timeout=self.config.timeout)
        return client

    # -- shutdown ---------------------------------------------------------------------------

    async def _aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        for client in self._redis.values():
            await client.aclose()

    def close(self) -> None:
        """Close connections and stop the loop; the engine cannot be used afterwards."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(5)
        except Exception:  # closing best-effort: the loop stops regardless
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()

    def __repr__(self) -> str:
        return f"<IoEngine max_concurrency={self.config.max_concurrency}>"


class _TooLarge(IoError):
    """A response over :attr:`IoConfig.max_response_bytes`."""


def item_like(source: Item[Any], value: Any) -> Item[Any]:
    """An output item with ``value`` and the name and key of ``source``."""
    return Item(value, key=source.key, name=source.name)
