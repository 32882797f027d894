"""The ``wasm`` engine (:mod:`.engine`): native functions compiled to WebAssembly, each
invocation in a fresh wasmtime instance.

``Engine`` is imported on first use, so that listing engines does not import wasmtime.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Engine", "WasmEngine"):
        from dandelion.backends.engines.wasm import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
