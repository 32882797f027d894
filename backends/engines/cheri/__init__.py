"""The ``cheri`` engine (:mod:`.engine`): native functions isolated by CHERI capabilities,
designed for Arm Morello; it reports that it is unavailable on any other machine.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Engine", "CheriEngine"):
        from dandelion.backends.engines.cheri import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
