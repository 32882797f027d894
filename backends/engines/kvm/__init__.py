"""The ``kvm`` engine (:mod:`.engine`): native functions in tiny KVM virtual machines with
no guest OS, driven by the C extension ``_kvmc`` (``c/kvmc.c``).

``Engine`` is imported on first use, so that listing engines opens no ``/dev/kvm``.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Engine", "KvmEngine"):
        from dandelion.backends.engines.kvm import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
