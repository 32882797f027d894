"""Configuration of a worker's HTTP frontend (``dandelion serve``)."""

from __future__ import annotations

import json
from typing import Any, Mapping

import attrs

MiB = 1 << 20


def _mapping(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen
class ServerConfig:
    """How ``dandelion serve`` runs.

    Attributes:
        host: address to listen on (loopback by default: expose it deliberately).
        port: TCP port (0: any free port).
        backend: where compositions run: ``local`` (this machine) or ``ray`` (a Ray
            cluster).
        address: the Ray cluster of the ``ray`` backend (``None``: a Ray instance of its
            own; ``"auto"``: the cluster this machine belongs to; ``"HOST:PORT"`` or
            ``"ray://HOST:PORT"``).
        engine: compute engine by name (``process``, ``inline`` …; ``None``: the local
            backend's default, the ``process`` sandbox on Linux).
        workers: compute engines in the pool (default: one per CPU).
        timeout: seconds any function may run (``None``: no limit).
        tokens: API token -> tenant name; empty: one open tenant called ``default``.
        max_body_bytes: larger request bodies are refused with 413.
        body_timeout: seconds a client has to send its body (then 408).
        header_timeout: seconds a client has to send its request line and headers, from
            their first byte (then 408).
        keepalive_timeout: seconds an idle kept-alive connection stays open.
        access_log: where to write one line per request: ``"-"`` for stderr, a file to
            append to, ``None`` for no access log.
        hot_functions: loaded functions kept in memory, Python and native alike; others
            start cold.
        cache: where the results of function instances are kept, in a namespace per tenant
            (no tenant ever sees another's): ``"memory"`` (the default), a directory, a
            ``redis://`` URL, a list of those (a stack, fastest first), or ``None``
            (off); see ``docs/caching.rst``.
        result_cache: whole results of cacheable compositions kept per tenant in front of
            ``cache`` (0: none).
        max_jobs: jobs kept per tenant; the oldest finished ones are forgotten first, and
            when all are still running a new one is refused (429).
        job_ttl: seconds a finished job's result is kept.
        plan_cache: plans of directly invoked functions kept (least recently used first
            out).
        code_ttl: seconds registered code that no function or composition uses any more
            stays in the artifact store on disk.
        invocations: invocations running at once on the frontend's threads (the rest wait):
            those that load code from disk; one whose code is in memory starts from the
            event loop and waits on no thread.
        max_waiting: invocations (and jobs) admitted beyond one per engine (``workers``) at
            most; more are refused at once with 503 and ``Retry-After``.
        max_wait: seconds an admitted invocation may be expected to wait for an engine:
            once more than one per engine waits, a new one whose expected wait (its place
            in the queue times the measured time between completions) is longer is refused
            with 503, so that an overloaded worker keeps its throughput and answers the
            excess at once instead of queueing it (``dandelion.server.admission``).
        state_dir: where registrations and code are kept (``None``: a temporary directory,
            forgotten at exit).
        io: options of the worker's I/O engine (:class:`~dandelion.io.IoConfig`).
        engine_options: keyword arguments of the worker's compute engine (``dandelion
            serve -E NAME=VALUE``), e.g. ``{"reuse_sandboxes": True}`` for ``process``.
        topology: a JSON file saying which node of the Ray cluster is near which storage
            (``docs/placement.rst``; ``None``: ``$DANDELION_TOPOLOGY``, if set).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "local"
    address: str | None = None
    engine: str | None = None
    workers: int | None = None
    timeout: float | None = None
    tokens: Mapping[str, str] = attrs.field(factory=dict, converter=_mapping)
    max_body_bytes: int = 16 * MiB
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    access_log: str | None = None
    hot_functions: int = 256
    cache: Any = "memory"
    result_cache: int = 1024
    max_jobs: int = 1000
    job_ttl: float = 3600.0
    plan_cache: int = 1024
    code_ttl: float = 3600.0
    invocations: int = 64
    max_waiting: int = 1024
    max_wait: float = 0.25
    state_dir: str | None = None
    io: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping)
    topology: str | None = None
    engine_options: Mapping[str, Any] = attrs.field(factory=dict, converter=_mapping)

    @property
    def open(self) -> bool:
        """Whether requests need no token (no tokens configured)."""
        return not self.tokens


def read_tokens(path: str) -> dict[str, str]:
    """Tokens from a JSON file ``{"tenant": "token", …}`` (or ``{"tenant": ["t1", "t2"]}``).

    Raises:
        ValueError: the file is not such a mapping, or a token is reused.
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object mapping tenant names to tokens")
    tokens: dict[str, str] = {}
    for tenant, value in data.items():
        for token in value if isinstance(value, list) else [value]:
            if not isinstance(token, str) or len(token) < 16:
                raise ValueError(f"{path}: the token of tenant '{tenant}' must be a string "
                                 "of at least 16 characters")
            if token in tokens:
                raise ValueError(f"{path}: a token is given to two tenants")
            tokens[token] = tenant
    return tokens
