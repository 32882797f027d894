"""Prometheus metrics of one server (its own registry, so servers never share counters)."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dandelion.runtime.events import Event, EventKind

#: Latency buckets (seconds): from sub-millisecond hot invocations to long compositions.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
           30, 60)


class Metrics:
    """The counters and histograms ``GET /metrics`` serves."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
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
        self.cache_lookups = Counter("dandelion_cache_lookups",
                                     "Function instances looked up in the result cache: "
                                     "hit (served) or miss (computed)", ["outcome"],
                                     registry=r)
        for outcome in ("hit", "miss"):
            self.cache_lookups.labels(outcome)  # shown from the start, at 0
        self.cache_served = Counter("dandelion_cache_served_bytes",
                                    "Bytes of the result cache's entries that hit",
                                    registry=r)
        self.function_lookups = Counter("dandelion_cache_function_lookups",
                                        "Function instances looked up in the result cache, "
                                        "per function (its name, over every tenant)",
                                        ["function", "outcome"], registry=r)
        self.function_served = Counter("dandelion_cache_function_served_bytes",
                                       "Bytes of the result cache's entries that hit, per "
                                       "function (its name, over every tenant)",
                                       ["function"], registry=r)
        self.refused = Counter("dandelion_refused", "Invocations refused (503) by admission "
                               "control: queue (--max-waiting wait) or wait (the expected "
                               "wait is over --max-wait)", ["reason"], registry=r)
        for reason in ("queue", "wait"):
            self.refused.labels(reason)  # shown from the start, at 0
        self.admitted = Gauge("dandelion_admitted", "Invocations admitted and not done "
                              "(running or waiting)", registry=r)
        self.expected_wait = Gauge("dandelion_expected_wait_seconds", "How long an "
                                   "invocation admitted now is expected to wait",
                                   registry=r)
        self.retained = Gauge("dandelion_retained", "What the worker keeps in memory: jobs "
                              "(of every tenant) and plans (of directly invoked functions)",
                              ["what"], registry=r)
        self.frozen = Gauge("dandelion_heap_frozen_objects", "Objects the worker held once "
                            "started (modules, libraries, restored registrations), moved out "
                            "of the garbage collector's full collections (gc.freeze)",
                            registry=r)

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once: ``labels`` builds a key and takes a
        lock each time, several times on every request.  The label values of the metrics
        counted per request (status codes, kinds, outcomes, temperatures) are few."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class CacheTally:
    """An observer of one invocation's events: what the result cache served (in all, and
    per function), and whether anything ran."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.bytes_served = 0
        self.ran = 0
        #: per function name: its hits, misses and bytes served
        self.functions: dict[str, list[int]] = {}
        self._lock = threading.Lock()  # events come from the engines' threads

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.CACHED:
            hits, misses, served = event.hits or 0, event.misses or 0, event.bytes_served or 0
            with self._lock:
                self.hits += hits
                self.misses += misses
                self.bytes_served += served
                counts = self.functions.setdefault(event.function, [0, 0, 0])
                counts[0] += hits
                counts[1] += misses
                counts[2] += served
        elif event.kind is EventKind.FINISHED:
            with self._lock:
                self.ran += 1

    @property
    def served_all(self) -> bool:
        """Whether the cache served the invocation: something hit and nothing ran."""
        return self.hits > 0 and self.ran == 0

    def count(self, metrics: Metrics) -> None:
        """Add what the cache did to ``metrics``."""
        if self.hits:
            metrics.cache_lookups.labels("hit").inc(self.hits)
        if self.misses:
            metrics.cache_lookups.labels("miss").inc(self.misses)
        if self.bytes_served:
            metrics.cache_served.inc(self.bytes_served)
        for function, (hits, misses, served) in self.functions.items():
            if hits:
                metrics.labelled(metrics.function_lookups, function, "hit").inc(hits)
            if misses:
                metrics.labelled(metrics.function_lookups, function, "miss").inc(misses)
            if served:
                metrics.labelled(metrics.function_served, function).inc(served)
