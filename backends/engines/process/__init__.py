"""The ``process`` engine (:mod:`.engine`) and its parts.

The worker side: :mod:`.engine` (the engine), :mod:`.pool` (zygotes and their sandboxes),
:mod:`.memory` (shared-memory contexts), :mod:`.native` (the native zygote's build).  The
sandbox side: :mod:`.zygote`, :mod:`.child`, :mod:`.filter` (the seccomp allow-list).  Both:
:mod:`.layout` (the context layout).  The C extension ``_sandboxc`` and the native zygote
are built from ``c/``.

A sandbox imports the parts it needs but never the engine, so ``Engine`` is imported on
first use.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Engine", "ProcessEngine"):
        from dandelion.backends.engines.process import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
