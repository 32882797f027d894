"""The HTTP frontend of a worker (``dandelion serve``): tenants register functions and
compositions and invoke them; see ``docs/serve.rst`` for the endpoints and wire format."""

from dandelion.server.config import ServerConfig
from dandelion.server.server import Server

__all__ = ["Server", "ServerConfig"]
