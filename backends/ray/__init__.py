"""The ``ray`` backend (:mod:`.backend`) and its parts: :mod:`.graph` (the task graph of a
plan), :mod:`.place` (placement on nodes), :mod:`.worker` (each node's Dandelion worker),
:mod:`.recovery` (running units again after node and worker failures).

A Ray worker process imports the parts it runs but not the backend, so ``Backend`` is
imported on first use.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Backend", "RayBackend"):
        from dandelion.backends.ray import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
