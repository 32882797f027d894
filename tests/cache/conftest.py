"""Fixtures of the cache tests: user modules written to files, and runtimes that report
what the cache did."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import dandelion as dd
from dandelion.cache import MemoryStore, RedisStore, Store, hashing
from dandelion.runtime.events import Event, EventKind
from tests.conftest import RUNTIMES
from tests.io.servers import redis_fixture

Loader = Callable[..., Any]

#: A user module of a function and a composition applying it to each item (written to a
#: file by the tests that run it in another process or through the CLI).
SQUARES = """
    import dandelion as dd

    @dd.compute
    def square(x: int) -> int:
        return x * x

    @dd.composition
    def squares(xs: list[int]) -> list[int]:
        return square(dd.each(xs))
"""

#: The runtimes every cache test runs on.  On Ray the store is a real Redis server that
#: every node reaches (a memory store would be one per process).
CACHED_RUNTIMES = ["local-inline", "local-process", "ray-sandbox", "ray-none"]


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Loader]:
    """``load(source, name)``: write ``source`` as module ``name`` and import it afresh
    (a new module object, as after editing the file and starting again)."""
    sys.path.insert(0, str(tmp_path))
    names: list[str] = []

    def loader(source: str, name: str = "user_mod") -> Any:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        names.append(name)
        return importlib.import_module(name)

    try:
        yield loader
    finally:
        sys.path.remove(str(tmp_path))
        for name in names:
            sys.modules.pop(name, None)


class Recorder:
    """Runs compositions on a runtime kind with a cache, recording the ``cached`` events of
    the event stream (what the cache did per application)."""

    def __init__(self, options: dict[str, Any], redis_url: str | None = None) -> None:
        self.options = options
        self.redis_url = redis_url
        self.reports: list[Event] = []
        #: the instances that ran (their ``finished`` events)
        self.computed: list[Event] = []

    @property
    def ray(self) -> bool:
        """Whether this runtime kind runs on the Ray cluster."""
        return self.options.get("backend") == "ray"

    def store(self) -> Store:
        """A fresh, empty store every process of this runtime kind reaches: in memory, or
        on Ray keys of their own in the session's Redis server."""
        if self.redis_url is None:
            return MemoryStore()
        return RedisStore(self.redis_url, prefix=f"test-{uuid.uuid4().hex}:")

    def observe(self, event: Event) -> None:
        """Keep the ``cached`` and ``finished`` events."""
        if event.kind is EventKind.CACHED:
            self.reports.append(event)
        elif event.kind is EventKind.FINISHED:
            self.computed.append(event)

    def runtime(self, cache: Any = None, fuse: bool = True) -> dd.Runtime:
        """A runtime of this kind using ``cache`` (default: a fresh memory store)."""
        return dd.Runtime(**self.options, cache=self.store() if cache is None else cache,
                          observers=[self.observe], fuse=fuse)

    def run(self, rt: dd.Runtime, target: Any, *args: Any, **kw: Any) -> tuple[Any, int]:
        """The result of a run and how many instances the cache served."""
        self.reports.clear()
        result = rt.run(target, *args, **kw)
        return result, sum(r.hits or 0 for r in self.reports)


@pytest.fixture(params=[pytest.param(name, marks=RUNTIMES[name][2])
                        for name in CACHED_RUNTIMES])
def recorder(request: pytest.FixtureRequest) -> Recorder:
    """A :class:`Recorder` for each runtime kind that caches."""
    options, skip, _marks = RUNTIMES[request.param]
    if skip:
        pytest.skip(skip)
    if options.get("backend") == "ray":
        request.getfixturevalue("ray_cluster")
        return Recorder(dict(options), request.getfixturevalue("redis_url"))
    return Recorder(dict(options))


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the hash objects made (:func:`dandelion.cache.hashing.new`: the bulk of an
    array is hashed with one) from now on: one entry each."""
    made: list[int] = []
    new = hashing.new

    def counting(*data: Any) -> Any:
        made.append(1)
        return new(*data)

    monkeypatch.setattr(hashing, "new", counting)
    return made


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: Any) -> Iterator[str]:
    """The URL of a real Redis server started for the session."""
    yield from redis_fixture(tmp_path_factory)
