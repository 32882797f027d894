"""An observer for the tests of who drives an instance (an event loop, the calling thread,
a worker thread)."""

from __future__ import annotations

import threading

from dandelion.runtime.events import Event, EventKind


class Threads:
    """An observer that notes the thread each instance's events were told on, and how
    many instances ran at once at most."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.CACHED:
            return
        with self._lock:
            self.names.add(threading.current_thread().name)
            self.running += 1 if event.kind is EventKind.STARTED else -1
            self.most = max(self.most, self.running)
