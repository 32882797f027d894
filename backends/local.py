"""The ``local`` backend: the embedded worker, and the reference semantics.

A dispatcher on the calling thread, a pool of engines (one per core by default), and the
I/O engine when the plan uses I/O functions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from typing import Any, Mapping

from dandelion.cache.cache import Cache
from dandelion.runtime import one_call
from dandelion.runtime.backend import DEFAULT_ENGINE as DEFAULT_ENGINE  # re-exported
from dandelion.runtime.backend import Backend as BackendBase
from dandelion.runtime.backend import ComputeOptions
from dandelion.runtime.dispatcher import Dispatcher, ProgressCallback
from dandelion.runtime.events import Observer
from dandelion.runtime.handoff import awaitable
from dandelion.runtime.pool import EnginePool
from dandelion.runtime.sharding import Items


class LocalBackend(BackendBase):
    """Runs plans in this process with a pool of engines.

    Args:
        engine: name of the compute engine (default :data:`DEFAULT_ENGINE`).
        workers: number of engines (default: the number of CPUs).
        timeout: seconds any function may run (``None``: no limit).
        timeouts: per-function limits, by function name.
        engine_options: passed to the engine's constructor.
        io_engine: the I/O engine (default: a :class:`~dandelion.io.IoEngine` made from
            ``io``, whose loop and connections start when a plan first does I/O).
        progress: called with a :class:`~dandelion.runtime.dispatcher.Progress` as work
            finishes (the CLI draws its progress line with it).
        io: options of the default I/O engine (:class:`~dandelion.io.IoConfig` or a
            mapping: ``timeout``, ``storage_root``, ``redis_url``, ``policy`` …).
        batch: instances per sandbox invocation for every function (``None``: each
            function's own, else chosen by measurement; ``1``: never batch; see
            ``docs/fusion.rst``).
    """

    name = "local"
    capabilities = frozenset({"compute", "io", "nested", "timeouts", "cache"})

    def __init__(self, engine: str | None = None, workers: int | None = None,
                 timeout: float | None = None, timeouts: Mapping[str, float] | None = None,
                 engine_options: Mapping[str, Any] | None = None, io_engine: Any = None,
                 progress: ProgressCallback | None = None, io: Any = None,
                 batch: int | None = None) -> None:
        compute = ComputeOptions.read(engine, timeout, timeouts, engine_options)
        engine_cls, options = compute.engine_class, compute.engine_options
        self.engine_name = compute.engine_name
        self.pool = EnginePool(lambda: engine_cls(**options), workers or os.cpu_count() or 1)
        self.engine_kinds = frozenset(self.pool.kinds)
        # an isolated engine lays the inputs out in a context of its own (one copy)
        self.inputs_copied = bool(engine_cls.isolated)
        self.timeouts = compute.timeouts
        if io_engine is None:
            from dandelion.io.engine import IoEngine

            io_engine = IoEngine(io)
        self.io_engine = io_engine
        self.progress = progress
        self.batch = batch

    def dispatcher(self, artifacts: Mapping[str, Any], cache: Cache | None = None,
                   observe: Observer | None = None) -> Dispatcher:
        """A dispatcher over this backend's engines for one program's artifacts, looking up
        and keeping results in ``cache``, telling ``observe`` about every instance."""
        def sub_runner(plan: Any, inputs: Mapping[str, Items]) -> Mapping[str, Items]:
            return self.dispatcher(artifacts, cache, observe).run(plan, inputs)

        return Dispatcher(self.pool, artifacts, timeouts=self.timeouts,
                          io_engine=self.io_engine, sub_runner=sub_runner,
                          progress=self.progress, cache=cache,
                          observe=observe, batch=self.batch)

    def run(self, plan: Any, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
            observe: Observer | None = None, cache: Cache | None = None) -> dict[str, Items]:
        if self.progress is None:  # a plan that is one call: driven from this thread
            direct = one_call.run_here(plan, inputs, artifacts, self.pool,
                                       timeouts=self.timeouts, observe=observe, cache=cache)
            if direct is not None:
                return direct
        return self.dispatcher(artifacts, cache, observe).run(plan, inputs)

    def start(self, plan: Any, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
              observe: Observer | None = None, loop: asyncio.AbstractEventLoop | None = None,
              cache: Cache | None = None
              ) -> concurrent.futures.Future[dict[str, Items]] | None:
        return self.dispatcher(artifacts, cache, observe).start(plan, inputs, loop)

    def start_here(self, plan: Any, inputs: Mapping[str, Items], artifacts: Mapping[str, Any],
                   observe: Observer | None, loop: asyncio.AbstractEventLoop,
                   cache: Cache | None = None) -> asyncio.Future[dict[str, Items]] | None:
        if self.progress is None:  # a plan that is one call goes short
            direct = one_call.start_here(plan, inputs, artifacts, self.pool, loop,
                                         timeouts=self.timeouts, observe=observe,
                                         batch=self.batch, cache=cache)
            if direct is not None:
                return direct
        started = self.dispatcher(artifacts, cache, observe).start(plan, inputs, loop)
        return None if started is None else awaitable(started, loop)

    def prepare(self, spec: Any, artifacts: Mapping[str, Any]) -> None:
        call = self.dispatcher(artifacts).call_for(spec)
        self.pool.workers[0].engine.prepare(call)

    def close(self) -> None:
        self.pool.close()
        if self.io_engine is not None and hasattr(self.io_engine, "close"):
            self.io_engine.close()


Backend = LocalBackend
