"""Fixtures of the cache tests: user modules written to files, and runtimes that report
what the cache did."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import dandelion as dd
from dandelion.cache import MemoryStore
from dandelion.runtime.events import Event, EventKind
from tests.conftest import RUNTIMES
from tests.io.servers import redis_fixture

Loader = Callable[..., Any]

#: The runtimes every cache test runs on (Ray joins when its backend caches).
CACHED_RUNTIMES = ["local-inline", "local-process"]


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

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.reports: list[Event] = []

    def observe(self, event: Event) -> None:
        """Keep the ``cached`` events."""
        if event.kind is EventKind.CACHED:
            self.reports.append(event)

    def runtime(self, cache: Any = None, fuse: bool = True) -> dd.Runtime:
        """A runtime of this kind using ``cache`` (default: a fresh memory store)."""
        return dd.Runtime(**self.options, cache=MemoryStore() if cache is None else cache,
                          observers=[self.observe], fuse=fuse)

    def run(self, rt: dd.Runtime, target: Any, *args: Any, **kw: Any) -> tuple[Any, int]:
        """The result of a run and how many instances the cache served."""
        self.reports.clear()
        result = rt.run(target, *args, **kw)
        return result, sum(r.hits or 0 for r in self.reports)


@pytest.fixture(params=CACHED_RUNTIMES)
def recorder(request: pytest.FixtureRequest) -> Recorder:
    """A :class:`Recorder` for each runtime kind that caches."""
    options, skip, _marks = RUNTIMES[request.param]
    if skip:
        pytest.skip(skip)
    return Recorder(dict(options))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: Any) -> Iterator[str]:
    """The URL of a real Redis server started for the session."""
    yield from redis_fixture(tmp_path_factory)
