"""Asynchronous invocations (jobs) of one tenant, bounded in number and in age.

A job is kept from its submission until ``ttl`` seconds after it finished, and at most
``limit`` are kept: a new job first makes room by forgetting the oldest finished ones, and
is refused when ``limit`` are still running.

>>> jobs = Jobs(limit=2, ttl=60.0)
>>> a = jobs.add("composition", "wc", now=0.0)
>>> a.finish(result="done", now=1.0)
>>> b = jobs.add("composition", "wc", now=2.0)
>>> c = jobs.add("function", "double", now=3.0)  # forgets a, the oldest finished
>>> [j.target for j in jobs.list()], a.id in jobs
(['wc', 'double'], False)
>>> b.finish(error=ValueError("boom"), now=4.0)
>>> jobs.expire(now=70.0)  # b finished more than 60 s ago
1
>>> len(jobs)
1
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from typing import Any

import attrs

from dandelion.errors import DandelionError
from dandelion.runtime.logs import Collector


class TooManyJobs(DandelionError):
    """Every job the tenant may keep is still running (429)."""


@attrs.define(eq=False)
class JobRecord:
    """A job as the server keeps it.

    Attributes:
        id: its id (random, URL-safe).
        kind: ``composition`` or ``function``.
        target: the name of what it runs.
        created: when it was submitted (seconds since the epoch).
        status: ``running``, ``succeeded`` or ``failed``.
        result: its outputs and their declared types, once succeeded.
        error: why it failed.
        finished: when it finished.
        logs: what its function instances printed.
    """

    id: str
    kind: str
    target: str
    created: float
    status: str = "running"
    result: Any = None
    error: BaseException | None = None
    finished: float | None = None
    _done: asyncio.Event | None = attrs.field(default=None, repr=False)
    logs: Collector = attrs.field(factory=Collector, repr=False)

    def finish(self, result: Any = None, error: BaseException | None = None,
               now: float | None = None) -> None:
        """Record its outcome (``error``: it failed) and wake those waiting for it."""
        self.result, self.error = result, error
        self.status = "failed" if error is not None else "succeeded"
        self.finished = time.time() if now is None else now
        if self._done is not None:
            self._done.set()

    async def wait(self, timeout: float) -> None:
        """Wait until it finished, at most ``timeout`` seconds (on the server's loop)."""
        if self.finished is not None or timeout <= 0:
            return
        if self._done is None:
            self._done = asyncio.Event()
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError:
            pass


def new_id() -> str:
    """A new job id: 128 random bits in hex, which a command line takes as an argument as it
    is (a URL-safe base64 id starts with ``-`` once in 64 jobs, and ``dandelion jobs wait
    -Xy…`` then reads it as an option).

    >>> len(new_id()), set(new_id()) <= set("0123456789abcdef")
    (32, True)
    """
    return secrets.token_hex(16)


class Jobs:
    """One tenant's jobs.

    Args:
        limit: jobs kept at most.
        ttl: seconds a finished job is kept.
    """

    def __init__(self, limit: int = 1000, ttl: float = 3600.0) -> None:
        self.limit = limit
        self.ttl = ttl
        self._jobs: dict[str, JobRecord] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, target: str, now: float | None = None) -> JobRecord:
        """A new running job, once there is room for it.

        Raises:
            TooManyJobs: ``limit`` jobs are still running.
        """
        now = time.time() if now is None else now
        with self._lock:
            self._expire(now)
            finished = sorted((j for j in self._jobs.values() if j.finished is not None),
                              key=lambda j: j.finished or 0.0)
            while len(self._jobs) >= self.limit and finished:
                del self._jobs[finished.pop(0).id]  # forget the oldest results first
            if len(self._jobs) >= self.limit:
                raise TooManyJobs(f"{len(self._jobs)} jobs are still running; the limit is "
                                  f"{self.limit}", hint="wait for some to finish")
            job = JobRecord(new_id(), kind, target, now)
            self._jobs[job.id] = job
            return job

    def get(self, id: str) -> JobRecord | None:
        """The job ``id``, if it is still kept."""
        with self._lock:
            return self._jobs.get(id)

    def forget(self, id: str) -> bool:
        """Forget the job ``id``; whether there was one."""
        with self._lock:
            return self._jobs.pop(id, None) is not None

    def list(self) -> list[JobRecord]:
        """The jobs kept, oldest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def expire(self, now: float | None = None) -> int:
        """Forget the jobs that finished more than ``ttl`` seconds ago; how many."""
        with self._lock:
            return self._expire(time.time() if now is None else now)

    def _expire(self, now: float) -> int:
        cutoff = now - self.ttl
        old = [j.id for j in self._jobs.values()
               if j.finished is not None and j.finished < cutoff]
        for jid in old:
            del self._jobs[jid]
        return len(old)

    def __contains__(self, id: object) -> bool:
        return id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)
