"""Prometheus metrics of one server (its own registry, so servers never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Latency buckets (seconds): from sub-millisecond hot invocations to long compositions.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
           30, 60)


class Metrics:
    """The counters and histograms ``GET /metrics`` serves."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.invocations = Counter("dandelion_invocations", "Invocations by outcome",
                                   ["kind", "outcome"], registry=r)
        self.latency = Histogram("dandelion_invocation_seconds",
                                 "Invocation latency, request accepted to response ready",
                                 ["kind"], buckets=BUCKETS, registry=r)
        self.loads = Counter("dandelion_function_loads",
                             "Function code found in memory (hot) or loaded from disk (cold)",
                             ["temperature"], registry=r)
        self.violations = Counter("dandelion_sandbox_violations",
                                  "Invocations failed by a sandbox violation", registry=r)
        self.requests = Counter("dandelion_http_requests", "HTTP requests by status code",
                                ["code"], registry=r)
        self.retained = Gauge("dandelion_retained", "What the worker keeps in memory: jobs "
                              "(of every tenant) and plans (of directly invoked functions)",
                              ["what"], registry=r)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
