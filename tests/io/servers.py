"""Real servers on loopback for the I/O and server tests: an HTTP test server and Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

Route = Callable[["Handler"], tuple[int, dict[str, str], bytes]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        srv = self.server
        with srv.lock:
            srv.hits[path] = srv.hits.get(path, 0) + 1
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
        try:
            route = srv.routes.get(path)
            status, headers, body = route(self) if route else (404, {}, b"not found")
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        finally:
            with srv.lock:
                srv.active -= 1

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, *args: Any) -> None:
        pass


class WebServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 with routes ``path -> handler``; counts hits."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def route(self, path: str, status: int = 200, body: bytes = b"",
              headers: dict[str, str] | None = None) -> None:
        self.routes[path] = lambda h: (status, dict(headers or {}), body)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def log_servers(logs: list[bytes]) -> list[WebServer]:
    """One server per log, each serving it at ``/log``."""
    servers = []
    for log in logs:
        s = WebServer()
        s.route("/log", body=log, headers={"Content-Type": "text/plain"})
        servers.append(s)
    return servers


REDIS = shutil.which("redis-server")


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    """A fresh ``redis-server`` on a free loopback port, without persistence."""
    assert REDIS is not None
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def redis_fixture(tmp_path_factory: Any) -> Iterator[str]:
    """Body of the ``redis_url`` fixtures: skip with the reason if there is no binary."""
    import pytest

    if REDIS is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    proc, url = start_redis(str(tmp_path_factory.mktemp("redis")))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def start_serve(*args: str, timeout: float = 60.0, **popen: Any
                ) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``dandelion serve ARGS`` on a free port, started as a user starts it, once its
    ``/health`` answers: the process and its URL (its output is piped unless ``stdout=``)."""
    import pytest

    port = free_port()
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.STDOUT)
    proc = subprocess.Popen([sys.executable, "-m", "dandelion", "serve", "--port", str(port),
                             *args], **popen)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                output = proc.stdout.read() if proc.stdout else b"(see its log)"
                pytest.fail(f"dandelion serve did not start: {output!r}")
            time.sleep(0.1)
