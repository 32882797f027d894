"""Running the frontend: in the foreground (``dandelion serve``) or on a background thread."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

from aiohttp import web

from dandelion.server.app import Frontend
from dandelion.server.config import ServerConfig
from dandelion.server.protocol import AccessLog, Runner, access_logger


def freeze_heap() -> int:
    """Move every object the process holds now out of the garbage collector's full
    collections (:func:`gc.freeze`, after a collection so that no garbage is kept); answers
    how many objects are frozen.

    A started worker holds some 50,000 long-lived objects (its modules, numpy, aiohttp, the
    registrations it restored), and a full collection visited them all: 40-100 ms on this
    project's 2-core machine, paid by whichever request was running when it came, which set
    the worker's p99. Frozen, they are never visited again; what requests allocate is
    collected as before. :meth:`Server.serve_forever` calls it once the worker is started.
    It is not done for :meth:`Server.start_in_thread`, whose process is someone else's.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Server:
    """A running worker frontend.

    Args:
        config: how to run (a :class:`ServerConfig` or its fields as keywords).

    Example:
        >>> from dandelion.server import Server
        >>> with Server(port=0).start_in_thread() as server:
        ...     server.url.startswith("http://127.0.0.1:")
        True
    """

    def __init__(self, config: ServerConfig | None = None, **options: Any) -> None:
        self.config = config or ServerConfig(**options)
        self.frontend: Frontend | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._access_log: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, once started."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Start listening (on the running event loop)."""
        config = self.config
        self.frontend = Frontend(config)
        self._access_log = access_logger(config.access_log)
        self._runner = Runner(self.frontend.app(), metrics=self.frontend.service.metrics,
                              header_timeout=config.header_timeout,
                              route=self.frontend.route,
                              access_log=self._access_log, access_log_class=AccessLog,
                              keepalive_timeout=config.keepalive_timeout,
                              handler_cancellation=True, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port

    async def stop(self) -> None:
        """Stop listening and release the worker."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._access_log is not None:
            for handler in self._access_log.handlers:
                handler.close()
            self._access_log = None

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted (Ctrl-C or SIGTERM)."""
        async def main() -> None:
            await self.start()
            if self.frontend is not None:
                self.frontend.service.metrics.frozen.set(freeze_heap())
            backend = self.frontend.service.runtime.backend if self.frontend else None
            where = f"backend {backend.name}, engine {backend.engine_name}" if backend else "?"
            print(f"dandelion: serving on {self.url} ({where})", flush=True)
            try:
                await asyncio.Event().wait()
            finally:
                await self.stop()

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass

    def start_in_thread(self) -> Server:
        """Serve on a background thread; returns once the server answers."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="dandelion-serve", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def close(self) -> None:
        """Stop a server started with :meth:`start_in_thread`."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)
            self._loop = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
