"""The platform's I/O function library and the I/O engine that runs it.

Compute functions never do I/O: they return requests, and trusted I/O functions perform
them.  Inside a ``@dd.composition`` the functions here are called like compute functions:

>>> import dandelion as dd
>>> from dandelion.io import system_HTTPGet
>>> @dd.compute
... def urls(servers: str) -> list[str]:
...     return [f"http://{s}/log" for s in servers.split()]
>>> @dd.composition
... def fetch(servers: str) -> list[bytes]:
...     return system_HTTPGet(dd.each(urls(servers)))
>>> [a.function for a in fetch.composition.applications]
['urls', 'system_HTTPGet']

:func:`platform_functions` maps every name (``http``, ``HTTP``, ``system_HTTPGet``,
``kv_get`` …) to its :class:`IoFunction`; the DSL looks names up there.
"""

from dandelion.io import http as _http
from dandelion.io import kv as _kv
from dandelion.io import storage as _storage
from dandelion.io.config import IoConfig
from dandelion.io.engine import IoEngine
from dandelion.io.errors import IoError, OutboundPolicyError
from dandelion.io.functions import IoFunction, platform_functions
from dandelion.io.policy import OutboundPolicy
from dandelion.io.values import HttpRequest, HttpResponse

_all = platform_functions()
http = _all["http"]
HTTP = _all["HTTP"]
system_HTTPGet = _all["system_HTTPGet"]
kv_get = _all["kv_get"]
kv_set = _all["kv_set"]
kv_delete = _all["kv_delete"]
storage_read = _all["storage_read"]
storage_write = _all["storage_write"]
storage_delete = _all["storage_delete"]
del _all, _http, _kv, _storage

__all__ = [
    "HTTP", "HttpRequest", "HttpResponse", "IoConfig", "IoEngine", "IoError", "IoFunction",
    "OutboundPolicy", "OutboundPolicyError", "http", "kv_delete", "kv_get", "kv_set",
    "platform_functions", "storage_delete", "storage_read", "storage_write", "system_HTTPGet",
]
