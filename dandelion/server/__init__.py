"""The HTTP frontend of a worker (``dandelion serve``): tenants register functions and
compositions and invoke them; see ``docs/serve.rst`` for the endpoints and wire format."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.server.config import ServerConfig
    from dandelion.server.server import Server

# Imported on first use: the ``dandelion`` command imports this package for its subcommands'
# options, and the web stack would make every command (even ``--version``) slow to start.
_LAZY = {"Server": "dandelion.server.server", "ServerConfig": "dandelion.server.config"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dandelion.server' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = ["Server", "ServerConfig"]
